package api_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go"
	"github.com/openai/openai-go/option"
	"github.com/openai/openai-go/responses"
	"github.com/openai/openai-go/shared"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/routing"
	"github.com/mwpeer/mwpeer/swarm"
)

// scriptSwarm answers with the chunks and final of its script, or its
// error, and records the queries it was asked.
type scriptSwarm struct {
	mu      sync.Mutex
	queries []swarm.Query
	chunks  []inference.Chunk
	final   inference.Final
	model   string // the model that answers (for "auto")
	err     error
}

func (f *scriptSwarm) Models() []swarm.Model { return []swarm.Model{{ID: "m"}} }

func (f *scriptSwarm) Route(context.Context, swarm.Query) (routing.Decision, error) {
	return routing.Decision{}, nil
}

func (f *scriptSwarm) Complete(ctx context.Context, q swarm.Query, emit func(string, inference.Chunk) error) (swarm.Answer, error) {
	f.mu.Lock()
	f.queries = append(f.queries, q)
	f.mu.Unlock()
	if f.err != nil {
		return swarm.Answer{}, f.err
	}
	model := q.Request.Model
	if f.model != "" {
		model = f.model
	}
	if q.Answering != nil {
		q.Answering("expert", model)
	}
	var sb strings.Builder
	for _, c := range f.chunks {
		sb.WriteString(c.Text)
		if err := emit("expert", c); err != nil {
			return swarm.Answer{}, err
		}
	}
	return swarm.Answer{Model: model, Text: sb.String(), Experts: []string{"expert"}, Final: f.final}, nil
}

func (f *scriptSwarm) last() swarm.Query {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[len(f.queries)-1]
}

