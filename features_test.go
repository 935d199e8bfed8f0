package mwpeer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ollama "github.com/ollama/ollama/api"
	"github.com/openai/openai-go"
	"github.com/openai/openai-go/responses"
	"github.com/openai/openai-go/shared"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// These tests ask real peers, through the official OpenAI SDK, for what
// clients use beyond plain text: tools, JSON output, stop sequences,
// embeddings, the Responses API, and honest names and statuses.

func apiError(t *testing.T, err error, status int, param string) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("%v, want an API error %d", err, status)
	}
	if e.StatusCode != status || (param != "" && e.Param != param) {
		t.Fatalf("%d param %q: %s; want %d naming %q", e.StatusCode, e.Param, e.Message, status, param)
	}
	return e
}

func waitModel(t *testing.T, p *Peer, model string) {
	t.Helper()
	wait.For(t, slow(15*time.Second), "the peer learns of "+model, func() error {
		for _, m := range p.Router().Models() {
			if m.ID == model {
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
}

// TestAutoNamesTheRealModelAndNothingServingIs404: "auto" answers name the
// model that answered; a model nobody serves is a 404 model_not_found; a
// swarm serving nothing says so with a 404 that says what to do, not a 503
// that clients retry.
func TestAutoNamesTheRealModelAndNothingServingIs404(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}, {}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := sdk(peers[1])
	hi := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}
	c, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "auto", Messages: hi})
	if err != nil || c.Model != "syn-a" {
		t.Fatalf("%v: model %q, want syn-a", err, c.Model)
	}
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "auto", Messages: hi})
	for stream.Next() {
		if m := stream.Current().Model; m != "syn-a" {
			t.Fatalf("a chunk names %q", m)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "nowhere", Messages: hi})
	apiError(t, err, 404, "model")

	empty := apiSwarm(t, [][]string{{}, {}}, nil)
	emptyClient := sdk(empty[0])
	_, err = emptyClient.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "auto", Messages: hi})
	e := apiError(t, err, 404, "model")
	if e.Code != "model_not_found" || !strings.Contains(e.Message, "--engine") || !strings.Contains(e.Message, "--bootstrap") {
		t.Fatalf("nothing served: %s %q, want a message that says what to do", e.Code, e.Message)
	}
}

// TestStopNeverLeaksThroughTheSwarm: the synthetic engine's answer is cut
// before a stop sequence that ends inside one of its words, and no part of
// it reaches the client, streaming or not; the engine stops generating.
func TestStopNeverLeaksThroughTheSwarm(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}, {}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := syntheticAnswer(t, "syn-a", 12, inference.Request{Messages: []inference.Message{{Role: "user", Content: "hi"}}})
	words := strings.Fields(full)
	w := words[4]
	stop := w[1:] + " " + words[5][:1] // from inside word 4 into word 5
	at := strings.Index(full, stop)
	want := full[:at]
	client := sdk(peers[1])
	params := openai.ChatCompletionNewParams{Model: "syn-a", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		Stop: openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{stop, "never-said"}}}
	c, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Choices[0].Message.Content; got != want || c.Choices[0].FinishReason != "stop" {
		t.Fatalf("%q (%s), want %q: the answer %q cut before %q", got, c.Choices[0].FinishReason, want, full, stop)
	}
	if c.Usage.CompletionTokens >= 12 {
		t.Fatalf("%d tokens: the engine did not stop", c.Usage.CompletionTokens)
	}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var sb strings.Builder
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) > 0 {
			sb.WriteString(ch.Choices[0].Delta.Content)
			if strings.Contains(sb.String(), stop[:1]) && !strings.HasPrefix(want, sb.String()) {
				t.Fatalf("streamed %q: beyond %q", sb.String(), want)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if sb.String() != want {
		t.Fatalf("streamed %q, want %q", sb.String(), want)
	}
}

// TestWhatAModelCannotDoIs400NamingTheParam: tools, images and embeddings
// sent to a model whose engine cannot do them get a 400 that names the
// parameter, never a silent 200.
func TestWhatAModelCannotDoIs400NamingTheParam(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}, {}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := sdk(peers[1])
	hi := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}
	_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "syn-a", Messages: hi,
		Tools: []openai.ChatCompletionToolParam{{Function: shared.FunctionDefinitionParam{Name: "f"}}}})
	apiError(t, err, 400, "tools")
	img := openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
		openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "data:image/png;base64,iVBORw0KGgo="})})
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "syn-a", Messages: []openai.ChatCompletionMessageParamUnion{img}})
	apiError(t, err, 400, "messages")
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "syn-a", Messages: hi,
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}}})
	apiError(t, err, 400, "response_format")
	_, err = client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "syn-a", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
	apiError(t, err, 400, "input")
}

