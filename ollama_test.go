package mwpeer

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ollama "github.com/ollama/ollama/api"
	"github.com/openai/openai-go"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// TestPromptThroughTwoPeersGivesOllamasAnswer runs a real Ollama serving a
// generated tiny MoE model behind peer A, and asks peer B (which has no
// Ollama) through the official OpenAI SDK: at temperature 0 the answer must
// be exactly what Ollama itself says to the same prompt.
func TestPromptThroughTwoPeersGivesOllamasAnswer(t *testing.T) {
	srv := ollamatest.Start(t) // skips without MWPEER_OLLAMA
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := randmodel.WriteFile(path, randmodel.Tiny()); err != nil {
		t.Fatal(err)
	}
	srv.CreateModel(t, "tiny", path)
	const model = "tiny:latest"

	peers := startSwarm(t, 2, func(i int, c *Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.Models = nil
		if i == 0 {
			c.Engine = EngineOllama
			c.Ollama = srv.URL
		} else {
			c.Engine = EngineNone
		}
	})
	wait.For(t, slow(15*time.Second), "peer B learns that A serves the model", func() error {
		for _, m := range peers[1].Router().Models() {
			if m.ID == model {
				return nil
			}
		}
		return context.DeadlineExceeded
	})
	// A's announcement carries the context length Ollama reports for it.
	if e, ok := peers[1].Catalog.Get(peers[0].ID().String()); !ok || len(e.Models) != 1 || e.Models[0].Context != randmodel.Tiny().ContextLength {
		t.Fatalf("B's view of A's models: %+v, want context %d", e.Models, randmodel.Tiny().ContextLength)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// What Ollama itself answers.
	const n = 16
	opts := map[string]any{"temperature": 0, "num_predict": n}
	var direct strings.Builder
	raw := true
	if err := srv.Client().Generate(ctx, &ollama.GenerateRequest{Model: model, Prompt: "Hello", Raw: raw, Options: opts},
		func(r ollama.GenerateResponse) error { direct.WriteString(r.Response); return nil }); err != nil {
		t.Fatal(err)
	}
	var directChat strings.Builder
	stream := false
	if err := srv.Client().Chat(ctx, &ollama.ChatRequest{Model: model, Messages: []ollama.Message{{Role: "user", Content: "Hello"}}, Options: opts, Stream: &stream},
		func(r ollama.ChatResponse) error { directChat.WriteString(r.Message.Content); return nil }); err != nil {
		t.Fatal(err)
	}
	if direct.Len() == 0 || directChat.Len() == 0 {
		t.Fatal("Ollama answered nothing")
	}

	client := sdk(peers[1])
	c, err := client.Completions.New(ctx, openai.CompletionNewParams{
		Model:       model,
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("Hello")},
		Temperature: openai.Float(0),
		MaxTokens:   openai.Int(n),
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Choices[0].Text != direct.String() {
		t.Fatalf("through two peers: %q\nOllama directly: %q", c.Choices[0].Text, direct.String())
	}
	chat, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:       model,
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
		Temperature: openai.Float(0),
		MaxTokens:   openai.Int(n),
		Logprobs:    openai.Bool(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := chat.Choices[0].Message.Content; got != directChat.String() {
		t.Fatalf("chat through two peers: %q\nOllama directly: %q", got, directChat.String())
	}
	if len(chat.Choices[0].Logprobs.Content) == 0 {
		t.Fatal("no log-probabilities came back through the swarm")
	}
	t.Logf("Ollama's %d-token answer, identical through the swarm: %q", n, direct.String())
}
