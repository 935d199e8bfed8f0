package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
)

// Node is what the API asks about the peer it serves.
type Node interface {
	Status() Status
	Peers() Peers
	RTT() RTTMatrix
	Experts() Experts
}

// Server routes HTTP requests to a Node.
type Server struct {
	node  Node
	swarm Swarm
	log   *slog.Logger
	mux   *http.ServeMux
	keys  atomic.Pointer[Keys]  // nil: /v1 is open (see SetKeys)
	guard atomic.Pointer[guard] // who may call (see SetGuard)
}

// MaxBodyBytes caps every request body.
const MaxBodyBytes = 4 << 20

// NewServer returns the handler for node. swarm, when not nil, serves the
// OpenAI-compatible /v1 API and POST /api/route.
func NewServer(node Node, swarm Swarm, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{node: node, swarm: swarm, log: log, mux: http.NewServeMux()}
	g, _ := Guard{}.compile() // the zero Guard has no origin to refuse
	s.guard.Store(g)
	if swarm != nil {
		s.mux.HandleFunc("GET /v1/models", s.handleModels)
		s.mux.HandleFunc("GET /v1/models/{model...}", s.handleModel)
		s.mux.HandleFunc("POST /v1/chat/completions", s.handleChat)
		s.mux.HandleFunc("POST /v1/completions", s.handleCompletions)
		s.mux.HandleFunc("POST /v1/embeddings", s.handleEmbeddings)
		s.mux.HandleFunc("POST /v1/responses", s.handleResponses)
		s.mux.HandleFunc("POST /api/route", s.handleRoute)
		s.handleOllama() // ollama.go
	}
	s.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	s.mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.node.Status()) })
	s.mux.HandleFunc("GET /api/peers", s.handlePeers) // paged: page.go
	s.mux.HandleFunc("GET /api/rtt", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.node.RTT()) })
	s.mux.HandleFunc("GET /api/experts", s.handleExperts)
	// The same paths with another method get a 405 in the API's own error
	// shape rather than the mux's plain text.
	for path, allow := range map[string]string{
		"/v1/models": "GET", "/v1/chat/completions": "POST", "/v1/completions": "POST", "/v1/embeddings": "POST", "/v1/responses": "POST",
		"/api/route": "POST", "/api/status": "GET", "/api/peers": "GET", "/api/rtt": "GET", "/api/experts": "GET",
	} {
		s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" "+r.URL.Path+": use "+allow)
		})
	}
	s.mux.HandleFunc("GET /{$}", dashboard)
	s.mux.HandleFunc("GET /static/{file}", staticFile)
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return s
}

// Handle adds a route (Go 1.22 pattern) to the server.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	secure(w.Header())
	if !s.guard.Load().admit(w, r) {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	r, ok := s.authorize(w, r)
	if !ok {
		return
	}
	s.mux.ServeHTTP(w, r)
}

// NewHTTPServer wraps h with the timeouts every listener of a peer uses.
// WriteTimeout is left to each handler: answers stream for minutes.
func NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ErrorBody is the OpenAI-style error every endpoint returns.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	typ := "invalid_request_error"
	switch {
	case status >= 500:
		typ = "server_error"
	case status == http.StatusNotFound:
		typ = "invalid_request_error"
	}
	c := code
	writeJSON(w, status, ErrorBody{Error: ErrorDetail{Message: msg, Type: typ, Code: &c}})
}

// IsClosed reports whether err is the normal result of shutting a server down.
func IsClosed(err error) bool { return errors.Is(err, http.ErrServerClosed) }
