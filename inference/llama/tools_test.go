package llama

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/model/parsers"
)

// weatherTools are two functions in OpenAI's shape, their keys in the order
// Ollama's api.Tool writes them (Ollama re-encodes tools; the engine keeps
// the request's order, as Hugging Face's tojson does).
const weatherTools = `[{"type":"function","function":{"name":"get_weather","description":"Current weather in a city","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"The city"},"unit":{"type":"string","enum":["c","f"]}}}}},` +
	`{"type":"function","function":{"name":"get_time","description":"Local time in a city","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string"}}}}}]`

// toolChat is a conversation through a tool call and its result.
var toolChat = []inference.Message{
	{Role: "system", Content: "You are terse."},
	{Role: "user", Content: "Weather in Paris and the time in Rome?"},
	{Role: "assistant", ToolCalls: []inference.ToolCall{
		{Index: 0, ID: "call_0", Name: "get_weather", Arguments: `{"city":"Paris","unit":"c"}`},
		{Index: 1, ID: "call_1", Name: "get_time", Arguments: `{"city":"Rome"}`},
	}},
	{Role: "tool", Content: `{"temp": 21}`, ToolCallID: "call_0", ToolName: "get_weather"},
	{Role: "tool", Content: "14:05", ToolCallID: "call_1", ToolName: "get_time"},
}

func qwenToolsConfig() randmodel.Config {
	c := randmodel.TinyDense()
	c.Name = "mwpeer-tiny-qwen3-tools"
	c.BPE = randmodel.Qwen3ToolsBPE()
	c.ContextLength = 2048 // the tools' descriptions take some 700 byte-level tokens
	return c
}

func TestToolTemplateRendersToolsAndCalls(t *testing.T) {
	m := load(t, qwenToolsConfig())
	if !m.Vocab.CallsTools() {
		t.Fatal("Qwen3's template does not count as calling tools")
	}
	got, err := m.Vocab.RenderChatTools(toolChat, json.RawMessage(weatherTools), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"<|im_start|>system\nYou are terse.\n\n# Tools\n",
		"<tools>\n" + `{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string", "description": "The city"}, "unit": {"type": "string", "enum": ["c", "f"]}}}}}` + "\n",
		"<|im_start|>assistant\n<tool_call>\n" + `{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}` + "\n</tool_call>\n<tool_call>\n" + `{"name": "get_time", "arguments": {"city": "Rome"}}` + "\n</tool_call><|im_end|>\n",
		"<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response>\n<tool_response>\n14:05\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rendered\n%s\nlacks\n%s", got, want)
		}
	}
	if m2 := load(t, qwenConfig()); m2.Vocab.CallsTools() {
		t.Error("plain ChatML counts as calling tools")
	}
}

// TestToolsRenderLikeOllama: with tools, tool calls and tool results, the
// engine renders Qwen3's Jinja template exactly as Ollama renders the same
// chat with its Qwen3 renderer (qwen3-vl-instruct: Ollama maps a GGUF's
// Jinja template only to Go templates without tools, so a Qwen GGUF gets
// tools in Ollama through the renderer its own Qwen3 models use).
func TestToolsRenderLikeOllama(t *testing.T) {
	srv := ollamatest.Start(t)
	path := filepath.Join(t.TempDir(), "tools.gguf")
	if err := randmodel.WriteFile(path, qwenToolsConfig()); err != nil {
		t.Fatal(err)
	}
	const model = "tools-qwen3"
	srv.CreateWithRenderer(t, model, path, "qwen3-vl-instruct", "qwen3-vl-instruct")
	b, err := NewBackend(path, BackendOptions{Name: model})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(b.info.Capabilities, inference.CapTools) {
		t.Errorf("capabilities %v lack tools", b.info.Capabilities)
	}
	show, err := srv.Client().Show(context.Background(), &api.ShowRequest{Model: model})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(show.Capabilities, "tools") {
		t.Errorf("ollama's capabilities %v lack tools", show.Capabilities)
	}
	for _, tc := range []struct {
		name  string
		msgs  []inference.Message
		tools string
	}{
		{"tools", toolChat[:2], weatherTools},
		{"calls and results", toolChat, weatherTools},
		{"no system", toolChat[1:], weatherTools},
		{"no tools", chatMessages, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := inference.Request{Messages: tc.msgs, Tools: json.RawMessage(tc.tools)}
			got, err := b.Prompt(req)
			if err != nil {
				t.Fatal(err)
			}
			if want := ollamaRenderTools(t, srv.Client(), model, tc.msgs, tc.tools); got != want {
				t.Errorf("rendered\n%q\nollama\n%q", got, want)
			}
		})
	}
}

