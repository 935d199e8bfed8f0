package llama

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
	"github.com/ollama/ollama/api"
)

var chatMessages = []inference.Message{
	{Role: "system", Content: "You are terse."},
	{Role: "user", Content: "Hello there"},
	{Role: "assistant", Content: "Hi."},
	{Role: "user", Content: "What is 2+2?"},
}

func qwenConfig() randmodel.Config {
	c := randmodel.TinyDense()
	c.Name = "mwpeer-tiny-qwen-chat"
	c.BPE = randmodel.QwenBPE()
	return c
}

func llama3Config() randmodel.Config {
	c := randmodel.TinyDense()
	c.Name = "mwpeer-tiny-llama3-chat"
	c.BPE = randmodel.Llama3BPE()
	return c
}

func TestChatTemplateRendersChatML(t *testing.T) {
	m := load(t, qwenConfig())
	got, err := m.Vocab.RenderChat(chatMessages, true)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n" +
		"<|im_start|>assistant\nHi.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
	if got != want {
		t.Errorf("rendered\n%q\nwant\n%q", got, want)
	}
}

// TestChatTemplateLeavesBOSToTheTokenizer: Llama 3's template writes the
// BOS text, which the tokenizer adds anyway; the prompt holds one BOS.
func TestChatTemplateLeavesBOSToTheTokenizer(t *testing.T) {
	m := load(t, llama3Config())
	got, err := m.Vocab.RenderChat(chatMessages[1:2], true)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
	if got != want {
		t.Errorf("rendered %q, want %q", got, want)
	}
	ids := m.Vocab.Encode(got)
	if ids[0] != m.Vocab.BOS || ids[1] == m.Vocab.BOS {
		t.Errorf("prompt tokens start %v, want one BOS (%d)", ids[:2], m.Vocab.BOS)
	}
}