// TestJSONModeOnTheEmbeddedEngine: through the swarm, the built-in model
// (random weights) answers json_object with a JSON object and json_schema
// with JSON that validates.
func TestJSONModeOnTheEmbeddedEngine(t *testing.T) {
	peers := startSwarm(t, 2, func(i int, c *Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.Models = nil
		if i == 0 {
			c.Engine = EngineEmbedded
		} else {
			c.Engine = EngineNone
		}
	})
	waitModel(t, peers[1], BuiltinModel)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := sdk(peers[1])
	c, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: BuiltinModel, MaxTokens: openai.Int(40),
		Messages:       []openai.ChatCompletionMessageParamUnion{openai.UserMessage("A JSON object, please")},
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}}})
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(c.Choices[0].Message.Content), &obj); err != nil {
		t.Fatalf("json_object: %q does not parse as an object: %v", c.Choices[0].Message.Content, err)
	}
	schema := map[string]any{"type": "object", "properties": map[string]any{
		"name": map[string]any{"type": "string"}, "age": map[string]any{"type": "integer"},
		"pet": map[string]any{"enum": []string{"cat", "dog"}}, "tags": map[string]any{"type": "array", "items": map[string]any{"type": "boolean"}},
	}, "required": []string{"name", "age", "pet"}, "additionalProperties": false}
	for _, temp := range []float64{0, 1} {
		c, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: BuiltinModel, MaxTokens: openai.Int(80), Temperature: openai.Float(temp),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("A person, please")},
			ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
				JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "person", Schema: schema, Strict: openai.Bool(true)}}}})
		if err != nil {
			t.Fatal(err)
		}
		text := c.Choices[0].Message.Content
		var p struct {
			Name *string `json:"name"`
			Age  *int    `json:"age"`
			Pet  *string `json:"pet"`
			Tags []bool  `json:"tags"`
		}
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil || p.Name == nil || p.Age == nil || p.Pet == nil || (*p.Pet != "cat" && *p.Pet != "dog") {
			t.Fatalf("temperature %v: %q does not validate: %v", temp, text, err)
		}
		t.Logf("temperature %v: %s", temp, text)
	}
	// A schema keyword the engine cannot enforce is a 400 naming response_format.
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: BuiltinModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "x", Schema: map[string]any{"anyOf": []any{map[string]any{"type": "string"}}}}}}})
	apiError(t, err, 400, "response_format")
}

// toolOllama is an Ollama-compatible server with a tools-and-vision chat
// model and an embedding model. Asked with tools, the chat model calls the
// first tool; it records every /api/chat request.
type toolOllama struct {
	*httptest.Server
	mu    sync.Mutex
	chats []ollama.ChatRequest
}

const (
	toolModel  = "toolchat:latest"
	embedModel = "embedder:latest"
)

