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

// The Responses API (POST /v1/responses): input as a string or a list of
// items (messages, function calls and their outputs), instructions, JSON
// output (text.format), function tools, streaming events and usage. Stored
// responses and conversation state are not served: a request using them
// gets a 400 naming the parameter.

type responsesRequest struct {
	Model              string          `json:"model"`
	Input              json.RawMessage `json:"input"`
	Instructions       *string         `json:"instructions"`
	Stream             bool            `json:"stream"`
	MaxOutputTokens    *int            `json:"max_output_tokens"`
	Temperature        *float64        `json:"temperature"`
	TopP               *float64        `json:"top_p"`
	Tools              json.RawMessage `json:"tools"`
	ToolChoice         json.RawMessage `json:"tool_choice"`
	PreviousResponseID *string         `json:"previous_response_id"`
	Conversation       json.RawMessage `json:"conversation"`
	Text               *struct {
		Format json.RawMessage `json:"format"`
	} `json:"text"`
	Metadata json.RawMessage `json:"metadata"`
	Mwpeer   *mwpeerOptions  `json:"mwpeer"`
}

// inputItem is one item of a Responses input list: a message ({"role",
// "content"}, with or without "type": "message"), a function call the
// model made ("function_call") or its result ("function_call_output").
type inputItem struct {
	Type      string         `json:"type"`
	Role      string         `json:"role"`
	Content   messageContent `json:"content"`
	CallID    string         `json:"call_id"`
	Name      string         `json:"name"`
	Arguments string         `json:"arguments"`
	Output    messageContent `json:"output"`
}

// responsesTools turns Responses function tools ({"type": "function",
// "name", "description", "parameters"}) into chat tools.
func responsesTools(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var ts []struct {
		Type        string          `json:"type"`
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
	}
	if err := json.Unmarshal(raw, &ts); err != nil {
		return nil, bad("tools", "tools must be an array of {\"type\": \"function\", \"name\", ...}")
	}
	type function struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
	}
	type tool struct {
		Type     string   `json:"type"`
		Function function `json:"function"`
	}
	out := make([]tool, 0, len(ts))
	for i, t := range ts {
		if t.Type != "function" {
			return nil, bad(fmt.Sprintf("tools[%d].type", i), "tools of type %q are not supported (function tools are)", t.Type)
		}
		out = append(out, tool{Type: "function", Function: function{Name: t.Name, Description: t.Description, Parameters: t.Parameters}})
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, bad("tools", "tools: %v", err)
	}
	return b, nil
}

