package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/swarm"
)

// The Responses API (POST /v1/responses), for text: input as a string or a
// list of messages, instructions, JSON output (text.format), streaming
// events and usage. Tools, stored responses and conversation state are not
// served: a request using them gets a 400 naming the parameter.

type responsesRequest struct {
	Model              string          `json:"model"`
	Input              json.RawMessage `json:"input"`
	Instructions       *string         `json:"instructions"`
	Stream             bool            `json:"stream"`
	MaxOutputTokens    *int            `json:"max_output_tokens"`
	Temperature        *float64        `json:"temperature"`
	TopP               *float64        `json:"top_p"`
	Tools              json.RawMessage `json:"tools"`
	PreviousResponseID *string         `json:"previous_response_id"`
	Conversation       json.RawMessage `json:"conversation"`
	Text               *struct {
		Format json.RawMessage `json:"format"`
	} `json:"text"`
	Metadata json.RawMessage `json:"metadata"`
	Mwpeer   *mwpeerOptions  `json:"mwpeer"`
}

// inputItem is one item of a Responses input list: a message ({"role",
// "content"}, with or without "type": "message").
type inputItem struct {
	Type    string         `json:"type"`
	Role    string         `json:"role"`
	Content messageContent `json:"content"`
}

func (req *responsesRequest) toQuery() (swarm.Query, error) {
	c := commonRequest{Model: req.Model, Temperature: req.Temperature, TopP: req.TopP, MaxTokens: req.MaxOutputTokens, Mwpeer: req.Mwpeer}
	q, err := c.toQuery()
	if err != nil {
		return q, err
	}
	if len(req.Tools) > 0 && string(req.Tools) != "null" && string(req.Tools) != "[]" {
		return q, bad("tools", "tools are not supported on /v1/responses yet: use /v1/chat/completions for function calling")
	}
	if req.PreviousResponseID != nil || len(req.Conversation) > 0 && string(req.Conversation) != "null" {
		return q, bad("previous_response_id", "responses are not stored: send the whole conversation as input")
	}
	var msgs []chatMessage
	if req.Instructions != nil && *req.Instructions != "" {
		msgs = append(msgs, chatMessage{Role: "system", Content: messageContent{text: *req.Instructions}})
	}
	var text string
	var items []inputItem
	switch {
	case json.Unmarshal(req.Input, &text) == nil:
		msgs = append(msgs, chatMessage{Role: "user", Content: messageContent{text: text}})
	case json.Unmarshal(req.Input, &items) == nil:
		for i, it := range items {
			if it.Type != "" && it.Type != "message" {
				return q, bad(fmt.Sprintf("input[%d].type", i), "input items of type %q are not supported (messages are)", it.Type)
			}
			msgs = append(msgs, chatMessage{Role: it.Role, Content: it.Content})
		}
	default:
		return q, bad("input", "input must be a string or a list of messages")
	}
	if q.Request.Messages, err = messages(msgs); err != nil {
		return q, err
	}
	if req.Text != nil {
		if q.Request.Format, err = responseFormat(req.Text.Format); err != nil {
			return q, err
		}
	}
	return q, nil
}

