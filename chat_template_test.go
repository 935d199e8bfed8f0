package mwpeer

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/openai/openai-go"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// TestChatThroughPeersRendersLikeOllama: a chat request asked of one peer
// and answered by another peer's embedded engine, on a Qwen2 model with a
// ChatML template, gives Ollama's greedy answer for the same messages, token
// for token: both render the same prompt from the template and tokenize it
// the same way.
func TestChatThroughPeersRendersLikeOllama(t *testing.T) {
	srv := ollamatest.Start(t) // skips without $MWPEER_OLLAMA
	c := randmodel.TinyQwen2()
	path := filepath.Join(t.TempDir(), "qwen2.gguf")
	if err := randmodel.WriteFile(path, c); err != nil {
		t.Fatal(err)
	}
	srv.CreateModel(t, "qwen2-chat", path)

	peers := startSwarm(t, 2, func(i int, cfg *Config) {
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.Models = nil
		if i == 0 {
			cfg.Engine, cfg.ModelFile = EngineEmbedded, path
		} else {
			cfg.Engine = EngineNone
		}
	})
	wait.For(t, slow(10*time.Second), "peer B learns of the Qwen2 model", func() error {
		for _, m := range peers[1].Router().Models() {
			if m.ID == c.Name {
				return nil
			}
		}
		return context.DeadlineExceeded
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	msgs := []struct{ role, content string }{
		{"system", "You are terse."},
		{"user", "Hello there"},
		{"assistant", "Hi."},
		{"user", "What is 2+2?"},
	}
	const n = 16
	var params []openai.ChatCompletionMessageParamUnion
	req := &api.ChatRequest{Model: "qwen2-chat", Options: map[string]any{"temperature": 0, "repeat_penalty": 1, "num_predict": n}}
	for _, m := range msgs {
		switch m.role {
		case "system":
			params = append(params, openai.SystemMessage(m.content))
		case "user":
			params = append(params, openai.UserMessage(m.content))
		case "assistant":
			params = append(params, openai.AssistantMessage(m.content))
		}
		req.Messages = append(req.Messages, api.Message{Role: m.role, Content: m.content})
	}
	client := sdk(peers[1])
	got, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: c.Name, Messages: params, Temperature: openai.Float(0), MaxTokens: openai.Int(n),
	})
	if err != nil {
		t.Fatal(err)
	}
	stream := false
	req.Stream = &stream
	var want string
	if err := srv.Client().Chat(ctx, req, func(r api.ChatResponse) error { want += r.Message.Content; return nil }); err != nil {
		t.Fatal(err)
	}
	if got.Choices[0].Message.Content == "" || got.Choices[0].Message.Content != want {
		t.Fatalf("through two peers %q, Ollama %q", got.Choices[0].Message.Content, want)
	}
}
