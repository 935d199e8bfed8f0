package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ollama "github.com/ollama/ollama/api"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/swarm"
)

// The Ollama API on the peer's own port, for tools and apps that speak
// Ollama rather than OpenAI (the ollama CLI with OLLAMA_HOST pointing at a
// peer, Open WebUI, LangChain's Ollama classes): /api/version, /api/tags,
// /api/show, /api/ps, /api/chat, /api/generate and /api/embed, answered by
// the swarm as /v1 is. Bodies are Ollama's own types (its Go client's
// package), streamed as NDJSON unless "stream": false.
//
// What only makes sense on a machine's own Ollama (pull, push, create,
// copy, delete, blobs) answers with an error that says where to do it.

// OllamaVersion is the Ollama API version this API speaks (/api/version).
const OllamaVersion = "0.17.4"

// PeerHeader marks the Ollama API's answers as a peer's, not Ollama's: a
// peer that looks for a local Ollama (--engine auto) refuses one that
// carries it, so that it never serves another peer as its engine.
const PeerHeader = "X-Mwpeer-Peer"

// ollamaPaths are the Ollama API's paths and their methods (for the 405
// answers); /api/status and the other paths of mwpeer's own /api are not
// among them.
var ollamaPaths = map[string]string{
	"/api/version": "GET", "/api/tags": "GET", "/api/ps": "GET", "/api/show": "POST",
	"/api/chat": "POST", "/api/generate": "POST", "/api/embed": "POST", "/api/embeddings": "POST",
}

// isOllamaWork says whether path runs a model (and so needs an API key
// when the peer has keys, as /v1 does).
func isOllamaWork(path string) bool {
	switch path {
	case "/api/chat", "/api/generate", "/api/embed", "/api/embeddings":
		return true
	}
	return false
}

// handleOllama registers the Ollama API on s (swarm must be set).
func (s *Server) handleOllama() {
	s.mux.HandleFunc("GET /api/version", s.ollamaVersion)
	s.mux.HandleFunc("GET /api/tags", s.ollamaTags)
	s.mux.HandleFunc("GET /api/ps", s.ollamaPs)
	s.mux.HandleFunc("POST /api/show", s.ollamaShow)
	s.mux.HandleFunc("POST /api/chat", s.ollamaChat)
	s.mux.HandleFunc("POST /api/generate", s.ollamaGenerate)
	s.mux.HandleFunc("POST /api/embed", s.ollamaEmbed)
	s.mux.HandleFunc("POST /api/embeddings", s.ollamaEmbeddings)
	for _, path := range []string{"/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete", "/api/blobs/"} {
		s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			name := strings.TrimPrefix(strings.TrimSuffix(path, "/"), "/api/")
			ollamaError(w, http.StatusNotImplemented, fmt.Sprintf(
				"an mwpeer peer does not %s models: it serves what the swarm serves (ollama list shows it). "+
					"Run 'ollama %s' against the Ollama of a machine that runs a peer (OLLAMA_HOST unset), and the model joins the swarm within a minute", name, name))
		})
	}
	for path, allow := range ollamaPaths {
		s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			ollamaError(w, http.StatusMethodNotAllowed, r.Method+" "+r.URL.Path+": use "+allow)
		})
	}
}

// ollamaError writes Ollama's error shape, {"error": "..."}.
func ollamaError(w http.ResponseWriter, status int, msg string) {
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeCompact(w, status, map[string]string{"error": msg})
}

// writeOllamaErr maps an error as writeErr does, in Ollama's shape.
func writeOllamaErr(w http.ResponseWriter, err error) {
	var br *badRequest
	status := http.StatusInternalServerError
	switch {
	case errors.As(err, &br):
		status = http.StatusBadRequest
		if br.status != 0 {
			status = br.status
		}
	case errors.Is(err, inference.ErrUnknownModel):
		status = http.StatusNotFound
	case errors.Is(err, inference.ErrInvalidRequest), errors.Is(err, inference.ErrUnsupported):
		status = http.StatusBadRequest
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, inference.ErrStalled):
		status = http.StatusGatewayTimeout
	case errors.Is(err, inference.ErrNoExpert) || errors.Is(err, inference.ErrBusy):
		status = http.StatusServiceUnavailable
	}
	ollamaError(w, status, err.Error())
}

func writeCompact(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) ollamaVersion(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(PeerHeader, "1")
	writeCompact(w, http.StatusOK, map[string]string{"version": OllamaVersion})
}

