package ollamatest

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

// FakeModel is the chat model a Fake serves (capabilities completion and
// tools), FakeEmbedModel its embedding model.
const (
	FakeModel      = "fake:latest"
	FakeEmbedModel = "fake-embed:latest"
)

// Fake is a zero-delay Ollama-compatible server: /api/chat and /api/generate
// stream Tokens NDJSON lines of "tok " each and a done line at once (a chat
// that offers tools gets one call of the first, with {"x":1}), /api/embed
// answers [len(input), 1, 0] per input, and /api/version, /api/tags and
// /api/show describe FakeModel and FakeEmbedModel. It costs next to
// nothing, so that benchmarks against it measure what is in front of it.
type Fake struct {
	URL    string
	Tokens int // tokens in every answer (default 1)
	// Delay paces answers: it follows every token. Serial answers one
	// call at a time, as an Ollama with OLLAMA_NUM_PARALLEL=1 does: the
	// others wait, without a byte of answer, until it is done. Set both
	// before the first call.
	Delay  time.Duration
	Serial bool
	serial sync.Mutex

	// Requests counts the chat and generate requests served, Conns the
	// connections accepted.
	Requests, Conns atomic.Int64

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
		var list api.ListResponse
		for i, name := range []string{FakeModel, FakeEmbedModel} {
			list.Models = append(list.Models, api.ListModelResponse{
				Name: name, Model: name, Digest: strings.Repeat(string(rune('a'+i)), 64), Size: 1 << 20,
				ModifiedAt: time.Unix(1700000000, 0),
				Details:    api.ModelDetails{Format: "gguf", Family: "llama", ParameterSize: "1M", QuantizationLevel: "F32"},
			})
		}
		writeJSON(w, list)
	})
	mux.HandleFunc("POST /api/show", func(w http.ResponseWriter, r *http.Request) {
		var req api.ShowRequest
		json.NewDecoder(r.Body).Decode(&req)
		caps := []string{"completion", "tools"}
		if strings.HasPrefix(req.Model, "fake-embed") {
			caps = []string{"embedding"}
		}
		writeJSON(w, map[string]any{
			"details":      api.ModelDetails{Format: "gguf", Family: "llama", ParameterSize: "1M", QuantizationLevel: "F32"},
			"model_info":   map[string]any{"general.architecture": "llama", "llama.context_length": 4096},
			"capabilities": caps,
		})
	})
	mux.HandleFunc("POST /api/embed", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model string   `json:"model"`
			Input []string `json:"input"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || !strings.HasPrefix(req.Model, "fake-embed") {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"not an embedding model, or not a list of inputs"}`))
			return
		}
		out := api.EmbedResponse{Model: req.Model, PromptEvalCount: len(req.Input)}
		for _, in := range req.Input {
			out.Embeddings = append(out.Embeddings, []float32{float32(len(in)), 1, 0})
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("POST /api/chat", func(w http.ResponseWriter, r *http.Request) { f.stream(w, r, true) })
	mux.HandleFunc("POST /api/generate", func(w http.ResponseWriter, r *http.Request) { f.stream(w, r, false) })
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.Conns.Add(1)
		}
	}
	f.srv.Start()
	f.URL = f.srv.URL
	t.Cleanup(f.srv.Close)
	return f
}

// stream answers one chat or generate request.
func (f *Fake) stream(w http.ResponseWriter, r *http.Request, chat bool) {
	var req struct {
		Model string `json:"model"`
		Tools []struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		} `json:"tools"`
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
	if f.Serial {
		f.serial.Lock()
		defer f.serial.Unlock()
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriter(w)
	fl, _ := w.(http.Flusher)
	n := max(f.Tokens, 1)
	if chat && len(req.Tools) > 0 {
		bw.WriteString(`{"model":"` + FakeModel + `","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"index":0,"name":"` +
			req.Tools[0].Function.Name + `","arguments":{"x":1}}}]},"done":false}` + "\n")
		bw.WriteString(`{"model":"` + FakeModel + `","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":1,"eval_count":1}` + "\n")
		bw.Flush()
		return
	}
	for i := 0; i < n; i++ {
		if chat {
			bw.WriteString(`{"model":"` + FakeModel + `","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"tok "},"done":false}` + "\n")
		} else {
			bw.WriteString(`{"model":"` + FakeModel + `","created_at":"2026-01-01T00:00:00Z","response":"tok ","done":false}` + "\n")
		}
		if i == 0 || f.Delay > 0 {
			bw.Flush()
			if fl != nil {
				fl.Flush()
			}
			if f.Delay > 0 {
				time.Sleep(f.Delay)
			}
		}
	}
	if chat {
		bw.WriteString(`{"model":"` + FakeModel + `","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":1,"eval_count":` + itoa(n) + "}\n")
	} else {
		bw.WriteString(`{"model":"` + FakeModel + `","created_at":"2026-01-01T00:00:00Z","response":"","done":true,"done_reason":"stop","prompt_eval_count":1,"eval_count":` + itoa(n) + "}\n")
	}
	bw.Flush()
	if f.Serial && fl != nil {
		fl.Flush() // as Ollama does, before its next call begins
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