func serveScript(t *testing.T, sw api.Swarm) (*httptest.Server, openai.Client) {
	t.Helper()
	srv := httptest.NewServer(api.NewServer(fakeNode{}, sw, nil))
	t.Cleanup(srv.Close)
	return srv, openai.NewClient(option.WithBaseURL(srv.URL+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

func textChunks(parts ...string) []inference.Chunk {
	out := make([]inference.Chunk, len(parts))
	for i, p := range parts {
		out[i] = inference.Chunk{Text: p}
	}
	return out
}

// TestStopIsNeverSent: whatever the engine sends and however its text is
// cut into chunks, the answer ends before the first stop sequence, no part
// of one is ever streamed, and finish_reason is "stop".
func TestStopIsNeverSent(t *testing.T) {
	const text = "Hello wonderful world! END and more"
	stops := []string{"world", "END"}
	want := "Hello wonderful "
	ctx := context.Background()
	for split := 1; split < len(text); split += 3 {
		for split2 := split + 1; split2 < len(text); split2 += 5 {
			sw := &scriptSwarm{chunks: textChunks(text[:split], text[split:split2], text[split2:]),
				final: inference.Final{FinishReason: inference.FinishStop, CompletionTokens: 3}}
			_, client := serveScript(t, sw)
			params := openai.ChatCompletionNewParams{Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
				Stop: openai.ChatCompletionNewParamsStopUnion{OfStringArray: stops}}
			c, err := client.Chat.Completions.New(ctx, params)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Choices[0].Message.Content; got != want || c.Choices[0].FinishReason != "stop" {
				t.Fatalf("chunks cut at %d, %d: %q (%s), want %q", split, split2, got, c.Choices[0].FinishReason, want)
			}
			stream := client.Chat.Completions.NewStreaming(ctx, params)
			var sb strings.Builder
			finish := ""
			for stream.Next() {
				ch := stream.Current()
				if len(ch.Choices) == 0 {
					continue
				}
				d := ch.Choices[0].Delta.Content
				for _, st := range stops {
					for k := 1; k <= len(st); k++ {
						if strings.HasSuffix(sb.String()+d, st[:k]) && !strings.HasSuffix(want, st[:k]) {
							t.Fatalf("chunks cut at %d, %d: %q streamed after %q: part of %q", split, split2, d, sb.String(), st)
						}
					}
				}
				sb.WriteString(d)
				if ch.Choices[0].FinishReason != "" {
					finish = ch.Choices[0].FinishReason
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if sb.String() != want || finish != "stop" {
				t.Fatalf("chunks cut at %d, %d: streamed %q (%s), want %q", split, split2, sb.String(), finish, want)
			}
			if got := sw.last().Request.Stop; len(got) != 2 {
				t.Fatalf("the engine was not told the stop sequences: %v", got)
			}
		}
	}
}

// TestToolCallsInOpenAIShape: tools, tool_choice and a tool result reach
// the swarm; the calls come back in OpenAI's shape, whole and streamed as
// deltas, with finish_reason "tool_calls".
func TestToolCallsInOpenAIShape(t *testing.T) {
	call := inference.ToolCall{Index: 0, ID: "call_1", Name: "get_weather", Arguments: `{"city":"Oslo"}`}
	sw := &scriptSwarm{chunks: []inference.Chunk{{ToolCalls: []inference.ToolCall{call}}},
		final: inference.Final{FinishReason: inference.FinishToolCalls, CompletionTokens: 5}}
	_, client := serveScript(t, sw)
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model: "m",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.UserMessage("Weather in Bergen, then Oslo?"),
			{OfAssistant: &openai.ChatCompletionAssistantMessageParam{ToolCalls: []openai.ChatCompletionMessageToolCallParam{{
				ID: "call_0", Function: openai.ChatCompletionMessageToolCallFunctionParam{Name: "get_weather", Arguments: `{"city":"Bergen"}`}}}}},
			openai.ToolMessage("rain, 9 °C", "call_0"),
		},
		Tools: []openai.ChatCompletionToolParam{{Function: shared.FunctionDefinitionParam{
			Name: "get_weather", Description: openai.String("Current weather"),
			Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
		}}},
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("auto")},
	}
	c, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	ch := c.Choices[0]
	if ch.FinishReason != "tool_calls" || len(ch.Message.ToolCalls) != 1 || ch.Message.ToolCalls[0].Function.Name != "get_weather" ||
		ch.Message.ToolCalls[0].Function.Arguments != call.Arguments || ch.Message.ToolCalls[0].ID != "call_1" {
		t.Fatalf("answer %+v", ch)
	}
	req := sw.last().Request
	var tools []map[string]any
	if err := json.Unmarshal(req.Tools, &tools); err != nil || len(tools) != 1 || req.ToolChoice != "auto" {
		t.Fatalf("the swarm got tools %s, tool_choice %q", req.Tools, req.ToolChoice)
	}
	if m := req.Messages; len(m) != 3 || len(m[1].ToolCalls) != 1 || m[1].ToolCalls[0].Arguments != `{"city":"Bergen"}` ||
		m[2].Role != "tool" || m[2].ToolCallID != "call_0" || m[2].ToolName != "get_weather" {
		t.Fatalf("the swarm got messages %+v", m)
	}

	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if tc := acc.Choices[0].Message.ToolCalls; len(tc) != 1 || tc[0].Function.Name != "get_weather" || tc[0].Function.Arguments != call.Arguments ||
		acc.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("streamed %+v", acc.Choices[0])
	}

	// A named function narrows the choice; a name not among the tools is a 400.
	params.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfChatCompletionNamedToolChoice: &openai.ChatCompletionNamedToolChoiceParam{
		Function: openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_weather"}}}
	if _, err := client.Chat.Completions.New(ctx, params); err != nil || sw.last().Request.ToolChoice != "get_weather" {
		t.Fatalf("named tool choice: %v, %q", err, sw.last().Request.ToolChoice)
	}
	params.ToolChoice.OfChatCompletionNamedToolChoice.Function.Name = "nope"
	expectError(t, func() error { _, err := client.Chat.Completions.New(ctx, params); return err }, 400, "tool_choice")
}

func expectError(t *testing.T, call func() error, status int, param string) *openai.Error {
	t.Helper()
	err := call()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("%v, want an API error %d", err, status)
	}
	if apiErr.StatusCode != status || apiErr.Param != param {
		t.Fatalf("%d param %q (%s), want %d naming %q", apiErr.StatusCode, apiErr.Param, apiErr.Message, status, param)
	}
	return apiErr
}

// TestHonestStatuses: what a model cannot do is a 400 naming the
// parameter, an unknown model a 404, busy a 503 with Retry-After, experts
// that failed a 502: only busy invites a retry.
func TestHonestStatuses(t *testing.T) {
	ctx := context.Background()
	hi := openai.ChatCompletionNewParams{Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	for _, c := range []struct {
		err    error
		status int
		param  string
	}{
		{&inference.UnsupportedError{Model: "m", Capability: inference.CapTools, Param: "tools", Engine: "synthetic"}, 400, "tools"},
		{fmt.Errorf("%w: %w", inference.ErrNoExpert, &inference.UnsupportedError{Model: "m", Capability: inference.CapVision, Param: "messages"}), 400, "messages"},
		{fmt.Errorf("model %q: no peer serves it: %w", "m", inference.ErrUnknownModel), 404, "model"},
		{errors.Join(inference.ErrNoExpert, fmt.Errorf("p: %w", inference.ErrBusy)), 503, ""},
		{errors.Join(inference.ErrNoExpert, errors.New("p: connection refused")), 502, ""},
	} {
		sw := &scriptSwarm{err: c.err}
		srv, client := serveScript(t, sw)
		e := expectError(t, func() error { _, err := client.Chat.Completions.New(ctx, hi); return err }, c.status, c.param)
		if ra := e.Response.Header.Get("Retry-After"); (c.status == 503) != (ra != "") {
			t.Fatalf("%d with Retry-After %q", c.status, ra)
		}
		_ = srv
	}
}

// TestAutoNamesTheModelThatAnswered: "auto" in, the real model out, in
// every chunk of a stream too.
func TestAutoNamesTheModelThatAnswered(t *testing.T) {
	sw := &scriptSwarm{chunks: textChunks("a", "b"), final: inference.Final{FinishReason: "stop"}, model: "real-model"}
	_, client := serveScript(t, sw)
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Model: "auto", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	c, err := client.Chat.Completions.New(ctx, params)
	if err != nil || c.Model != "real-model" {
		t.Fatalf("%v, model %q", err, c.Model)
	}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	for stream.Next() {
		if m := stream.Current().Model; m != "real-model" {
			t.Fatalf("chunk names %q", m)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestResponseFormatAndImagesReachTheSwarm: response_format becomes the
// engine's format; an image part becomes an image, and an image it cannot
// take is a 400 naming the message, not "invalid JSON".
func TestResponseFormatAndImagesReachTheSwarm(t *testing.T) {
	sw := &scriptSwarm{chunks: textChunks(`{}`), final: inference.Final{FinishReason: "stop"}}
	_, client := serveScript(t, sw)
	ctx := context.Background()
	msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}
	if _, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "m", Messages: msgs,
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}}}); err != nil {
		t.Fatal(err)
	}
	if f := string(sw.last().Request.Format); f != `"json"` {
		t.Fatalf("json_object became format %s", f)
	}
	if _, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "m", Messages: msgs,
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "x", Schema: map[string]any{"type": "object"}}}}}); err != nil {
		t.Fatal(err)
	}
	if f := string(sw.last().Request.Format); f != `{"type":"object"}` {
		t.Fatalf("json_schema became format %s", f)
	}

	png := "data:image/png;base64,iVBORw0KGgo="
	img := openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
		openai.TextContentPart("What is this?"), openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: png})})
	if _, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{img}}); err != nil {
		t.Fatal(err)
	}
	if m := sw.last().Request.Messages[0]; m.Content != "What is this?" || len(m.Images) != 1 || string(m.Images[0][1:4]) != "PNG" {
		t.Fatalf("message %q with %d images", m.Content, len(m.Images))
	}
	web := openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
		openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "https://example.com/cat.png"})})
	expectError(t, func() error {
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{web}})
		return err
	}, 400, "messages[0].content")
}