// ollamaDigest stands in for a model digest, which the swarm does not keep
// per model name (peers may serve different files under one name): stable
// for a name, and as long as Ollama's, which its CLI cuts to 12 characters.
func ollamaDigest(name string) string {
	sum := sha256.Sum256([]byte("mwpeer model " + name))
	return hex.EncodeToString(sum[:])
}

// modifiedAt is what the listings give as a model's modification time: the
// swarm does not know it, and a fixed time keeps answers stable.
var modifiedAt = time.Unix(0, 0).UTC()

func (s *Server) ollamaTags(w http.ResponseWriter, r *http.Request) {
	out := ollama.ListResponse{Models: []ollama.ListModelResponse{}}
	for _, m := range s.swarm.Models() {
		out.Models = append(out.Models, ollama.ListModelResponse{
			Name: m.ID, Model: m.ID, Digest: ollamaDigest(m.ID), ModifiedAt: modifiedAt,
			Details: ollama.ModelDetails{Format: "gguf"},
		})
	}
	writeCompact(w, http.StatusOK, out)
}

// ollamaPs lists what this peer itself serves: the models that run here.
func (s *Server) ollamaPs(w http.ResponseWriter, r *http.Request) {
	out := ollama.ProcessResponse{Models: []ollama.ProcessModelResponse{}}
	for _, m := range s.swarm.Models() {
		if !m.Local {
			continue
		}
		out.Models = append(out.Models, ollama.ProcessModelResponse{
			Name: m.ID, Model: m.ID, Digest: ollamaDigest(m.ID), Details: ollama.ModelDetails{Format: "gguf"},
			ExpiresAt: time.Now().Add(24 * time.Hour).UTC(), ContextLength: m.Context,
		})
	}
	writeCompact(w, http.StatusOK, out)
}

// findModel resolves an Ollama model name against the swarm: exactly, or
// with ":latest" added as Ollama does for a name without a tag.
func (s *Server) findModel(name string) (swarm.Model, bool) {
	models := s.swarm.Models()
	for _, try := range []string{name, name + ":latest"} {
		if i := slices.IndexFunc(models, func(m swarm.Model) bool { return m.ID == try }); i >= 0 {
			return models[i], true
		}
	}
	return swarm.Model{}, false
}

// modelName is the name to route name by: the swarm's own spelling when it
// knows the model, else name as it is (routing then says it is unknown).
func (s *Server) modelName(name string) string {
	if name == swarm.AnyModel {
		return name
	}
	if m, ok := s.findModel(name); ok {
		return m.ID
	}
	return name
}

// notServed is the 404 of a model no peer serves, with what to do.
func (s *Server) notServed(w http.ResponseWriter, name string) {
	var names []string
	for _, m := range s.swarm.Models() {
		names = append(names, m.ID)
	}
	msg := fmt.Sprintf("model %q is not served by any peer in the swarm", name)
	if len(names) == 0 {
		msg += "; no peer serves any model yet: start a peer with Ollama running (or --engine embedded) on some machine"
	} else {
		msg += "; served now: " + strings.Join(names[:min(len(names), 20)], ", ") + " (ollama list shows them all)"
	}
	ollamaError(w, http.StatusNotFound, msg)
}

func (s *Server) ollamaShow(w http.ResponseWriter, r *http.Request) {
	var req ollama.ShowRequest
	if err := decode(r, &req); err != nil {
		writeOllamaErr(w, err)
		return
	}
	name := req.Model
	if name == "" {
		name = req.Name
	}
	if name == "" {
		ollamaError(w, http.StatusBadRequest, "model is required")
		return
	}
	m, ok := s.findModel(name)
	if !ok {
		s.notServed(w, name)
		return
	}
	info := map[string]any{"general.architecture": "swarm", "mwpeer.peers": m.Peers}
	if m.Context > 0 {
		info["swarm.context_length"] = m.Context
	}
	if len(m.Engines) > 0 {
		info["mwpeer.engines"] = strings.Join(m.Engines, ",")
	}
	caps := m.Capabilities
	if len(caps) == 0 {
		caps = []string{inference.CapCompletion}
	}
	var modelCaps []string
	for _, c := range caps {
		if c != "json" { // not an Ollama capability: every model takes a format
			modelCaps = append(modelCaps, c)
		}
	}
	writeCompact(w, http.StatusOK, map[string]any{
		"modelfile":    fmt.Sprintf("# served by the mwpeer swarm: %d peer(s)\nFROM %s\n", m.Peers, m.ID),
		"parameters":   "",
		"template":     "",
		"details":      ollama.ModelDetails{Format: "gguf"},
		"model_info":   info,
		"capabilities": modelCaps,
		"modified_at":  modifiedAt,
	})
}

