package ollamatest

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

// FakeModel is the one model a Fake serves.
const FakeModel = "fake:latest"

// Fake is a zero-delay Ollama-compatible server: /api/chat and /api/generate
// stream Tokens NDJSON lines of "tok " each and a done line at once, and
// /api/version, /api/tags and /api/show describe one model, FakeModel. It
// costs next to nothing, so that benchmarks against it measure what is in
// front of it.
type Fake struct {
	URL    string
	Tokens int // tokens in every answer (default 1)

	// Requests counts the chat and generate requests served.
	Requests atomic.Int64

	srv *httptest.Server
}

// StartFake runs a Fake until the test ends.
func StartFake(t testing.TB) *Fake {
	t.Helper()
	f := &Fake{Tokens: 1}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]string{"version": "0.17.4"})
	})
	mux.HandleFunc("HEAD /{$}", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /api/tags", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, api.ListResponse{Models: []api.ListModelResponse{{
			Name: FakeModel, Model: FakeModel, Digest: "fa4efa4efa4efa4efa4efa4efa4efa4efa4efa4efa4efa4efa4efa4efa4efa4e", Size: 1 << 20,
			ModifiedAt: time.Unix(1700000000, 0),
			Details:    api.ModelDetails{Format: "gguf", Family: "llama", ParameterSize: "1M", QuantizationLevel: "F32"},
		}}})
	})
	mux.HandleFunc("POST /api/show", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, api.ShowResponse{
			Details:      api.ModelDetails{Format: "gguf", Family: "llama", ParameterSize: "1M", QuantizationLevel: "F32"},
			ModelInfo:    map[string]any{"general.architecture": "llama", "llama.context_length": 4096},
			Capabilities: nil,
		})
	})
	mux.HandleFunc("POST /api/chat", func(w http.ResponseWriter, r *http.Request) { f.stream(w, r, true) })
	mux.HandleFunc("POST /api/generate", func(w http.ResponseWriter, r *http.Request) { f.stream(w, r, false) })
	f.srv = httptest.NewServer(mux)
	f.URL = f.srv.URL
	t.Cleanup(f.srv.Close)
	return f
}

// stream answers one chat or generate request.
func (f *Fake) stream(w http.ResponseWriter, r *http.Request, chat bool) {
	var req struct {
		Model string `json:"model"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
		return
	}
	if req.Model != FakeModel && req.Model != strings.TrimSuffix(FakeModel, ":latest") {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"model '` + req.Model + `' not found"}`))
		return
	}
	f.Requests.Add(1)
	w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriter(w)
	fl, _ := w.(http.Flusher)
	n := max(f.Tokens, 1)
	for i := 0; i < n; i++ {
		if chat {
			bw.WriteString(`{"model":"` + FakeModel + `","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"tok "},"done":false}` + "\n")
		} else {
			bw.WriteString(`{"model":"` + FakeModel + `","created_at":"2026-01-01T00:00:00Z","response":"tok ","done":false}` + "\n")
		}
		if i == 0 {
			bw.Flush()
			if fl != nil {
				fl.Flush()
			}
		}
	}
	if chat {
		bw.WriteString(`{"model":"` + FakeModel + `","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":1,"eval_count":` + itoa(n) + "}\n")
	} else {
		bw.WriteString(`{"model":"` + FakeModel + `","created_at":"2026-01-01T00:00:00Z","response":"","done":true,"done_reason":"stop","prompt_eval_count":1,"eval_count":` + itoa(n) + "}\n")
	}
	bw.Flush()
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
