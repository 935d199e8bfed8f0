package mwpeer

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ollama "github.com/ollama/ollama/api"
	"github.com/openai/openai-go"
	"github.com/openai/openai-go/shared"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
)

// toolTemplate renders the tools and the turns of an agent loop, as the
// chat templates of tool-calling models do (Ollama reports a model whose
// template uses .Tools as able to call tools).
const toolTemplate = `{{- if .Tools }}[TOOLS]{{ range .Tools }}{{ .Function.Name }}: {{ .Function.Description }}; {{ end }}[/TOOLS]
{{ end }}{{- range .Messages }}{{ .Role }}: {{ .Content }}{{ range .ToolCalls }}[CALL {{ .Function.Name }} {{ .Function.Arguments }}]{{ end }}
{{ end }}assistant:`

// recorder is a reverse proxy in front of Ollama that keeps the body of
// every /api/chat request: what Ollama receives.
type recorder struct {
	mu    sync.Mutex
	chats [][]byte
}

func (rc *recorder) last() []byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.chats) == 0 {
		return nil
	}
	return rc.chats[len(rc.chats)-1]
}

func startRecorder(t *testing.T, target string) (*recorder, string) {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rc := &recorder{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.FlushInterval = -1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/chat" {
			body, _ := io.ReadAll(r.Body)
			rc.mu.Lock()
			rc.chats = append(rc.chats, body)
			rc.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return rc, srv.URL
}

// TestToolsAndJSONWithARealOllama: a real Ollama serves the tiny model
// twice, with a template that renders tools and with the default one. Peer
// B, which serves nothing, is asked through the OpenAI SDK. The tools, the
// assistant's earlier call and the tool result reach Ollama in its own
// shape and its template renders them; the model without tools in its
// template is announced without the capability and refused with a 400
// naming tools; JSON mode answers parse and a schema's answers validate;
// stop is never leaked.
func TestToolsAndJSONWithARealOllama(t *testing.T) {
	srv := ollamatest.Start(t) // skips without MWPEER_OLLAMA
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := randmodel.WriteFile(path, randmodel.Tiny()); err != nil {
		t.Fatal(err)
	}
	srv.CreateWithTemplate(t, "tooly", path, toolTemplate)
	srv.CreateModel(t, "plain", path)
	rec, proxied := startRecorder(t, srv.URL)
	peers := startSwarm(t, 2, func(i int, c *Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.Models = nil
		if i == 0 {
			c.Engine, c.Ollama = EngineOllama, proxied
		} else {
			c.Engine = EngineNone
		}
	})
	waitModel(t, peers[1], "tooly:latest")
	waitModel(t, peers[1], "plain:latest")
	for _, m := range peers[1].Router().Models() {
		want := map[string][]string{"tooly:latest": {"completion", "json", "tools"}, "plain:latest": {"completion", "json"}}[m.ID]
		if !slices.Equal(m.Capabilities, want) {
			t.Fatalf("%s: announced capabilities %v, want %v (Ollama's /api/show and json)", m.ID, m.Capabilities, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := sdk(peers[1])

	tools := []openai.ChatCompletionToolParam{{Function: shared.FunctionDefinitionParam{
		Name: "get_weather", Description: openai.String("Current weather in a city"),
		Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
	}}}
	msgs := []openai.ChatCompletionMessageParamUnion{
		openai.UserMessage("Weather in Bergen?"),
		{OfAssistant: &openai.ChatCompletionAssistantMessageParam{ToolCalls: []openai.ChatCompletionMessageToolCallParam{{
			ID: "call_0", Function: openai.ChatCompletionMessageToolCallFunctionParam{Name: "get_weather", Arguments: `{"city":"Bergen"}`}}}}},
		openai.ToolMessage("rain, 9 C", "call_0"),
	}
	c, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "tooly:latest", Messages: msgs, Tools: tools,
		MaxTokens: openai.Int(8), Temperature: openai.Float(0)})
	if err != nil {
		t.Fatal(err)
	}
	if fr := c.Choices[0].FinishReason; fr != "stop" && fr != "length" && fr != "tool_calls" {
		t.Fatalf("finish_reason %q", fr)
	}
	var got ollama.ChatRequest
	if err := json.Unmarshal(rec.last(), &got); err != nil {
		t.Fatalf("what Ollama received: %v\n%s", err, rec.last())
	}
	if len(got.Tools) != 1 || got.Tools[0].Function.Name != "get_weather" || got.Tools[0].Function.Parameters.Required[0] != "city" {
		t.Fatalf("Ollama received tools %s", got.Tools)
	}
	if m := got.Messages; len(m) != 3 || len(m[1].ToolCalls) != 1 || m[1].ToolCalls[0].Function.Name != "get_weather" ||
		m[1].ToolCalls[0].Function.Arguments.String() != `{"city":"Bergen"}` || m[2].Role != "tool" || m[2].ToolName != "get_weather" ||
		m[2].ToolCallID != "call_0" || m[2].Content != "rain, 9 C" {
		t.Fatalf("Ollama received messages %+v", m)
	}
	// What the model sees: Ollama renders that request with the template.
	got.DebugRenderOnly, got.Stream = true, new(bool)
	var rendered string
	if err := srv.Client().Chat(ctx, &got, func(r ollama.ChatResponse) error {
		if r.DebugInfo != nil {
			rendered = r.DebugInfo.RenderedTemplate
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[TOOLS]get_weather: Current weather in a city;", `[CALL get_weather {"city":"Bergen"}]`, "tool: rain, 9 C"} {
		if !strings.Contains(rendered, want) {
			t.Fatalf("the rendered prompt lacks %q:\n%s", want, rendered)
		}
	}
	t.Logf("Ollama rendered:\n%s", rendered)

	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "plain:latest", Messages: msgs, Tools: tools})
	apiError(t, err, 400, "tools")

	// JSON mode: Ollama's grammar. A schema of enums leaves the random
	// model nothing to ramble in, so its answer is whole and validates.
	schema := map[string]any{"type": "object", "properties": map[string]any{
		"pet": map[string]any{"type": "string", "enum": []string{"cat", "dog"}}, "ok": map[string]any{"type": "boolean"},
	}, "required": []string{"pet", "ok"}}
	c, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "plain:latest", MaxTokens: openai.Int(64), Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("A pet")},
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "pet", Schema: schema}}}})
	if err != nil {
		t.Fatal(err)
	}
	var pet struct {
		Pet *string `json:"pet"`
		OK  *bool   `json:"ok"`
	}
	text := c.Choices[0].Message.Content
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pet); err != nil || pet.Pet == nil || pet.OK == nil || (*pet.Pet != "cat" && *pet.Pet != "dog") {
		t.Fatalf("json_schema on Ollama: %q does not validate: %v", text, err)
	}
	t.Logf("json_schema on Ollama: %s", text)
	c, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "plain:latest", MaxTokens: openai.Int(200), Temperature: openai.Float(0),
		Messages:       []openai.ChatCompletionMessageParamUnion{openai.UserMessage("JSON")},
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}}})
	if err != nil {
		t.Fatal(err)
	}
	text = c.Choices[0].Message.Content
	var obj map[string]any
	if err := json.Unmarshal([]byte(text), &obj); err != nil {
		if c.Choices[0].FinishReason != "length" {
			t.Fatalf("json_object on Ollama: %q (%s) does not parse: %v", text, c.Choices[0].FinishReason, err)
		}
		t.Logf("json_object on Ollama: the random model rambled past max_tokens (Ollama does not close the text): %q", text)
	} else {
		t.Logf("json_object on Ollama: %s", text)
	}
	if f := string(bytes.TrimSpace(jsonField(rec.last(), "format"))); f != `"json"` {
		t.Fatalf("Ollama received format %s, want \"json\"", f)
	}

	// Stop: Ollama's own answer, cut before a stop sequence taken from it.
	plain, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "plain:latest", MaxTokens: openai.Int(24), Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")}})
	if err != nil {
		t.Fatal(err)
	}
	full := plain.Choices[0].Message.Content
	if len(full) < 6 {
		t.Skipf("Ollama answered %q: too short to take a stop sequence from", full)
	}
	stop := full[len(full)/2 : len(full)/2+2]
	want := full[:strings.Index(full, stop)]
	params := openai.ChatCompletionNewParams{Model: "plain:latest", MaxTokens: openai.Int(24), Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
		Stop:     openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{stop}}}
	s, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Choices[0].Message.Content; got != want || s.Choices[0].FinishReason != "stop" {
		t.Fatalf("stop %q: %q (%s), want %q", stop, got, s.Choices[0].FinishReason, want)
	}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var sb strings.Builder
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) > 0 {
			sb.WriteString(ch.Choices[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil || sb.String() != want {
		t.Fatalf("stop %q streamed: %q (%v), want %q", stop, sb.String(), err, want)
	}
}

func jsonField(body []byte, field string) json.RawMessage {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(body, &m)
	return m[field]
}