func (s *Server) handleResponses(w http.ResponseWriter, r *http.Request) {
	var req responsesRequest
	if err := decode(r, &req); err != nil {
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
	capToBudget(r, &q)
	ctx, cancel := context.WithDeadline(r.Context(), q.Request.Deadline)
	defer cancel()

	rs := &response{
		ID: newID("resp"), Object: "response", CreatedAt: time.Now().Unix(), Status: "in_progress", Model: req.Model,
		Instructions: req.Instructions, MaxOutputTokens: req.MaxOutputTokens, Temperature: req.Temperature, TopP: req.TopP,
		Output: []outputItem{}, Tools: []any{}, ToolChoice: "auto", ParallelToolCalls: true, Metadata: map[string]string{},
		Text: map[string]any{"format": map[string]any{"type": "text"}},
	}
	if req.Text != nil && len(req.Text.Format) > 0 {
		rs.Text = map[string]any{"format": req.Text.Format}
	}
	var model atomic.Pointer[string]
	model.Store(&q.Request.Model)
	q.Answering = func(_, m string) { model.Store(&m) }
	msgID := newID("msg")

	if !req.Stream {
		ans, err := s.swarm.Complete(ctx, q, func(string, inference.Chunk) error { return nil })
		s.charge(r, ans)
		if err != nil {
			writeErr(w, err)
			return
		}
		rs.finish(ans, q, msgID, ans.Text)
		w.Header().Set("X-Mwpeer-Experts", strings.Join(ans.Experts, ","))
		writeJSON(w, http.StatusOK, rs)
		return
	}

	sw := &sseWriter{w: w}
	seq := 0
	event := func(typ string, v map[string]any) {
		v["type"], v["sequence_number"] = typ, seq
		seq++
		sw.named(typ, v)
	}
	part := func(text string) map[string]any {
		return map[string]any{"type": "output_text", "text": text, "annotations": []any{}}
	}
	begin := func(expert string) {
		w.Header().Set("X-Mwpeer-Experts", expert)
		sw.start()
		rs.Model = *model.Load()
		event("response.created", map[string]any{"response": rs})
		event("response.in_progress", map[string]any{"response": rs})
		event("response.output_item.added", map[string]any{"output_index": 0,
			"item": map[string]any{"type": "message", "id": msgID, "status": "in_progress", "role": "assistant", "content": []any{}}})
		event("response.content_part.added", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0, "part": part("")})
	}
	var sb strings.Builder
	ans, err := s.swarm.Complete(ctx, q, func(expert string, c inference.Chunk) error {
		if !sw.started {
			begin(expert)
		}
		if c.Text != "" {
			sb.WriteString(c.Text)
			event("response.output_text.delta", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0, "delta": c.Text, "logprobs": []any{}})
		}
		return sw.err
	})
	s.charge(r, ans)
	if err != nil {
		if !sw.started {
			writeErr(w, err)
			return
		}
		rs.Status = "failed"
		rs.Error = map[string]any{"code": "server_error", "message": err.Error()}
		event("error", map[string]any{"code": "server_error", "message": err.Error(), "param": nil})
		event("response.failed", map[string]any{"response": rs})
		return
	}
	if !sw.started {
		begin(strings.Join(ans.Experts, ","))
	}
	rs.finish(ans, q, msgID, sb.String())
	text := sb.String()
	event("response.output_text.done", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0, "text": text, "logprobs": []any{}})
	event("response.content_part.done", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0, "part": part(text)})
	event("response.output_item.done", map[string]any{"output_index": 0, "item": rs.Output[0]})
	if rs.Status == "incomplete" {
		event("response.incomplete", map[string]any{"response": rs})
		return
	}
	event("response.completed", map[string]any{"response": rs})
}

// response is a Responses API response object.
type response struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	CreatedAt         int64             `json:"created_at"`
	Status            string            `json:"status"` // in_progress, completed, incomplete, failed
	Model             string            `json:"model"`
	Output            []outputItem      `json:"output"`
	Usage             *responseUsage    `json:"usage"`
	Error             map[string]any    `json:"error"`
	IncompleteDetails map[string]string `json:"incomplete_details"`
	Instructions      *string           `json:"instructions"`
	MaxOutputTokens   *int              `json:"max_output_tokens"`
	Temperature       *float64          `json:"temperature"`
	TopP              *float64          `json:"top_p"`
	Tools             []any             `json:"tools"`
	ToolChoice        string            `json:"tool_choice"`
	ParallelToolCalls bool              `json:"parallel_tool_calls"`
	Text              map[string]any    `json:"text"`
	Metadata          map[string]string `json:"metadata"`
	Mwpeer            *mwpeerInfo       `json:"mwpeer,omitempty"`
}

type outputItem struct {
	Type    string           `json:"type"`
	ID      string           `json:"id"`
	Status  string           `json:"status"`
	Role    string           `json:"role"`
	Content []map[string]any `json:"content"`
}

type responseUsage struct {
	InputTokens         int            `json:"input_tokens"`
	InputTokensDetails  map[string]int `json:"input_tokens_details"`
	OutputTokens        int            `json:"output_tokens"`
	OutputTokensDetails map[string]int `json:"output_tokens_details"`
	TotalTokens         int            `json:"total_tokens"`
}

// finish fills rs from a finished answer whose text is text.
func (rs *response) finish(ans swarm.Answer, q swarm.Query, msgID, text string) {
	rs.Model = answerModel(ans, q)
	rs.Status = "completed"
	item := outputItem{Type: "message", ID: msgID, Status: "completed", Role: "assistant",
		Content: []map[string]any{{"type": "output_text", "text": text, "annotations": []any{}}}}
	if ans.Final.FinishReason == inference.FinishLength {
		rs.Status, item.Status = "incomplete", "incomplete"
		rs.IncompleteDetails = map[string]string{"reason": "max_output_tokens"}
	}
	rs.Output = []outputItem{item}
	f := ans.Final
	rs.Usage = &responseUsage{InputTokens: f.PromptTokens, OutputTokens: f.CompletionTokens, TotalTokens: f.PromptTokens + f.CompletionTokens,
		InputTokensDetails: map[string]int{"cached_tokens": 0}, OutputTokensDetails: map[string]int{"reasoning_tokens": 0}}
	i := info(ans)
	rs.Mwpeer = &i
}

// named writes a server-sent event with an event name.
func (s *sseWriter) named(name string, v any) {
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
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", name, data); err != nil {
		s.err = err
		return
	}
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}