// ollamaOptions reads the options Ollama's API takes that mwpeer routes:
// num_predict, temperature, top_p, stop and seed. Others (num_ctx,
// num_thread, ...) are the serving peer's business and are ignored.
func ollamaOptions(opts map[string]any, r *inference.Request) error {
	num := func(k string) (float64, bool, error) {
		v, ok := opts[k]
		if !ok || v == nil {
			return 0, false, nil
		}
		f, ok := v.(float64)
		if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, false, bad("options."+k, "options.%s must be a number", k)
		}
		return f, true, nil
	}
	if f, ok, err := num("num_predict"); err != nil {
		return err
	} else if ok && f > 0 {
		r.MaxTokens = int(min(f, MaxTokensCap))
	}
	if f, ok, err := num("temperature"); err != nil {
		return err
	} else if ok {
		if f < 0 || f > 2 {
			return bad("options.temperature", "options.temperature must be between 0 and 2")
		}
		r.Temperature = &f
	}
	if f, ok, err := num("top_p"); err != nil {
		return err
	} else if ok {
		if f < 0 || f > 1 {
			return bad("options.top_p", "options.top_p must be between 0 and 1")
		}
		r.TopP = &f
	}
	if f, ok, err := num("seed"); err != nil {
		return err
	} else if ok {
		seed := int64(f)
		r.Seed = &seed
	}
	if v, ok := opts["stop"]; ok && v != nil {
		list, ok := v.([]any)
		if !ok {
			return bad("options.stop", "options.stop must be an array of strings")
		}
		if len(list) > MaxStops {
			return bad("options.stop", "at most %d stop sequences", MaxStops)
		}
		for _, x := range list {
			s, ok := x.(string)
			if !ok || s == "" || len(s) > 256 {
				return bad("options.stop", "stop sequences must be strings of 1 to 256 bytes")
			}
			r.Stop = append(r.Stop, s)
		}
	}
	return nil
}

// toolsJSON turns Ollama's tools into the request's (OpenAI's shape, which
// is also Ollama's).
func toolsJSON(tools ollama.Tools) (json.RawMessage, error) {
	if len(tools) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(tools)
	if err != nil {
		return nil, bad("tools", "tools: %v", err)
	}
	return b, nil
}

func fromOllamaCalls(calls []ollama.ToolCall) ([]inference.ToolCall, error) {
	var out []inference.ToolCall
	for i, c := range calls {
		args, err := json.Marshal(c.Function.Arguments)
		if err != nil {
			return nil, bad("messages", "tool call %d: arguments: %v", i, err)
		}
		out = append(out, inference.ToolCall{Index: c.Function.Index, ID: c.ID, Name: c.Function.Name, Arguments: string(args)})
	}
	return out, nil
}

func toOllamaCalls(calls []inference.ToolCall) []ollama.ToolCall {
	out := make([]ollama.ToolCall, 0, len(calls))
	for _, c := range calls {
		args := ollama.NewToolCallFunctionArguments()
		if c.Arguments != "" {
			_ = json.Unmarshal([]byte(c.Arguments), &args) // left empty when not an object
		}
		out = append(out, ollama.ToolCall{ID: c.ID, Function: ollama.ToolCallFunction{Index: c.Index, Name: c.Name, Arguments: args}})
	}
	return out
}

// ollamaQuery is the part of a chat or generate request both share.
func (s *Server) ollamaQuery(model string, opts map[string]any, format json.RawMessage) (swarm.Query, error) {
	var q swarm.Query
	if strings.TrimSpace(model) == "" {
		return q, bad("model", "model is required")
	}
	if len(model) > 256 {
		return q, bad("model", "model name longer than 256 bytes")
	}
	q.Request.Model = s.modelName(model)
	if err := ollamaOptions(opts, &q.Request); err != nil {
		return q, err
	}
	if f := strings.TrimSpace(string(format)); f != "" && f != "null" && f != `""` {
		q.Request.Format = format
	}
	q.Request.Deadline = time.Now().Add(DefaultDeadline)
	return q, nil
}

