package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/routing"
	"github.com/mwpeer/mwpeer/swarm"
)

// Swarm is what the OpenAI-compatible API asks of the peer (swarm.Router).
type Swarm interface {
	// Models lists every model the swarm serves.
	Models() []swarm.Model
	// Complete routes q and runs it, calling emit for each streamed chunk
	// (expert is the peer that produced it).
	Complete(ctx context.Context, q swarm.Query, emit func(expert string, c inference.Chunk) error) (swarm.Answer, error)
	// Route answers the routing question for q without running it.
	Route(ctx context.Context, q swarm.Query) (routing.Decision, error)
}

// Limits on OpenAI requests.
const (
	MaxTokensCap    = 32768
	MaxMessages     = 1024
	MaxStops        = 4
	MaxTopLogprobs  = 20
	MaxK            = 8
	DefaultDeadline = 5 * time.Minute
)

// mwpeerOptions is the optional "mwpeer" object in a request body.
type mwpeerOptions struct {
	Strategy  string   `json:"strategy"`
	K         int      `json:"k"`
	Domains   []string `json:"domains"`
	TimeoutMs int64    `json:"timeout_ms"`
	Verify    bool     `json:"verify"` // see swarm.Query.Verify
}

// stringOrList accepts "x" or ["x", ...].
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*s = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("must be a string or an array of strings")
	}
	*s = many
	return nil
}

