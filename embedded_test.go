package mwpeer

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// TestEmbeddedEngineServesTheSwarm starts a peer on the pure-Go engine with
// the built-in model and asks it through another peer: the answer is the
// engine's own, token for token.
func TestEmbeddedEngineServesTheSwarm(t *testing.T) {
	peers := startSwarm(t, 2, func(i int, c *Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.Models = nil
		if i == 0 {
			c.Engine = EngineEmbedded
		} else {
			c.Engine = EngineNone
		}
	})
	wait.For(t, slow(10*time.Second), "peer B learns of the built-in model", func() error {
		for _, m := range peers[1].Router().Models() {
			if m.ID == BuiltinModel {
				return nil
			}
		}
		return context.DeadlineExceeded
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := sdk(peers[1])
	c, err := client.Completions.New(ctx, openai.CompletionNewParams{
		Model:       BuiltinModel,
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("Hello")},
		Temperature: openai.Float(0),
		MaxTokens:   openai.Int(24),
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := llama.NewBackend(filepath.Join(peers[0].cfg.DataDir, BuiltinModel+".gguf"), llama.BackendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	zero := 0.0
	var want strings.Builder
	if _, err := b.Generate(ctx, inference.Request{Model: BuiltinModel, Prompt: "Hello", Raw: true, MaxTokens: 24, Temperature: &zero},
		func(ch inference.Chunk) error { want.WriteString(ch.Text); return nil }); err != nil {
		t.Fatal(err)
	}
	if c.Choices[0].Text == "" || c.Choices[0].Text != want.String() {
		t.Fatalf("through the swarm %q, engine directly %q", c.Choices[0].Text, want.String())
	}
}