func (s *Server) ollamaChat(w http.ResponseWriter, r *http.Request) {
	var req ollama.ChatRequest
	if err := decode(r, &req); err != nil {
		writeOllamaErr(w, err)
		return
	}
	q, err := s.ollamaQuery(req.Model, req.Options, req.Format)
	if err != nil {
		writeOllamaErr(w, err)
		return
	}
	if len(req.Messages) == 0 { // Ollama's way of loading a model: say it is there
		if _, ok := s.findModel(req.Model); !ok {
			s.notServed(w, req.Model)
			return
		}
		writeCompact(w, http.StatusOK, ollama.ChatResponse{Model: req.Model, CreatedAt: time.Now().UTC(),
			Message: ollama.Message{Role: "assistant"}, Done: true, DoneReason: "load"})
		return
	}
	if len(req.Messages) > MaxMessages {
		writeOllamaErr(w, bad("messages", "at most %d messages", MaxMessages))
		return
	}
	for i, m := range req.Messages {
		switch m.Role {
		case "system", "user", "assistant", "tool":
		default:
			writeOllamaErr(w, bad("messages", "messages[%d]: role %q is not supported (system, user, assistant or tool)", i, m.Role))
			return
		}
		msg := inference.Message{Role: m.Role, Content: m.Content, ToolName: m.ToolName, ToolCallID: m.ToolCallID}
		for _, img := range m.Images {
			msg.Images = append(msg.Images, img)
		}
		if msg.ToolCalls, err = fromOllamaCalls(m.ToolCalls); err != nil {
			writeOllamaErr(w, err)
			return
		}
		q.Request.Messages = append(q.Request.Messages, msg)
	}
	if q.Request.Tools, err = toolsJSON(req.Tools); err != nil {
		writeOllamaErr(w, err)
		return
	}
	if req.Logprobs {
		if req.TopLogprobs < 0 || req.TopLogprobs > MaxTopLogprobs {
			writeOllamaErr(w, bad("top_logprobs", "top_logprobs must be between 0 and %d", MaxTopLogprobs))
			return
		}
		q.Request.Logprobs, q.Request.TopLogprobs = true, req.TopLogprobs
	}
	s.serveOllama(w, r, q, req.Stream == nil || *req.Stream, req.Model, true)
}

func (s *Server) ollamaGenerate(w http.ResponseWriter, r *http.Request) {
	var req ollama.GenerateRequest
	if err := decode(r, &req); err != nil {
		writeOllamaErr(w, err)
		return
	}
	q, err := s.ollamaQuery(req.Model, req.Options, req.Format)
	if err != nil {
		writeOllamaErr(w, err)
		return
	}
	if req.Prompt == "" && len(req.Images) == 0 { // loading a model
		if _, ok := s.findModel(req.Model); !ok {
			s.notServed(w, req.Model)
			return
		}
		writeCompact(w, http.StatusOK, ollama.GenerateResponse{Model: req.Model, CreatedAt: time.Now().UTC(), Done: true, DoneReason: "load"})
		return
	}
	if req.Suffix != "" {
		writeOllamaErr(w, bad("suffix", "suffix is not supported"))
		return
	}
	switch {
	case req.Raw:
		q.Request.Prompt, q.Request.Raw = req.Prompt, true
	default:
		// The serving engine applies the model's template to a chat, as
		// Ollama does to a prompt and its system message.
		if req.System != "" {
			q.Request.Messages = append(q.Request.Messages, inference.Message{Role: "system", Content: req.System})
		}
		user := inference.Message{Role: "user", Content: req.Prompt}
		for _, img := range req.Images {
			user.Images = append(user.Images, img)
		}
		q.Request.Messages = append(q.Request.Messages, user)
	}
	if req.Logprobs {
		if req.TopLogprobs < 0 || req.TopLogprobs > MaxTopLogprobs {
			writeOllamaErr(w, bad("top_logprobs", "top_logprobs must be between 0 and %d", MaxTopLogprobs))
			return
		}
		q.Request.Logprobs, q.Request.TopLogprobs = true, req.TopLogprobs
	}
	s.serveOllama(w, r, q, req.Stream == nil || *req.Stream, req.Model, false)
}

// ollamaLogprobs turns a chunk's log-probabilities into Ollama's.
func ollamaLogprobs(lps []inference.TokenLogprob) []ollama.Logprob {
	if len(lps) == 0 {
		return nil
	}
	out := make([]ollama.Logprob, 0, len(lps))
	for _, lp := range lps {
		l := ollama.Logprob{TokenLogprob: ollama.TokenLogprob{Token: lp.Token, Logprob: lp.Logprob, Bytes: tokenBytes(lp.Token)}}
		for _, t := range lp.Top {
			l.TopLogprobs = append(l.TopLogprobs, ollama.TokenLogprob{Token: t.Token, Logprob: t.Logprob, Bytes: tokenBytes(t.Token)})
		}
		out = append(out, l)
	}
	return out
}

