package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/swarm"
)

// openAIRequest is a decoded /v1 request body.
type openAIRequest interface {
	toQuery() (swarm.Query, error)
	common() *commonRequest
}

func (r *chatRequest) common() *commonRequest       { return &r.commonRequest }
func (r *completionRequest) common() *commonRequest { return &r.commonRequest }

// handleOpenAI decodes and validates a /v1 request into req, then serves it.
func (s *Server) handleOpenAI(w http.ResponseWriter, r *http.Request, req openAIRequest, chat bool) {
	if err := decode(r, req); err != nil {
		writeErr(w, err)
		return
	}
	q, err := req.toQuery()
	if err != nil {
		writeErr(w, err)
		return
	}
	if msg := s.tooLong(q); msg != "" {
		writeError(w, http.StatusBadRequest, "context_length_exceeded", msg)
		return
	}
	c := req.common()
	s.serveCompletion(w, r, q, c.Stream, c.StreamOptions != nil && c.StreamOptions.IncludeUsage, chat)
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	s.handleOpenAI(w, r, &chatRequest{}, true)
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	s.handleOpenAI(w, r, &completionRequest{}, false)
}

// RouteTimeout bounds POST /api/route (a DHT lookup may be part of it).
const RouteTimeout = 3 * time.Second

func (s *Server) handleRoute(w http.ResponseWriter, r *http.Request) {
	var req struct {
		chatRequest
		Prompt string `json:"prompt"`
	}
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if req.Prompt != "" && len(req.Messages) == 0 {
		req.Messages = append(req.Messages, chatMessage{Role: "user", Content: messageContent{text: req.Prompt}})
	}
	if req.Model == "" {
		req.Model = "*" // any model
	}
	q, err := req.chatRequest.toQuery()
	if err != nil {
		writeErr(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), RouteTimeout)
	defer cancel()
	d, err := s.swarm.Route(ctx, q)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// usage is OpenAI's token accounting.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// mwpeerInfo is added to responses: who answered and how.
type mwpeerInfo struct {
	Experts   []string `json:"experts"`
	Failovers int      `json:"failovers"`
	Agreement *float64 `json:"agreement,omitempty"`
	TTFTMs    float64  `json:"ttft_ms"`
}

type chatLogprob struct {
	Token       string         `json:"token"`
	Logprob     float64        `json:"logprob"`
	Bytes       []int          `json:"bytes"`
	TopLogprobs []chatLogprobT `json:"top_logprobs"`
}

type chatLogprobT struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

type textLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

func tokenBytes(s string) []int {
	out := make([]int, len(s))
	for i := 0; i < len(s); i++ {
		out[i] = int(s[i])
	}
	return out
}

func toChatLogprobs(lps []inference.TokenLogprob) []chatLogprob {
	out := make([]chatLogprob, 0, len(lps))
	for _, lp := range lps {
		c := chatLogprob{Token: lp.Token, Logprob: lp.Logprob, Bytes: tokenBytes(lp.Token), TopLogprobs: []chatLogprobT{}}
		for _, t := range lp.Top {
			c.TopLogprobs = append(c.TopLogprobs, chatLogprobT{Token: t.Token, Logprob: t.Logprob, Bytes: tokenBytes(t.Token)})
		}
		out = append(out, c)
	}
	return out
}

func addTextLogprobs(tl *textLogprobs, lps []inference.TokenLogprob, offset int) int {
	for _, lp := range lps {
		tl.Tokens = append(tl.Tokens, lp.Token)
		tl.TokenLogprobs = append(tl.TokenLogprobs, lp.Logprob)
		top := map[string]float64{}
		for _, t := range lp.Top {
			top[t.Token] = t.Logprob
		}
		tl.TopLogprobs = append(tl.TopLogprobs, top)
		tl.TextOffset = append(tl.TextOffset, offset)
		offset += len(lp.Token)
	}
	return offset
}

// finishReason is OpenAI's finish_reason for an answer: "stop" when a stop
// sequence ended it here, "tool_calls" when it made calls, else the
// engine's.
func finishReason(f inference.Final, stopped, toolCalls bool) string {
	switch {
	case stopped:
		return "stop"
	case toolCalls || f.FinishReason == inference.FinishToolCalls:
		return "tool_calls"
	case f.FinishReason == "":
		return "stop"
	}
	return f.FinishReason
}

func info(a swarm.Answer) mwpeerInfo {
	ex := a.Experts
	if ex == nil {
		ex = []string{}
	}
	return mwpeerInfo{Experts: ex, Failovers: a.Failovers, Agreement: a.Agreement, TTFTMs: float64(a.Final.TTFT.Microseconds()) / 1000}
}

func (s *Server) serveCompletion(w http.ResponseWriter, r *http.Request, q swarm.Query, stream, includeUsage, chat bool) {
	capToBudget(r, &q)
	ctx, cancel := context.WithDeadline(r.Context(), q.Request.Deadline)
	defer cancel()
	id := newID("chatcmpl")
	object := "chat.completion"
	if !chat {
		id, object = newID("cmpl"), "text_completion"
	}
	created := time.Now().Unix()
	// The model that answers: for "auto", the one routing chose, known
	// before the first chunk reaches emit.
	var model atomic.Pointer[string]
	model.Store(&q.Request.Model)
	q.Answering = func(_, m string) { model.Store(&m) }
	if !stream {
		wa, err := s.completeWhole(ctx, r, q)
		if err != nil {
			writeErr(w, err)
			return
		}
		ans, text, hit, lps, calls := wa.ans, wa.text, wa.hit, wa.lps, wa.calls
		w.Header().Set("X-Mwpeer-Experts", strings.Join(ans.Experts, ","))
		u := usage{ans.Final.PromptTokens, ans.Final.CompletionTokens, ans.Final.PromptTokens + ans.Final.CompletionTokens}
		choice := map[string]any{"index": 0, "finish_reason": finishReason(ans.Final, hit, len(calls) > 0), "logprobs": nil}
		if chat {
			msg := map[string]any{"role": "assistant", "content": text}
			if len(calls) > 0 {
				msg["tool_calls"] = openAIToolCalls(calls, false)
				if text == "" {
					msg["content"] = nil
				}
			}
			choice["message"] = msg
			if q.Request.Logprobs {
				choice["logprobs"] = map[string]any{"content": toChatLogprobs(lps)}
			}
		} else {
			choice["text"] = text
			if q.Request.Logprobs {
				var tl textLogprobs
				addTextLogprobs(&tl, lps, 0)
				choice["logprobs"] = tl
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"id": id, "object": object, "created": created, "model": answerModel(ans, q),
			"choices": []any{choice}, "usage": u, "mwpeer": info(ans),
		})
		return
	}
	stops := newStopper(q.Request.Stop)

	// Streaming. Headers wait for the first token so that they can name the
	// expert that produced it, and so that an error before any token still
	// gets its proper HTTP status.
	sw := &sseWriter{w: w}
	chunkObject := "chat.completion.chunk"
	if !chat {
		chunkObject = "text_completion"
	}
	offset := 0
	calls := 0
	send := func(text string, lps []inference.TokenLogprob, tcs []inference.ToolCall) {
		choice := map[string]any{"index": 0, "finish_reason": nil, "logprobs": nil}
		if chat {
			delta := map[string]any{"content": text}
			if len(tcs) > 0 {
				delta = map[string]any{"tool_calls": openAIToolCalls(tcs, true)}
				if text != "" {
					delta["content"] = text
				}
			}
			choice["delta"] = delta
			if q.Request.Logprobs {
				choice["logprobs"] = map[string]any{"content": toChatLogprobs(lps)}
			}
		} else {
			choice["text"] = text
			if q.Request.Logprobs {
				var tl textLogprobs
				offset = addTextLogprobs(&tl, lps, offset)
				choice["logprobs"] = tl
			}
		}
		sw.event(map[string]any{"id": id, "object": chunkObject, "created": created, "model": *model.Load(), "choices": []any{choice}})
	}
	emit := func(expert string, c inference.Chunk) error {
		if !sw.started {
			w.Header().Set("X-Mwpeer-Experts", expert)
			sw.start()
			if chat {
				sw.event(map[string]any{"id": id, "object": chunkObject, "created": created, "model": *model.Load(),
					"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}, "finish_reason": nil, "logprobs": nil}}})
			}
		}
		if stops.hit {
			return sw.err // the answer ended at a stop sequence: the rest is dropped
		}
		text, _ := stops.push(c.Text)
		calls += len(c.ToolCalls)
		if text == "" && len(c.Logprobs) == 0 && len(c.ToolCalls) == 0 {
			return sw.err
		}
		send(text, c.Logprobs, c.ToolCalls)
		return sw.err
	}
	ans, err := s.swarm.Complete(ctx, q, emit)
	s.charge(r, ans)
	if err != nil {
		if !sw.started {
			writeErr(w, err)
			return
		}
		// Mid-stream: the status is already 200; say what happened in the stream.
		code := "stream_error"
		sw.event(ErrorBody{Error: ErrorDetail{Message: err.Error(), Type: "server_error", Code: &code}})
		sw.done()
		return
	}
	if !sw.started {
		w.Header().Set("X-Mwpeer-Experts", strings.Join(ans.Experts, ","))
		sw.start()
	}
	if rest := stops.flush(); rest != "" {
		send(rest, nil, nil)
	}
	m := answerModel(ans, q)
	last := map[string]any{"index": 0, "finish_reason": finishReason(ans.Final, stops.hit, calls > 0), "logprobs": nil}
	if chat {
		last["delta"] = map[string]any{}
	} else {
		last["text"] = ""
	}
	sw.event(map[string]any{"id": id, "object": chunkObject, "created": created, "model": m,
		"choices": []any{last}, "mwpeer": info(ans)})
	if includeUsage {
		u := usage{ans.Final.PromptTokens, ans.Final.CompletionTokens, ans.Final.PromptTokens + ans.Final.CompletionTokens}
		sw.event(map[string]any{"id": id, "object": chunkObject, "created": created, "model": m,
			"choices": []any{}, "usage": u})
	}
	sw.done()
}

// answerModel is the model that answered q.
func answerModel(ans swarm.Answer, q swarm.Query) string {
	if ans.Model != "" {
		return ans.Model
	}
	return q.Request.Model
}

// sseWriter writes server-sent events and remembers the first write error
// (a client that went away), which ends the generation through emit.
type sseWriter struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	started bool
	err     error
}

func (s *sseWriter) start() {
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
	s.started = true
}

func (s *sseWriter) event(v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		s.err = err
		return
	}
	if _, err := fmt.Fprintf(s.w, "data: %s\n\n", data); err != nil {
		s.err = err
		return
	}
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *sseWriter) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	fmt.Fprint(s.w, "data: [DONE]\n\n")
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

// bytesPerToken is how many bytes of text a token takes at least, for most
// tokenizers and languages (English is about 4; code and other scripts
// less): a prompt estimated at bytes/bytesPerToken tokens is surely too
// long for a context shorter than that.
const bytesPerToken = 3

// tooLong says why q's prompt cannot fit the context length the model's
// servers announce (the smallest), or "" when it may: the page and clients
// get a clear error instead of a 503 after every expert refused or cut it.
func (s *Server) tooLong(q swarm.Query) string {
	n := len(q.Request.Prompt)
	for _, m := range q.Request.Messages {
		n += len(m.Content)
	}
	est := n / bytesPerToken
	if est < 512 || q.Request.Model == swarm.AnyModel {
		return "" // shorter than any context, or the model is not chosen yet
	}
	for _, m := range s.swarm.Models() {
		if m.ID == q.Request.Model && m.Context > 0 && est > m.Context {
			return fmt.Sprintf("this prompt is at least %d tokens (%d bytes), but %s takes at most %d tokens of context: shorten it or start a new conversation", est, n, m.ID, m.Context)
		}
	}
	return ""
}

// whole is a request answered in one piece: the text with any stop
// sequence cut off, and the log-probabilities and tool calls of the chunks
// before it. The caller's API key is charged whatever the outcome.
type whole struct {
	ans   swarm.Answer
	text  string
	hit   bool // a stop sequence ended the text
	lps   []inference.TokenLogprob
	calls []inference.ToolCall
}

// completeWhole asks the swarm for q in one piece, enforcing its stop
// sequences whatever the engine did (see stopper).
func (s *Server) completeWhole(ctx context.Context, r *http.Request, q swarm.Query) (whole, error) {
	var out whole
	stops := newStopper(q.Request.Stop)
	ans, err := s.swarm.Complete(ctx, q, func(_ string, c inference.Chunk) error {
		if !stops.hit {
			out.lps = append(out.lps, c.Logprobs...)
			out.calls = append(out.calls, c.ToolCalls...)
		}
		stops.push(c.Text)
		return nil
	})
	s.charge(r, ans)
	out.ans = ans
	if err != nil {
		return out, err
	}
	out.text, out.hit = cut(ans.Text, q.Request.Stop)
	return out, nil
}