type commonRequest struct {
	Model               string       `json:"model"`
	Stream              bool         `json:"stream"`
	MaxTokens           *int         `json:"max_tokens"`
	MaxCompletionTokens *int         `json:"max_completion_tokens"`
	Temperature         *float64     `json:"temperature"`
	TopP                *float64     `json:"top_p"`
	Stop                stringOrList `json:"stop"`
	Seed                *int64       `json:"seed"`
	N                   *int         `json:"n"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Mwpeer *mwpeerOptions `json:"mwpeer"`
}

type chatRequest struct {
	commonRequest
	Messages       []chatMessage   `json:"messages"`
	Logprobs       bool            `json:"logprobs"`
	TopLogprobs    *int            `json:"top_logprobs"`
	Tools          json.RawMessage `json:"tools"`
	ToolChoice     json.RawMessage `json:"tool_choice"`
	ResponseFormat json.RawMessage `json:"response_format"`
}

type completionRequest struct {
	commonRequest
	Prompt   stringOrList `json:"prompt"`
	Logprobs *int         `json:"logprobs"` // legacy: number of top alternatives
	Echo     bool         `json:"echo"`
	Suffix   *string      `json:"suffix"`
}

// badRequest is a 400 naming the offending parameter.
type badRequest struct {
	param, msg string
	status     int // 400 unless set
}

func (e *badRequest) Error() string { return e.msg }

func bad(param, format string, args ...any) error {
	return &badRequest{param: param, msg: fmt.Sprintf(format, args...)}
}

func (c *commonRequest) toQuery() (swarm.Query, error) {
	var q swarm.Query
	if strings.TrimSpace(c.Model) == "" {
		return q, bad("model", "model is required")
	}
	if len(c.Model) > 256 {
		return q, bad("model", "model name longer than 256 bytes")
	}
	r := &q.Request
	r.Model = c.Model
	if c.N != nil && *c.N != 1 {
		return q, bad("n", "n must be 1: mwpeer returns one choice (ask for several experts with mwpeer.k)")
	}
	mt := c.MaxTokens
	if c.MaxCompletionTokens != nil {
		mt = c.MaxCompletionTokens
	}
	if mt != nil {
		if *mt < 1 || *mt > MaxTokensCap {
			return q, bad("max_tokens", "max_tokens must be between 1 and %d", MaxTokensCap)
		}
		r.MaxTokens = *mt
	}
	if t := c.Temperature; t != nil {
		if math.IsNaN(*t) || *t < 0 || *t > 2 {
			return q, bad("temperature", "temperature must be between 0 and 2")
		}
		r.Temperature = t
	}
	if p := c.TopP; p != nil {
		if math.IsNaN(*p) || *p < 0 || *p > 1 {
			return q, bad("top_p", "top_p must be between 0 and 1")
		}
		r.TopP = p
	}
	if len(c.Stop) > MaxStops {
		return q, bad("stop", "at most %d stop sequences", MaxStops)
	}
	for _, s := range c.Stop {
		if s == "" || len(s) > 256 {
			return q, bad("stop", "stop sequences must be 1 to 256 bytes")
		}
	}
	r.Stop = c.Stop
	r.Seed = c.Seed
	deadline := DefaultDeadline
	if m := c.Mwpeer; m != nil {
		switch m.Strategy {
		case "", "fastest", "confidence", "blend":
			q.Strategy = m.Strategy
		default:
			return q, bad("mwpeer.strategy", "mwpeer.strategy must be fastest, confidence or blend")
		}
		if m.K < 0 || m.K > MaxK {
			return q, bad("mwpeer.k", "mwpeer.k must be between 1 and %d", MaxK)
		}
		q.K = m.K
		if len(m.Domains) > 8 {
			return q, bad("mwpeer.domains", "at most 8 domains")
		}
		q.Domains = m.Domains
		q.Verify = m.Verify
		if m.TimeoutMs < 0 {
			return q, bad("mwpeer.timeout_ms", "mwpeer.timeout_ms must be positive")
		}
		if m.TimeoutMs > 0 {
			deadline = min(time.Duration(m.TimeoutMs)*time.Millisecond, 30*time.Minute)
		}
	}
	r.Deadline = time.Now().Add(deadline)
	return q, nil
}

func (req *chatRequest) toQuery() (swarm.Query, error) {
	q, err := req.commonRequest.toQuery()
	if err != nil {
		return q, err
	}
	if q.Request.Messages, err = messages(req.Messages); err != nil {
		return q, err
	}
	var names []string
	if q.Request.Tools, names, err = tools(req.Tools); err != nil {
		return q, err
	}
	if q.Request.ToolChoice, err = toolChoice(req.ToolChoice, names); err != nil {
		return q, err
	}
	if q.Request.ToolChoice != "" && q.Request.ToolChoice != "none" && len(names) == 0 {
		return q, bad("tool_choice", "tool_choice needs tools")
	}
	if q.Request.Format, err = responseFormat(req.ResponseFormat); err != nil {
		return q, err
	}
	if req.TopLogprobs != nil {
		if *req.TopLogprobs < 0 || *req.TopLogprobs > MaxTopLogprobs {
			return q, bad("top_logprobs", "top_logprobs must be between 0 and %d", MaxTopLogprobs)
		}
		if !req.Logprobs && *req.TopLogprobs > 0 {
			return q, bad("top_logprobs", "top_logprobs needs logprobs: true")
		}
		q.Request.TopLogprobs = *req.TopLogprobs
	}
	q.Request.Logprobs = req.Logprobs
	return q, nil
}

func (req *completionRequest) toQuery() (swarm.Query, error) {
	q, err := req.commonRequest.toQuery()
	if err != nil {
		return q, err
	}
	if len(req.Prompt) != 1 {
		return q, bad("prompt", "prompt must be one string")
	}
	if req.Echo {
		return q, bad("echo", "echo is not supported")
	}
	if req.Suffix != nil && *req.Suffix != "" {
		return q, bad("suffix", "suffix is not supported")
	}
	q.Request.Prompt = req.Prompt[0]
	q.Request.Raw = true
	if req.Logprobs != nil {
		if *req.Logprobs < 0 || *req.Logprobs > 5 {
			return q, bad("logprobs", "logprobs must be between 0 and 5")
		}
		q.Request.Logprobs = true
		q.Request.TopLogprobs = *req.Logprobs
	}
	return q, nil
}

// decode reads a JSON body into v, mapping every failure to a 400.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return bad("", "Content-Type must be application/json")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &badRequest{msg: fmt.Sprintf("request body larger than %d bytes", tooBig.Limit), status: http.StatusRequestEntityTooLarge}
		}
		return bad("", "reading body: %v", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return bad(te.Field, "%s: wrong type (%s where %s was expected)", te.Field, te.Value, te.Type)
		}
		return bad("", "invalid JSON body: %v", err)
	}
	return nil
}

// writeErr maps an error to an OpenAI-style response.
func writeErr(w http.ResponseWriter, err error) {
	var br *badRequest
	status, code, typ := http.StatusInternalServerError, "internal_error", "server_error"
	var param *string
	switch {
	case errors.As(err, &br):
		status, code, typ = http.StatusBadRequest, "invalid_request", "invalid_request_error"
		if br.status != 0 {
			status = br.status
		}
		if br.param != "" {
			param = &br.param
		}
	case errors.Is(err, inference.ErrUnsupported):
		// The model cannot do what was asked: no retry helps.
		status, code, typ = http.StatusBadRequest, "unsupported", "invalid_request_error"
		p := unsupportedParam(err)
		param = &p
	case errors.Is(err, inference.ErrInvalidRequest):
		status, code, typ = http.StatusBadRequest, "invalid_request", "invalid_request_error"
	case errors.Is(err, inference.ErrUnknownModel):
		status, code, typ = http.StatusNotFound, "model_not_found", "invalid_request_error"
		p := "model"
		param = &p
	case errors.Is(err, inference.ErrBusy):
		// The one answer worth retrying, and when.
		status, code, typ = http.StatusServiceUnavailable, "busy", "server_error"
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, inference.ErrStalled):
		status, code, typ = http.StatusGatewayTimeout, "timeout", "server_error"
	case errors.Is(err, inference.ErrNoExpert):
		// Every expert asked failed: what they said is in the message.
		status, code, typ = http.StatusBadGateway, "experts_failed", "server_error"
	}
	writeJSON(w, status, ErrorBody{Error: ErrorDetail{Message: err.Error(), Type: typ, Param: param, Code: &code}})
}

// RetryAfter is the seconds a busy answer (503) asks a client to wait.
const RetryAfter = 2

// unsupportedParam is the request parameter an ErrUnsupported names: from
// the UnsupportedError where the error is local, else from the message a
// remote peer sent, which begins with it.
func unsupportedParam(err error) string {
	var ue *inference.UnsupportedError
	if errors.As(err, &ue) && ue.Param != "" {
		return ue.Param
	}
	msg := err.Error()
	for _, p := range []string{"tools", "messages", "response_format", "input", "model"} {
		if strings.Contains(msg, p+": model ") {
			return p
		}
	}
	return "model"
}

var idCounter atomic.Uint64

func newID(prefix string) string {
	return fmt.Sprintf("%s-%x%04x", prefix, time.Now().UnixNano(), idCounter.Add(1)&0xffff)
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
		// Engine is what serves it ("ollama", "embedded", ...; several
		// joined by commas), Description what it is when that is not
		// plain from its name (the built-in model).
		Engine      string      `json:"engine,omitempty"`
		Description string      `json:"description,omitempty"`
		Mwpeer      swarm.Model `json:"mwpeer"`
	}
	out := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, m := range s.swarm.Models() {
		out.Data = append(out.Data, model{ID: m.ID, Object: "model", OwnedBy: "mwpeer", Engine: strings.Join(m.Engines, ","), Description: describe(m.ID), Mwpeer: m})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("model")
	for _, m := range s.swarm.Models() {
		if m.ID == id {
			writeJSON(w, http.StatusOK, map[string]any{"id": m.ID, "object": "model", "created": 0, "owned_by": "mwpeer",
				"engine": strings.Join(m.Engines, ","), "description": describe(m.ID), "mwpeer": m})
			return
		}
	}
	writeErr(w, fmt.Errorf("model %q: %w", id, inference.ErrUnknownModel))
}