// ndjsonWriter streams Ollama's NDJSON lines, starting the answer on the
// first one so that an error before it still gets its own status.
type ndjsonWriter struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	started bool
	err     error
}

func (n *ndjsonWriter) line(v any) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.err != nil {
		return n.err
	}
	if !n.started {
		n.w.Header().Set("Content-Type", "application/x-ndjson")
		n.w.WriteHeader(http.StatusOK)
		n.started = true
	}
	b, err := json.Marshal(v)
	if err == nil {
		b = append(b, '\n')
		_, err = n.w.Write(b)
	}
	if err != nil {
		n.err = err
		return err
	}
	if f, ok := n.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

// serveOllama runs q and answers in /api/chat's shape (chat) or
// /api/generate's, streamed or whole.
func (s *Server) serveOllama(w http.ResponseWriter, r *http.Request, q swarm.Query, stream bool, model string, chat bool) {
	capToBudget(r, &q)
	ctx, cancel := context.WithDeadline(r.Context(), q.Request.Deadline)
	defer cancel()
	start := time.Now()
	// The model that answers: for "auto", the one routing chose, known
	// before the first chunk.
	var answering atomic.Pointer[string]
	answering.Store(&model)
	if model == swarm.AnyModel {
		q.Answering = func(_, m string) { answering.Store(&m) }
	}
	chunk := func(text string, lps []inference.TokenLogprob, calls []inference.ToolCall) any {
		model := *answering.Load()
		if chat {
			resp := ollama.ChatResponse{Model: model, CreatedAt: time.Now().UTC(), Message: ollama.Message{Role: "assistant", Content: text}, Logprobs: ollamaLogprobs(lps)}
			if len(calls) > 0 {
				resp.Message.ToolCalls = toOllamaCalls(calls)
			}
			return resp
		}
		return ollama.GenerateResponse{Model: model, CreatedAt: time.Now().UTC(), Response: text, Logprobs: ollamaLogprobs(lps)}
	}
	final := func(a swarm.Answer, text string, lps []inference.TokenLogprob, calls []inference.ToolCall) any {
		reason := a.Final.FinishReason
		if reason == "" || reason == inference.FinishToolCalls {
			reason = inference.FinishStop
		}
		m := ollama.Metrics{
			TotalDuration: time.Since(start), PromptEvalCount: a.Final.PromptTokens, EvalCount: a.Final.CompletionTokens,
			EvalDuration: a.Final.Duration - a.Final.TTFT, PromptEvalDuration: a.Final.TTFT,
		}
		if chat {
			resp := chunk(text, lps, calls).(ollama.ChatResponse)
			resp.Done, resp.DoneReason, resp.Metrics = true, reason, m
			return resp
		}
		resp := chunk(text, lps, nil).(ollama.GenerateResponse)
		resp.Done, resp.DoneReason, resp.Metrics = true, reason, m
		return resp
	}
	// Stop sequences are enforced here too, whatever the engine did (see stopper).
	if !stream {
		wa, err := s.completeWhole(ctx, r, q)
		if err != nil {
			writeOllamaErr(w, err)
			return
		}
		ans, text, hit, lps, calls := wa.ans, wa.text, wa.hit, wa.lps, wa.calls
		if hit {
			ans.Final.FinishReason = inference.FinishStop
		}
		w.Header().Set("X-Mwpeer-Experts", strings.Join(ans.Experts, ","))
		writeCompact(w, http.StatusOK, final(ans, text, lps, calls))
		return
	}
	stops := newStopper(q.Request.Stop)
	nw := &ndjsonWriter{w: w}
	ans, err := s.swarm.Complete(ctx, q, func(expert string, c inference.Chunk) error {
		if stops.hit {
			return nil // the answer ended at a stop sequence: the rest is dropped
		}
		text, _ := stops.push(c.Text)
		if text == "" && len(c.Logprobs) == 0 && len(c.ToolCalls) == 0 {
			return nil
		}
		if !nw.started {
			w.Header().Set("X-Mwpeer-Experts", expert)
		}
		return nw.line(chunk(text, c.Logprobs, c.ToolCalls))
	})
	s.charge(r, ans)
	if err != nil {
		if !nw.started {
			writeOllamaErr(w, err)
			return
		}
		_ = nw.line(map[string]string{"error": err.Error()}) // mid-stream: Ollama's clients read it as the error
		return
	}
	if !nw.started {
		w.Header().Set("X-Mwpeer-Experts", strings.Join(ans.Experts, ","))
	}
	if stops.hit {
		ans.Final.FinishReason = inference.FinishStop
	}
	_ = nw.line(final(ans, stops.flush(), nil, nil))
}

