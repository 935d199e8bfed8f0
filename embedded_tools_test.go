package mwpeer

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/openai/openai-go"
	"github.com/openai/openai-go/shared"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// TestEmbeddedToolCallThroughPeers: peer A's embedded engine serves a
// Qwen3 model whose chat template takes tools; peer B, which serves
// nothing, announces it with the tools capability and is asked through the
// official OpenAI SDK. With tool_choice naming get_weather, the answer is a
// tool call parsed from the engine's output: the engine writes the call's
// frame, the random-weight model writes the arguments under the function's
// parameter schema, so they hold the required city; streamed with
// tool_choice "required", the call is one of the offered functions. After
// the tool's result comes back as a tool message, the conversation goes on
// (the template renders the call and the result).
func TestEmbeddedToolCallThroughPeers(t *testing.T) {
	c := randmodel.TinyQwen3()
	c.Name = "mwpeer-tiny-qwen3-tools"
	c.BPE = randmodel.Qwen3ToolsBPE()
	c.ContextLength = 2048
	path := filepath.Join(t.TempDir(), "qwen3-tools.gguf")
	if err := randmodel.WriteFile(path, c); err != nil {
		t.Fatal(err)
	}
	peers := startSwarm(t, 2, func(i int, cfg *Config) {
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.Models = nil
		if i == 0 {
			cfg.Engine, cfg.ModelFile = EngineEmbedded, path
		} else {
			cfg.Engine = EngineNone
		}
	})
	wait.For(t, slow(15*time.Second), "peer B learns of the model and that it calls tools", func() error {
		for _, m := range peers[1].Router().Models() {
			if m.ID == c.Name && slices.Contains(m.Capabilities, "tools") {
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := sdk(peers[1])
	tools := []openai.ChatCompletionToolParam{
		{Function: shared.FunctionDefinitionParam{
			Name: "get_weather", Description: openai.String("Current weather in a city"),
			Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
		}},
		{Function: shared.FunctionDefinitionParam{
			Name: "get_time", Description: openai.String("Local time in a city"),
			Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
		}},
	}
	msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Bergen?")}
	got, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: c.Name, Messages: msgs, Tools: tools, MaxTokens: openai.Int(48), Seed: openai.Int(3),
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfChatCompletionNamedToolChoice: &openai.ChatCompletionNamedToolChoiceParam{
			Function: openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_weather"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ch := got.Choices[0]
	if ch.FinishReason != "tool_calls" || len(ch.Message.ToolCalls) != 1 || ch.Message.Content != "" {
		t.Fatalf("answer %+v, want one tool call and no text", ch)
	}
	call := ch.Message.ToolCalls[0]
	var args map[string]any
	if err := json.Unmarshal([]byte(call.Function.Arguments), &args); err != nil {
		t.Fatalf("arguments %q: %v", call.Function.Arguments, err)
	}
	if _, ok := args["city"].(string); call.Function.Name != "get_weather" || !ok || call.ID == "" {
		t.Fatalf("call %+v, want get_weather with a city", call)
	}
	t.Logf("the engine called %s(%s)", call.Function.Name, call.Function.Arguments)

	// Streamed, with tool_choice "required": the model writes the whole
	// call, its name one of the offered functions.
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: c.Name, Messages: msgs, Tools: tools, MaxTokens: openai.Int(48), Seed: openai.Int(5),
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")},
	})
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if tc := acc.Choices[0].Message.ToolCalls; len(tc) != 1 || !json.Valid([]byte(tc[0].Function.Arguments)) ||
		(tc[0].Function.Name != "get_weather" && tc[0].Function.Name != "get_time") || acc.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("streamed %+v", acc.Choices[0])
	} else {
		t.Logf("streamed: the engine called %s(%s)", tc[0].Function.Name, tc[0].Function.Arguments)
	}

	msgs = append(msgs, ch.Message.ToParam(), openai.ToolMessage("rain, 9 C", call.ID))
	next, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: c.Name, Messages: msgs, Tools: tools, MaxTokens: openai.Int(8), Temperature: openai.Float(0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := next.Choices[0].FinishReason; r != "stop" && r != "length" && r != "tool_calls" {
		t.Errorf("after the tool's result: finish reason %q", r)
	}
	if next.Usage.PromptTokens <= got.Usage.PromptTokens {
		t.Errorf("the prompt with the call and its result has %d tokens, no more than the first (%d)", next.Usage.PromptTokens, got.Usage.PromptTokens)
	}
}