func (req *responsesRequest) toQuery() (swarm.Query, error) {
	c := commonRequest{Model: req.Model, Temperature: req.Temperature, TopP: req.TopP, MaxTokens: req.MaxOutputTokens, Mwpeer: req.Mwpeer}
	q, err := c.toQuery()
	if err != nil {
		return q, err
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
			switch it.Type {
			case "", "message":
				msgs = append(msgs, chatMessage{Role: it.Role, Content: it.Content})
			case "function_call":
				call := toolCallJSON{ID: it.CallID, Type: "function"}
				call.Function.Name, call.Function.Arguments = it.Name, it.Arguments
				if n := len(msgs); n > 0 && msgs[n-1].Role == "assistant" && msgs[n-1].Content.text == "" {
					msgs[n-1].ToolCalls = append(msgs[n-1].ToolCalls, call) // calls of one turn
				} else {
					msgs = append(msgs, chatMessage{Role: "assistant", ToolCalls: []toolCallJSON{call}})
				}
			case "function_call_output":
				msgs = append(msgs, chatMessage{Role: "tool", ToolCallID: it.CallID, Content: it.Output})
			default:
				return q, bad(fmt.Sprintf("input[%d].type", i), "input items of type %q are not supported (message, function_call and function_call_output are)", it.Type)
			}
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
	chatTools, err := responsesTools(req.Tools)
	if err != nil {
		return q, err
	}
	var names []string
	if q.Request.Tools, names, err = tools(chatTools); err != nil {
		return q, err
	}
	if q.Request.ToolChoice, err = toolChoice(req.ToolChoice, names); err != nil {
		return q, err
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
		Output: []map[string]any{}, Tools: []any{}, ToolChoice: "auto", ParallelToolCalls: true, Metadata: map[string]string{},
		Text: map[string]any{"format": map[string]any{"type": "text"}},
	}
	if req.Text != nil && len(req.Text.Format) > 0 {
		rs.Text = map[string]any{"format": req.Text.Format}
	}
	if len(req.Tools) > 0 && string(req.Tools) != "null" {
		rs.Tools = []any{req.Tools}
		var ts []any
		if json.Unmarshal(req.Tools, &ts) == nil {
			rs.Tools = ts
		}
	}
	if len(req.ToolChoice) > 0 && string(req.ToolChoice) != "null" {
		rs.ToolChoice = req.ToolChoice
	}
	var model atomic.Pointer[string]
	model.Store(&q.Request.Model)
	q.Answering = func(_, m string) { model.Store(&m) }
	out := &responseOutput{msgID: newID("msg")}

	if !req.Stream {
		ans, err := s.swarm.Complete(ctx, q, func(_ string, c inference.Chunk) error {
			out.add(c, nil)
			return nil
		})
		s.charge(r, ans)
		if err != nil {
			writeErr(w, err)
			return
		}
		rs.finish(ans, q, out)
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
	begin := func(expert string) {
		w.Header().Set("X-Mwpeer-Experts", expert)
		sw.start()
		rs.Model = *model.Load()
		event("response.created", map[string]any{"response": rs})
		event("response.in_progress", map[string]any{"response": rs})
	}
	ans, err := s.swarm.Complete(ctx, q, func(expert string, c inference.Chunk) error {
		if !sw.started {
			begin(expert)
		}
		out.add(c, event)
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
	rs.finish(ans, q, out)
	out.close(event)
	if rs.Status == "incomplete" {
		event("response.incomplete", map[string]any{"response": rs})
		return
	}
	event("response.completed", map[string]any{"response": rs})
}

// responseOutput gathers a response's output items as the answer streams:
// a message for its text (opened at its first text) and a function_call
// item per tool call. With event set, it says so in Responses events.
type responseOutput struct {
	msgID string
	items []map[string]any
	msg   int // index of the message item (-1 before its first text)
	text  strings.Builder
	open  bool
}

func outputText(text string) map[string]any {
	return map[string]any{"type": "output_text", "text": text, "annotations": []any{}}
}

func (o *responseOutput) add(c inference.Chunk, event func(string, map[string]any)) {
	if event == nil {
		event = func(string, map[string]any) {}
	}
	if c.Text != "" {
		if !o.open {
			o.open, o.msg = true, len(o.items)
			o.items = append(o.items, map[string]any{"type": "message", "id": o.msgID, "status": "in_progress", "role": "assistant", "content": []any{}})
			event("response.output_item.added", map[string]any{"output_index": o.msg, "item": o.items[o.msg]})
			event("response.content_part.added", map[string]any{"item_id": o.msgID, "output_index": o.msg, "content_index": 0, "part": outputText("")})
		}
		o.text.WriteString(c.Text)
		event("response.output_text.delta", map[string]any{"item_id": o.msgID, "output_index": o.msg, "content_index": 0, "delta": c.Text, "logprobs": []any{}})
	}
	for _, tc := range c.ToolCalls {
		id := newID("fc")
		callID := tc.ID
		if callID == "" {
			callID = fmt.Sprintf("call_%d", tc.Index)
		}
		i := len(o.items)
		item := map[string]any{"type": "function_call", "id": id, "call_id": callID, "name": tc.Name, "arguments": "", "status": "in_progress"}
		o.items = append(o.items, item)
		event("response.output_item.added", map[string]any{"output_index": i, "item": item})
		event("response.function_call_arguments.delta", map[string]any{"item_id": id, "output_index": i, "delta": tc.Arguments})
		event("response.function_call_arguments.done", map[string]any{"item_id": id, "output_index": i, "arguments": tc.Arguments})
		done := map[string]any{"type": "function_call", "id": id, "call_id": callID, "name": tc.Name, "arguments": tc.Arguments, "status": "completed"}
		o.items[i] = done
		event("response.output_item.done", map[string]any{"output_index": i, "item": done})
	}
}

// close ends the message item, if there is one.
func (o *responseOutput) close(event func(string, map[string]any)) {
	if !o.open {
		return
	}
	text := o.text.String()
	event("response.output_text.done", map[string]any{"item_id": o.msgID, "output_index": o.msg, "content_index": 0, "text": text, "logprobs": []any{}})
	event("response.content_part.done", map[string]any{"item_id": o.msgID, "output_index": o.msg, "content_index": 0, "part": outputText(text)})
	event("response.output_item.done", map[string]any{"output_index": o.msg, "item": o.items[o.msg]})
}

// response is a Responses API response object.
type response struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	CreatedAt         int64             `json:"created_at"`
	Status            string            `json:"status"` // in_progress, completed, incomplete, failed
	Model             string            `json:"model"`
	Output            []map[string]any  `json:"output"`
	Usage             *responseUsage    `json:"usage"`
	Error             map[string]any    `json:"error"`
	IncompleteDetails map[string]string `json:"incomplete_details"`
	Instructions      *string           `json:"instructions"`
	MaxOutputTokens   *int              `json:"max_output_tokens"`
	Temperature       *float64          `json:"temperature"`
	TopP              *float64          `json:"top_p"`
	Tools             []any             `json:"tools"`
	ToolChoice        any               `json:"tool_choice"`
	ParallelToolCalls bool              `json:"parallel_tool_calls"`
	Text              map[string]any    `json:"text"`
	Metadata          map[string]string `json:"metadata"`
	Mwpeer            *mwpeerInfo       `json:"mwpeer,omitempty"`
}

type responseUsage struct {
	InputTokens         int            `json:"input_tokens"`
	InputTokensDetails  map[string]int `json:"input_tokens_details"`
	OutputTokens        int            `json:"output_tokens"`
	OutputTokensDetails map[string]int `json:"output_tokens_details"`
	TotalTokens         int            `json:"total_tokens"`
}

// finish fills rs from a finished answer and its output.
func (rs *response) finish(ans swarm.Answer, q swarm.Query, out *responseOutput) {
	rs.Model = answerModel(ans, q)
	rs.Status = "completed"
	status := "completed"
	if ans.Final.FinishReason == inference.FinishLength {
		rs.Status, status = "incomplete", "incomplete"
		rs.IncompleteDetails = map[string]string{"reason": "max_output_tokens"}
	}
	if out.open {
		out.items[out.msg] = map[string]any{"type": "message", "id": out.msgID, "status": status, "role": "assistant",
			"content": []any{outputText(out.text.String())}}
	}
	if len(out.items) == 0 { // an empty answer is an empty message
		out.items = []map[string]any{{"type": "message", "id": out.msgID, "status": status, "role": "assistant", "content": []any{outputText("")}}}
	}
	rs.Output = out.items
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