func startToolOllama(t *testing.T) *toolOllama {
	o := &toolOllama{}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /api/tags", func(w http.ResponseWriter, r *http.Request) {
		reply(w, ollama.ListResponse{Models: []ollama.ListModelResponse{
			{Name: toolModel, Model: toolModel, Digest: strings.Repeat("a", 64), Size: 1 << 20},
			{Name: embedModel, Model: embedModel, Digest: strings.Repeat("b", 64), Size: 1 << 20},
		}})
	})
	mux.HandleFunc("POST /api/show", func(w http.ResponseWriter, r *http.Request) {
		var req ollama.ShowRequest
		json.NewDecoder(r.Body).Decode(&req)
		caps := []string{"completion", "tools", "vision"}
		if req.Model == embedModel {
			caps = []string{"embedding"}
		}
		reply(w, map[string]any{"capabilities": caps, "model_info": map[string]any{"general.architecture": "llama", "llama.context_length": 2048}})
	})
	mux.HandleFunc("POST /api/chat", func(w http.ResponseWriter, r *http.Request) {
		var req ollama.ChatRequest
		json.NewDecoder(r.Body).Decode(&req)
		o.mu.Lock()
		o.chats = append(o.chats, req)
		o.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		if len(req.Tools) > 0 {
			args := ollama.NewToolCallFunctionArguments()
			args.Set("city", "Oslo")
			enc.Encode(ollama.ChatResponse{Model: req.Model, Message: ollama.Message{Role: "assistant",
				ToolCalls: []ollama.ToolCall{{ID: "call_oslo", Function: ollama.ToolCallFunction{Name: req.Tools[0].Function.Name, Arguments: args}}}}})
		} else {
			enc.Encode(ollama.ChatResponse{Model: req.Model, Message: ollama.Message{Role: "assistant", Content: fmt.Sprintf("%d images", len(req.Messages[len(req.Messages)-1].Images))}})
		}
		enc.Encode(ollama.ChatResponse{Model: req.Model, Message: ollama.Message{Role: "assistant"}, Done: true, DoneReason: "stop",
			Metrics: ollama.Metrics{PromptEvalCount: 9, EvalCount: 4}})
	})
	mux.HandleFunc("POST /api/embed", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model string   `json:"model"`
			Input []string `json:"input"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		var out [][]float32
		for _, in := range req.Input {
			out = append(out, []float32{float32(len(in)), 0.5, -1})
		}
		reply(w, ollama.EmbedResponse{Model: req.Model, Embeddings: out, PromptEvalCount: len(req.Input)})
	})
	o.Server = httptest.NewServer(mux)
	t.Cleanup(o.Close)
	return o
}

func (o *toolOllama) lastChat() ollama.ChatRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.chats[len(o.chats)-1]
}

// TestToolsImagesAndEmbeddingsThroughTheSwarm: peer A runs the Ollama
// engine in front of a server whose models can call tools, see images and
// embed; peer B, which serves nothing, is asked. Tools, the tool result
// and images reach Ollama as Ollama takes them; the call comes back in
// OpenAI's shape, whole and streamed; embeddings go to the embedding model,
// also for "auto"; /v1/models lists the capabilities.
func TestToolsImagesAndEmbeddingsThroughTheSwarm(t *testing.T) {
	o := startToolOllama(t)
	peers := startSwarm(t, 2, func(i int, c *Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.Models = nil
		if i == 0 {
			c.Engine, c.Ollama = EngineOllama, o.URL
		} else {
			c.Engine = EngineNone
		}
	})
	waitModel(t, peers[1], toolModel)
	waitModel(t, peers[1], embedModel)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := sdk(peers[1])
	for _, m := range peers[1].Router().Models() {
		want := map[string][]string{toolModel: {"completion", "json", "tools", "vision"}, embedModel: {"embedding"}}[m.ID]
		if !slices.Equal(m.Capabilities, want) {
			t.Fatalf("%s: capabilities %v, want %v", m.ID, m.Capabilities, want)
		}
	}

	params := openai.ChatCompletionNewParams{
		Model: toolModel,
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.UserMessage("Weather in Bergen, then Oslo?"),
			{OfAssistant: &openai.ChatCompletionAssistantMessageParam{ToolCalls: []openai.ChatCompletionMessageToolCallParam{{
				ID: "call_0", Function: openai.ChatCompletionMessageToolCallFunctionParam{Name: "get_weather", Arguments: `{"city":"Bergen"}`}}}}},
			openai.ToolMessage("rain, 9 °C", "call_0"),
		},
		Tools: []openai.ChatCompletionToolParam{{Function: shared.FunctionDefinitionParam{
			Name: "get_weather", Description: openai.String("Current weather in a city"),
			Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
		}}},
	}
	c, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if ch := c.Choices[0]; ch.FinishReason != "tool_calls" || len(ch.Message.ToolCalls) != 1 || ch.Message.ToolCalls[0].Function.Name != "get_weather" ||
		ch.Message.ToolCalls[0].Function.Arguments != `{"city":"Oslo"}` || ch.Message.ToolCalls[0].ID != "call_oslo" {
		t.Fatalf("answer %+v", ch)
	}
	got := o.lastChat()
	if len(got.Tools) != 1 || got.Tools[0].Function.Name != "get_weather" || got.Tools[0].Function.Parameters.Required[0] != "city" {
		t.Fatalf("Ollama got tools %+v", got.Tools)
	}
	if m := got.Messages; len(m) != 3 || len(m[1].ToolCalls) != 1 || m[1].ToolCalls[0].Function.Arguments.String() != `{"city":"Bergen"}` ||
		m[2].Role != "tool" || m[2].ToolName != "get_weather" || m[2].ToolCallID != "call_0" || m[2].Content != "rain, 9 °C" {
		t.Fatalf("Ollama got messages %+v", m)
	}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if tc := acc.Choices[0].Message.ToolCalls; len(tc) != 1 || tc[0].Function.Arguments != `{"city":"Oslo"}` || acc.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("streamed %+v", acc.Choices[0])
	}

	img := openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{openai.TextContentPart("What is it?"),
		openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "data:image/png;base64,iVBORw0KGgo="})})
	c, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "auto", Messages: []openai.ChatCompletionMessageParamUnion{img}})
	if err != nil || c.Choices[0].Message.Content != "1 images" || c.Model != toolModel {
		t.Fatalf("image: %v %+v", err, c)
	}
	if im := o.lastChat().Messages[0].Images; len(im) != 1 || string(im[0][1:4]) != "PNG" {
		t.Fatalf("Ollama got images %q", im)
	}

	for _, model := range []string{embedModel, "auto"} {
		e, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: model,
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one", "three"}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(e.Data) != 2 || e.Data[1].Embedding[0] != 5 || e.Model != embedModel || e.Usage.PromptTokens != 2 {
			t.Fatalf("%s: %+v", model, e)
		}
	}
	// The embedding model does not chat; the chat model does not embed.
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: embedModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	apiError(t, err, 400, "model")
	_, err = client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: toolModel, Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
	apiError(t, err, 400, "input")
}

// TestResponsesAPIThroughTheSwarm: /v1/responses, whole and streamed, with
// instructions, usage and the model that answered.
func TestResponsesAPIThroughTheSwarm(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}, {}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := sdk(peers[1])
	want := syntheticAnswer(t, "syn-a", 12, inference.Request{Messages: []inference.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Say hello"}}})
	params := responses.ResponseNewParams{Model: "auto", Instructions: openai.String("Be brief."),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hello")}}
	r, err := client.Responses.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if r.OutputText() != want || r.Model != "syn-a" || r.Usage.OutputTokens != 12 || r.Status != "completed" {
		t.Fatalf("%q model %q usage %+v status %s; want %q", r.OutputText(), r.Model, r.Usage, r.Status, want)
	}
	stream := client.Responses.NewStreaming(ctx, params)
	var deltas strings.Builder
	var types []string
	var done responses.Response
	for stream.Next() {
		ev := stream.Current()
		if !slices.Contains(types, ev.Type) {
			types = append(types, ev.Type)
		}
		switch ev.Type {
		case "response.output_text.delta":
			deltas.WriteString(ev.Delta.OfString)
		case "response.completed":
			done = ev.Response
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	for _, ty := range []string{"response.created", "response.output_text.delta", "response.output_text.done", "response.completed"} {
		if !slices.Contains(types, ty) {
			t.Fatalf("no %s event: %v", ty, types)
		}
	}
	if deltas.String() != want || done.OutputText() != want || done.Usage.OutputTokens != 12 || done.Model != "syn-a" {
		t.Fatalf("streamed %q, completed %q (%+v)", deltas.String(), done.OutputText(), done.Usage)
	}
}