func TestPlainPromptWithoutTemplate(t *testing.T) {
	b := NewModelBackend(load(t, randmodel.TinyDense()), BackendOptions{})
	got, err := b.Prompt(inference.Request{Messages: chatMessages[:2], Continue: "Gen"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "system: You are terse.\nuser: Hello there\nassistant:Gen"; got != want {
		t.Errorf("prompt %q, want %q", got, want)
	}
}

// TestContinueStaysInTheAssistantTurn: after a failover, the text already
// answered follows the template's assistant header, so the next expert goes
// on inside the same turn.
func TestContinueStaysInTheAssistantTurn(t *testing.T) {
	b := NewModelBackend(load(t, qwenConfig()), BackendOptions{})
	full, err := b.Prompt(inference.Request{Messages: chatMessages})
	if err != nil {
		t.Fatal(err)
	}
	cont, err := b.Prompt(inference.Request{Messages: chatMessages, Continue: "It is"})
	if err != nil {
		t.Fatal(err)
	}
	if cont != full+"It is" || !strings.HasSuffix(full, "<|im_start|>assistant\n") {
		t.Errorf("continued prompt %q does not extend %q", cont, full)
	}
}

func TestBrokenTemplateIsAnError(t *testing.T) {
	c := qwenConfig()
	c.BPE.ChatTemplate = "{% for m in messages %}{{ m.content }"
	b := NewModelBackend(load(t, c), BackendOptions{})
	if _, err := b.Prompt(inference.Request{Messages: chatMessages}); err == nil {
		t.Error("a template that does not compile rendered")
	}
}

// ollamaRender returns what Ollama renders for a chat request.
func ollamaRender(t *testing.T, client *api.Client, model string, msgs []inference.Message) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := false
	req := &api.ChatRequest{Model: model, Stream: &stream, DebugRenderOnly: true}
	for _, m := range msgs {
		req.Messages = append(req.Messages, api.Message{Role: m.Role, Content: m.Content})
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

// TestChatRendersLikeOllama: for the ChatML and Llama 3 templates, the
// engine's prompt is the one Ollama renders for the same messages (Ollama
// maps a GGUF's Jinja template to its own Go template of the same family).
func TestChatRendersLikeOllama(t *testing.T) {
	srv := ollamatest.Start(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  randmodel.Config
	}{
		{"chatml", qwenConfig()},
		{"llama3", llama3Config()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".gguf")
			if err := randmodel.WriteFile(path, tc.cfg); err != nil {
				t.Fatal(err)
			}
			model := "chat-" + tc.name
			srv.CreateModel(t, model, path)
			b, err := NewBackend(path, BackendOptions{Name: model})
			if err != nil {
				t.Fatal(err)
			}
			for _, msgs := range [][]inference.Message{chatMessages, chatMessages[1:2], chatMessages[1:]} {
				got, err := b.Prompt(inference.Request{Messages: msgs})
				if err != nil {
					t.Fatal(err)
				}
				if want := ollamaRender(t, srv.Client(), model, msgs); got != want {
					t.Errorf("rendered\n%q\nollama\n%q", got, want)
				}
			}
		})
	}
}

// TestChatStopsAtEndOfTurn: a model that writes <|im_end|> ends its answer
// there, as Ollama's does; so does one that writes <|im_start|>, a turn
// marker of its template (Ollama's ChatML template lists it as a stop word).
// Without a template, a raw completion goes on through <|im_start|>, which
// ends nothing.
func TestChatStopsAtEndOfTurn(t *testing.T) {
	srv := ollamatest.Start(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		favor      string
		wantText   string
		wantReason string
	}{
		{"<|im_end|>", "", "stop"},
		{"<|im_start|>", "", "stop"},
	} {
		c := qwenConfig()
		c.Favor = tc.favor
		path := filepath.Join(dir, "favor.gguf")
		if err := randmodel.WriteFile(path, c); err != nil {
			t.Fatal(err)
		}
		model := "favor-" + strings.Trim(tc.favor, "<|>")
		srv.CreateModel(t, model, path)
		b, err := NewBackend(path, BackendOptions{Name: model})
		if err != nil {
			t.Fatal(err)
		}
		var got strings.Builder
		temp := 0.0
		f, err := b.Generate(context.Background(), inference.Request{Model: model, Messages: chatMessages, MaxTokens: 4, Temperature: &temp},
			func(ch inference.Chunk) error { got.WriteString(ch.Text); return nil })
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != tc.wantText || string(f.FinishReason) != tc.wantReason {
			t.Errorf("favoring %s: answered %q (%s), want %q (%s)", tc.favor, got.String(), f.FinishReason, tc.wantText, tc.wantReason)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		stream := false
		req := &api.ChatRequest{Model: model, Stream: &stream, Options: map[string]any{"temperature": 0, "num_predict": 4}}
		for _, m := range chatMessages {
			req.Messages = append(req.Messages, api.Message{Role: m.Role, Content: m.Content})
		}
		var oll strings.Builder
		var reason string
		err = srv.Client().Chat(ctx, req, func(r api.ChatResponse) error {
			oll.WriteString(r.Message.Content)
			if r.Done {
				reason = r.DoneReason
			}
			return nil
		})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if oll.String() != got.String() || reason != tc.wantReason {
			t.Errorf("favoring %s: ollama answered %q (%s), the engine %q (%s)", tc.favor, oll.String(), reason, got.String(), f.FinishReason)
		}
	}
}

func TestRawCompletionGoesThroughTurnMarkers(t *testing.T) {
	c := qwenConfig()
	c.Favor = "<|im_start|>"
	b := NewModelBackend(load(t, c), BackendOptions{Name: "m"})
	var got strings.Builder
	temp := 0.0
	f, err := b.Generate(context.Background(), inference.Request{Model: "m", Prompt: "hi", MaxTokens: 3, Temperature: &temp},
		func(ch inference.Chunk) error { got.WriteString(ch.Text); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Repeat("<|im_start|>", 3); got.String() != want || f.FinishReason != inference.FinishLength {
		t.Errorf("answered %q (%s), want %q (length)", got.String(), f.FinishReason, want)
	}
}