// ollamaRenderTools returns what Ollama renders for a chat with tools.
func ollamaRenderTools(t *testing.T, client *api.Client, model string, msgs []inference.Message, tools string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := false
	req := &api.ChatRequest{Model: model, Stream: &stream, DebugRenderOnly: true}
	if tools != "" {
		if err := json.Unmarshal([]byte(tools), &req.Tools); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range msgs {
		am := api.Message{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID, ToolName: m.ToolName}
		for _, tc := range m.ToolCalls {
			args := api.NewToolCallFunctionArguments()
			if err := args.UnmarshalJSON([]byte(tc.Arguments)); err != nil {
				t.Fatal(err)
			}
			am.ToolCalls = append(am.ToolCalls, api.ToolCall{ID: tc.ID, Function: api.ToolCallFunction{Index: tc.Index, Name: tc.Name, Arguments: args}})
		}
		req.Messages = append(req.Messages, am)
	}
	var out string
	err := client.Chat(ctx, req, func(r api.ChatResponse) error {
		if r.DebugInfo != nil {
			out = r.DebugInfo.RenderedTemplate
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ollama chat %s: %v", model, err)
	}
	return out
}

func TestToolParser(t *testing.T) {
	call := func(i int, name, args string) inference.ToolCall {
		return inference.ToolCall{Index: i, ID: "call_" + string(rune('0'+i)), Name: name, Arguments: args}
	}
	for _, tc := range []struct {
		name    string
		pieces  []string
		content string
		calls   []inference.ToolCall
	}{
		{"plain text", []string{"Hello", " there", "\n"}, "Hello there\n", nil},
		{"one call", []string{"<tool", "_call>\n{\"name\": \"get_time\", ", "\"arguments\": {\"city\": \"Rome\"}}\n</tool_", "call>"},
			"", []inference.ToolCall{call(0, "get_time", `{"city":"Rome"}`)}},
		{"text then two calls", []string{"Let me look. <tool_call>", `{"name":"a","arguments":{}}`, "</tool_call>\n\n<tool_call>", `{"name":"b","arguments":"{\"x\": 1}"}</tool_call>`},
			"Let me look.", []inference.ToolCall{call(0, "a", `{}`), call(1, "b", `{"x":1}`)}},
		{"not a call", []string{"<tool_call>no json</tool_call> after"}, "<tool_call>no json</tool_call>after", nil},
		{"unclosed call", []string{"<tool_call>{\"name\": \"a\""}, `<tool_call>{"name": "a"`, nil},
		{"a tag that never came", []string{"x <tool"}, "x <tool", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p toolParser
			var content strings.Builder
			var calls []inference.ToolCall
			for _, s := range tc.pieces {
				c, cs := p.add(s)
				content.WriteString(c)
				calls = append(calls, cs...)
			}
			content.WriteString(p.finish())
			if content.String() != tc.content || !reflect.DeepEqual(calls, tc.calls) {
				t.Errorf("content %q, calls %+v; want %q, %+v", content.String(), calls, tc.content, tc.calls)
			}
		})
	}
}

// TestParserHoldsOnlyWhatMayStartACall: content streams as it comes,
// except the text that may begin <tool_call> and the whitespace before it.
func TestParserHoldsOnlyWhatMayStartACall(t *testing.T) {
	var p toolParser
	if c, _ := p.add("Sure, "); c != "Sure," {
		t.Errorf("streamed %q, want %q", c, "Sure,")
	}
	if c, _ := p.add("here <to"); c != " here" {
		t.Errorf("streamed %q, want %q", c, " here")
	}
	if c, _ := p.add("day>"); c != " <today>" {
		t.Errorf("streamed %q, want %q", c, " <today>")
	}
}

// TestForcedToolCall: with tool_choice naming a function, a random-weight
// model's answer is a call of that function whose arguments the model wrote
// under the function's parameter schema; with "required", a call of one of
// the offered functions. The answer finishes with tool_calls and has no text.
func TestForcedToolCall(t *testing.T) {
	b := NewModelBackend(load(t, qwenToolsConfig()), BackendOptions{Name: "m"})
	for _, choice := range []string{"get_weather", "required"} {
		t.Run(choice, func(t *testing.T) {
			var text strings.Builder
			var calls []inference.ToolCall
			seed := int64(7)
			f, err := b.Generate(context.Background(), inference.Request{Model: "m", Messages: toolChat[:2], Tools: json.RawMessage(weatherTools), ToolChoice: choice, MaxTokens: 64, Seed: &seed},
				func(c inference.Chunk) error {
					text.WriteString(c.Text)
					calls = append(calls, c.ToolCalls...)
					return nil
				})
			if err != nil {
				t.Fatal(err)
			}
			if f.FinishReason != inference.FinishToolCalls || text.Len() != 0 || len(calls) != 1 {
				t.Fatalf("finished %s with text %q and calls %+v, want one call and no text", f.FinishReason, text.String(), calls)
			}
			c := calls[0]
			if choice != "required" && c.Name != choice || !slices.Contains([]string{"get_weather", "get_time"}, c.Name) {
				t.Errorf("called %q", c.Name)
			}
			var args map[string]any
			if err := json.Unmarshal([]byte(c.Arguments), &args); err != nil {
				t.Fatalf("arguments %q: %v", c.Arguments, err)
			}
			if choice == "get_weather" {
				if _, ok := args["city"].(string); !ok {
					t.Errorf("arguments %s lack the required city", c.Arguments)
				}
				if u, ok := args["unit"]; ok && u != "c" && u != "f" {
					t.Errorf("unit %v is not in the enum", u)
				}
			}
			t.Logf("%s: %s(%s)", choice, c.Name, c.Arguments)
		})
	}
}

// TestToolsNeedATemplateThatCallsThem: a model whose template takes no
// tools refuses them as a model without the capability.
func TestToolsNeedATemplateThatCallsThem(t *testing.T) {
	b := NewModelBackend(load(t, qwenConfig()), BackendOptions{Name: "m"})
	_, err := b.Generate(context.Background(), inference.Request{Model: "m", Messages: chatMessages, Tools: json.RawMessage(weatherTools)},
		func(inference.Chunk) error { return nil })
	var ue *inference.UnsupportedError
	if !errors.As(err, &ue) || ue.Capability != inference.CapTools {
		t.Errorf("err %v, want an UnsupportedError for tools", err)
	}
}

// TestToolParserAgreesWithOllama: on well-formed output, pieces of text
// fed as a model streams them, the engine's parser gives the content and
// calls of Ollama's own parser for Qwen3 (qwen3-vl-instruct): the same
// content once whitespace at the end is set aside (Ollama holds trailing
// whitespace back until more text comes, and drops it at the end), the
// same names and arguments.
func TestToolParserAgreesWithOllama(t *testing.T) {
	for _, pieces := range [][]string{
		{"Hello", " there", "."},
		{"<tool", "_call>\n{\"name\": \"get_time\", ", "\"arguments\": {\"city\": \"Rome\"}}\n</tool_", "call>"},
		{"Let me look. <tool_call>", `{"name": "a", "arguments": {"x": [1, 2.5, "s"], "y": {"z": null}}}`, "</tool_call>\n\n<tool_call>", `{"name":"b","arguments":{}}</tool_call>`},
		{"Text\n\n", "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"q\": \"<b> & </b>\"}}\n</tool_call>", "\nafter"},
		{"a <toolbox> b", " c"},
	} {
		var p toolParser
		var content strings.Builder
		var calls []inference.ToolCall
		for _, s := range pieces {
			c, cs := p.add(s)
			content.WriteString(c)
			calls = append(calls, cs...)
		}
		content.WriteString(p.finish())

		op := parsers.ParserForName("qwen3-vl-instruct")
		op.Init(nil, nil, nil)
		var ocontent strings.Builder
		var ocalls []api.ToolCall
		for i, s := range pieces {
			c, _, cs, err := op.Add(s, i == len(pieces)-1)
			if err != nil {
				t.Fatal(err)
			}
			ocontent.WriteString(c)
			ocalls = append(ocalls, cs...)
		}
		if strings.TrimRightFunc(content.String(), unicode.IsSpace) != ocontent.String() || len(calls) != len(ocalls) {
			t.Errorf("%q: content %q, calls %+v; ollama %q, %d calls", pieces, content.String(), calls, ocontent.String(), len(ocalls))
			continue
		}
		for i, oc := range ocalls {
			var got, want any
			if err := json.Unmarshal([]byte(calls[i].Arguments), &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(oc.Function.Arguments.String()), &want); err != nil {
				t.Fatal(err)
			}
			if calls[i].Name != oc.Function.Name || !reflect.DeepEqual(got, want) {
				t.Errorf("%q: call %d %s(%s), ollama %s(%s)", pieces, i, calls[i].Name, calls[i].Arguments, oc.Function.Name, oc.Function.Arguments.String())
			}
		}
	}
}