// ollamaEmbed answers /api/embed: one embedding per input, from a peer
// serving an embedding model.
func (s *Server) ollamaEmbed(w http.ResponseWriter, r *http.Request) {
	var req ollama.EmbedRequest
	if err := decode(r, &req); err != nil {
		writeOllamaErr(w, err)
		return
	}
	var inputs []string
	switch in := req.Input.(type) {
	case string:
		inputs = []string{in}
	case []any:
		for _, x := range in {
			s, ok := x.(string)
			if !ok {
				writeOllamaErr(w, bad("input", "input must be a string or an array of strings"))
				return
			}
			inputs = append(inputs, s)
		}
	case nil:
	default:
		writeOllamaErr(w, bad("input", "input must be a string or an array of strings"))
		return
	}
	embs, prompt, err := s.embed(r, req.Model, inputs, req.Options)
	if err != nil {
		writeOllamaErr(w, err)
		return
	}
	if embs == nil {
		embs = [][]float32{}
	}
	if req.Dimensions > 0 {
		for i, e := range embs {
			if req.Dimensions < len(e) {
				embs[i] = e[:req.Dimensions]
			}
		}
	}
	writeCompact(w, http.StatusOK, ollama.EmbedResponse{Model: req.Model, Embeddings: embs, PromptEvalCount: prompt})
}

// ollamaEmbeddings answers the older /api/embeddings: one prompt, one
// embedding.
func (s *Server) ollamaEmbeddings(w http.ResponseWriter, r *http.Request) {
	var req ollama.EmbeddingRequest
	if err := decode(r, &req); err != nil {
		writeOllamaErr(w, err)
		return
	}
	embs, _, err := s.embed(r, req.Model, []string{req.Prompt}, req.Options)
	if err != nil {
		writeOllamaErr(w, err)
		return
	}
	out := ollama.EmbeddingResponse{Embedding: []float64{}}
	if len(embs) == 1 {
		for _, v := range embs[0] {
			out.Embedding = append(out.Embedding, float64(v))
		}
	}
	writeCompact(w, http.StatusOK, out)
}

// maxOllamaInputs bounds the inputs of one /api/embed request.
const maxOllamaInputs = 2048

// embed runs inputs through the swarm as an embedding request.
func (s *Server) embed(r *http.Request, model string, inputs []string, opts map[string]any) ([][]float32, int, error) {
	q, err := s.ollamaQuery(model, opts, nil)
	if err != nil {
		return nil, 0, err
	}
	if len(inputs) == 0 {
		if _, ok := s.findModel(model); !ok {
			return nil, 0, fmt.Errorf("model %q: %w: no peer in the swarm serves it", model, inference.ErrUnknownModel)
		}
		return nil, 0, nil
	}
	if len(inputs) > maxOllamaInputs {
		return nil, 0, bad("input", "at most %d inputs", maxOllamaInputs)
	}
	q.Request.Input = inputs
	ctx, cancel := context.WithDeadline(r.Context(), q.Request.Deadline)
	defer cancel()
	var embs [][]float32
	ans, err := s.swarm.Complete(ctx, q, func(_ string, c inference.Chunk) error {
		if c.Embedding != nil {
			embs = append(embs, c.Embedding)
		}
		return nil
	})
	s.charge(r, ans)
	if err != nil {
		return nil, 0, err
	}
	if len(embs) != len(inputs) {
		return nil, 0, fmt.Errorf("the serving peer answered %d embeddings for %d inputs", len(embs), len(inputs))
	}
	return embs, ans.Final.PromptTokens, nil
}

// describe is what /v1/models says a model is, where its name does not:
// the built-in model of the embedded engine answers gibberish.
func describe(id string) string {
	if id == randmodel.BuiltinName {
		return BuiltinNote
	}
	return ""
}

// BuiltinNote says what the built-in model is, wherever it is listed.
const BuiltinNote = "random weights, for trying the swarm"
