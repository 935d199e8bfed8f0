package inference

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// This file maps what mwpeer asks beyond text (tools, images, formats,
// embeddings) and the capabilities Ollama reports to and from Ollama's API.

// ollamaCapabilities is what /api/show's capabilities mean in mwpeer's
// terms: the ones mwpeer knows, and CapJSON for every model that completes
// (Ollama constrains any model's output with a grammar).
func ollamaCapabilities(caps []model.Capability) []string {
	var out []string
	for _, c := range caps {
		if s := string(c); slices.Contains(KnownCapabilities, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if slices.Contains(out, CapCompletion) {
		out = append(out, CapJSON)
	}
	if out == nil {
		out = []string{CapCompletion, CapJSON} // an Ollama too old to say
	}
	slices.Sort(out)
	return out
}

// chatMessages is req's messages as Ollama's.
func chatMessages(req Request) []api.Message {
	msgs := make([]api.Message, len(req.Messages))
	for i, m := range req.Messages {
		am := api.Message{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID, ToolName: m.ToolName}
		for _, img := range m.Images {
			am.Images = append(am.Images, api.ImageData(img))
		}
		for _, tc := range m.ToolCalls {
			args := api.NewToolCallFunctionArguments()
			if tc.Arguments != "" {
				_ = args.UnmarshalJSON([]byte(tc.Arguments)) // checked by the API layer; a bad one goes as {}
			}
			am.ToolCalls = append(am.ToolCalls, api.ToolCall{ID: tc.ID, Function: api.ToolCallFunction{Index: tc.Index, Name: tc.Name, Arguments: args}})
		}
		msgs[i] = am
	}
	return msgs
}

// ollamaTools is req's tools as Ollama's, narrowed by its tool choice:
// none for "none", the one named function for a name.
func ollamaTools(req Request) (api.Tools, error) {
	if len(req.Tools) == 0 || req.ToolChoice == "none" {
		return nil, nil
	}
	var tools api.Tools
	if err := json.Unmarshal(req.Tools, &tools); err != nil {
		return nil, fmt.Errorf("%w: tools: %v", ErrInvalidRequest, err)
	}
	switch req.ToolChoice {
	case "", "auto", "required":
	default:
		tools = slices.DeleteFunc(tools, func(t api.Tool) bool { return t.Function.Name != req.ToolChoice })
		if len(tools) == 0 {
			return nil, fmt.Errorf("%w: tool_choice names %q, which is not among the tools", ErrInvalidRequest, req.ToolChoice)
		}
	}
	return tools, nil
}

// fromOllamaToolCalls turns Ollama's tool calls into mwpeer's, numbered
// from first (Ollama numbers each message's calls from 0).
func fromOllamaToolCalls(tcs []api.ToolCall, first int) []ToolCall {
	out := make([]ToolCall, len(tcs))
	for i, tc := range tcs {
		id := tc.ID
		if id == "" {
			id = fmt.Sprintf("call_%d", first+i)
		}
		out[i] = ToolCall{Index: first + i, ID: id, Name: tc.Function.Name, Arguments: tc.Function.Arguments.String()}
	}
	return out
}

// embed runs an embedding request: one chunk per input, in order.
func (o *Ollama) embed(ctx context.Context, req Request, emit func(Chunk) error, f *Final) error {
	resp, err := o.client.Embed(ctx, &api.EmbedRequest{Model: req.Model, Input: req.Input, KeepAlive: o.keepAlive})
	if err != nil {
		return err
	}
	if len(resp.Embeddings) != len(req.Input) {
		return fmt.Errorf("%d embeddings for %d inputs", len(resp.Embeddings), len(req.Input))
	}
	for _, e := range resp.Embeddings {
		if err := emit(Chunk{Embedding: e}); err != nil {
			return err
		}
	}
	f.FinishReason = FinishStop
	f.PromptTokens = resp.PromptEvalCount
	return nil
}