// TestEmbeddingsEndpoint: /v1/embeddings sends the inputs as one request
// and answers in OpenAI's shape, floats or base64.
func TestEmbeddingsEndpoint(t *testing.T) {
	sw := &scriptSwarm{chunks: []inference.Chunk{{Embedding: []float32{1, 0.5}}, {Embedding: []float32{-1, 2}}},
		final: inference.Final{FinishReason: "stop", PromptTokens: 4}, model: "embedder"}
	srv, client := serveScript(t, sw)
	ctx := context.Background()
	e, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "auto", EncodingFormat: openai.EmbeddingNewParamsEncodingFormatFloat,
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one", "two"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Data) != 2 || e.Data[1].Index != 1 || e.Data[1].Embedding[1] != 2 || e.Model != "embedder" || e.Usage.PromptTokens != 4 {
		t.Fatalf("%+v", e)
	}
	if in := sw.last().Request.Input; len(in) != 2 || in[0] != "one" {
		t.Fatalf("the swarm got input %q", in)
	}
	// base64: little-endian float32s, as OpenAI sends them.
	resp, err := http.Post(srv.URL+"/v1/embeddings", "application/json", strings.NewReader(`{"model":"m","input":["one","two"],"encoding_format":"base64"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || len(out.Data) == 0 {
		t.Fatalf("%v %+v", err, out)
	}
	if b, _ := base64.StdEncoding.DecodeString(out.Data[0].Embedding); len(b) != 8 || math.Float32frombits(binary.LittleEndian.Uint32(b[4:])) != 0.5 {
		t.Fatalf("base64 %q", out.Data[0].Embedding)
	}
}

// TestResponsesAPI: /v1/responses with input and instructions, whole and
// streamed, through the SDK.
func TestResponsesAPI(t *testing.T) {
	sw := &scriptSwarm{chunks: textChunks("Hel", "lo", "!"), final: inference.Final{FinishReason: "stop", PromptTokens: 3, CompletionTokens: 3}, model: "real"}
	srv, client := serveScript(t, sw)
	ctx := context.Background()
	params := responses.ResponseNewParams{Model: "auto", Instructions: openai.String("Be brief."),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hello")}}
	r, err := client.Responses.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if r.OutputText() != "Hello!" || r.Model != "real" || r.Usage.OutputTokens != 3 || r.Usage.TotalTokens != 6 || r.Status != "completed" {
		t.Fatalf("response %q model %q usage %+v status %s", r.OutputText(), r.Model, r.Usage, r.Status)
	}
	if m := sw.last().Request.Messages; len(m) != 2 || m[0].Role != "system" || m[0].Content != "Be brief." || m[1].Content != "Say hello" {
		t.Fatalf("messages %+v", m)
	}
	stream := client.Responses.NewStreaming(ctx, params)
	var deltas strings.Builder
	var types []string
	var done responses.Response
	for stream.Next() {
		ev := stream.Current()
		types = append(types, ev.Type)
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
	if deltas.String() != "Hello!" || done.OutputText() != "Hello!" || done.Usage.OutputTokens != 3 || types[0] != "response.created" {
		t.Fatalf("streamed %q, completed %q, events %v", deltas.String(), done.OutputText(), types)
	}

	// Function tools: a call comes back as a function_call item, whole and
	// streamed, and the next turn carries the call and its output.
	sw.chunks = []inference.Chunk{{ToolCalls: []inference.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city":"Oslo"}`}}}}
	sw.final = inference.Final{FinishReason: inference.FinishToolCalls}
	tp := responses.ResponseNewParams{Model: "m",
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			responses.ResponseInputItemParamOfMessage("Weather in Bergen, then Oslo?", responses.EasyInputMessageRoleUser),
			responses.ResponseInputItemParamOfFunctionCall(`{"city":"Bergen"}`, "call_0", "get_weather"),
			responses.ResponseInputItemParamOfFunctionCallOutput("call_0", "rain"),
		}},
		Tools: []responses.ToolUnionParam{responses.ToolParamOfFunction("get_weather", map[string]any{"type": "object",
			"properties": map[string]any{"city": map[string]any{"type": "string"}}}, true)},
	}
	r, err = client.Responses.New(ctx, tp)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Output) != 1 || r.Output[0].Type != "function_call" || r.Output[0].Name != "get_weather" || r.Output[0].Arguments != `{"city":"Oslo"}` || r.Output[0].CallID != "call_1" {
		t.Fatalf("output %+v", r.Output)
	}
	req := sw.last().Request
	if m := req.Messages; len(m) != 3 || len(m[1].ToolCalls) != 1 || m[1].ToolCalls[0].ID != "call_0" || m[2].Role != "tool" || m[2].ToolName != "get_weather" || m[2].Content != "rain" {
		t.Fatalf("messages %+v", m)
	}
	if !strings.Contains(string(req.Tools), `"function":{"name":"get_weather"`) {
		t.Fatalf("tools %s", req.Tools)
	}
	ts := client.Responses.NewStreaming(ctx, tp)
	var call responses.ResponseOutputItemUnion
	for ts.Next() {
		if ev := ts.Current(); ev.Type == "response.output_item.done" {
			call = ev.Item
		}
	}
	if err := ts.Err(); err != nil || call.Type != "function_call" || call.Arguments != `{"city":"Oslo"}` {
		t.Fatalf("streamed %+v %v", call, err)
	}

	// Hosted tools are refused by name.
	resp, err := http.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],"tools":[{"type":"web_search"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"param": "tools[0].type"`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

// TestOllamaAPIStopIsNeverSent: the Ollama API enforces stop sequences as
// /v1 does, whole and streamed.
func TestOllamaAPIStopIsNeverSent(t *testing.T) {
	sw := &scriptSwarm{chunks: textChunks("Hello wo", "rld! and more"), final: inference.Final{FinishReason: inference.FinishLength}}
	srv, _ := serveScript(t, sw)
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"hi"}],"options":{"stop":["world"]},"stream":%v}`, stream)
		resp, err := http.Post(srv.URL+"/api/chat", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		reason := ""
		dec := json.NewDecoder(resp.Body)
		for {
			var line struct {
				Message    struct{ Content string } `json:"message"`
				DoneReason string                   `json:"done_reason"`
				Error      string                   `json:"error"`
			}
			if err := dec.Decode(&line); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			if line.Error != "" {
				t.Fatalf("stream %v: %s", stream, line.Error)
			}
			text.WriteString(line.Message.Content)
			if line.DoneReason != "" {
				reason = line.DoneReason
			}
		}
		resp.Body.Close()
		if text.String() != "Hello " || reason != "stop" {
			t.Fatalf("stream %v: %q (%s), want \"Hello \" (stop)", stream, text.String(), reason)
		}
	}
}
