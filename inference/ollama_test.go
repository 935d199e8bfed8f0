package inference

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
)

// startOllama runs a private Ollama server (skipping the test unless
// MWPEER_OLLAMA names an ollama binary) with the tiny generated model "tiny",
// and returns a backend for it.
func startOllama(t *testing.T) *Ollama {
	t.Helper()
	srv := ollamatest.Start(t)
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := randmodel.WriteFile(path, randmodel.Tiny()); err != nil {
		t.Fatal(err)
	}
	srv.CreateModel(t, "tiny", path)
	o, err := NewOllama(OllamaConfig{URL: srv.URL, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOllamaBackend(t *testing.T) {
	o := startOllama(t)
	ctx := context.Background()
	zero := 0.0

	t.Run("models", func(t *testing.T) {
		models, err := o.Models(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(models) != 1 || models[0].Name != "tiny:latest" || models[0].Digest == "" {
			t.Fatalf("models %+v", models)
		}
	})

	// The model is greedy and printable: each chunk is one whole token.
	const n = 16
	req := Request{Model: "tiny", Prompt: "hello", Raw: true, MaxTokens: n, Temperature: &zero, Logprobs: true, TopLogprobs: 2}
	var chunks []Chunk
	f, err := o.Generate(ctx, req, func(c Chunk) error { chunks = append(chunks, c); return nil })
	if err != nil {
		t.Fatal(err)
	}
	var full strings.Builder
	for _, c := range chunks {
		full.WriteString(c.Text)
		if len(c.Logprobs) != 1 || len(c.Logprobs[0].Top) != 2 {
			t.Fatalf("chunk %+v: want one logprob with two alternatives", c)
		}
	}
	if len(chunks) != n || f.CompletionTokens != n || f.FinishReason != FinishLength || !f.HasLogprob || f.PromptTokens == 0 {
		t.Fatalf("%d chunks, final %+v", len(chunks), f)
	}

	t.Run("continue", func(t *testing.T) {
		for _, raw := range []bool{true, false} {
			// The tiny model's template is "{{ .Prompt }}", so the rendered
			// prompt equals the raw one and both answers must match.
			k := 5
			var head strings.Builder
			for _, c := range chunks[:k] {
				head.WriteString(c.Text)
			}
			r := req
			r.Raw, r.Continue, r.MaxTokens = raw, head.String(), n-k
			var tail strings.Builder
			if _, err := o.Generate(ctx, r, collect(&tail)); err != nil {
				t.Fatal(err)
			}
			if got := head.String() + tail.String(); got != full.String() {
				t.Errorf("raw=%v: continued %q, want %q", raw, got, full.String())
			}
		}
	})

	t.Run("chat", func(t *testing.T) {
		r := Request{Model: "tiny", Messages: []Message{{Role: "user", Content: "hello"}}, MaxTokens: 4, Temperature: &zero}
		var sb strings.Builder
		f, err := o.Generate(ctx, r, collect(&sb))
		if err != nil || f.CompletionTokens != 4 || sb.Len() == 0 {
			t.Fatalf("err %v, final %+v, text %q", err, f, sb.String())
		}
		// Continuing a chat after its second token gives the same answer.
		var head []string
		r.MaxTokens = 2
		if _, err := o.Generate(ctx, r, func(c Chunk) error { head = append(head, c.Text); return nil }); err != nil {
			t.Fatal(err)
		}
		r.Continue, r.MaxTokens = strings.Join(head, ""), 2
		var tail strings.Builder
		if _, err := o.Generate(ctx, r, collect(&tail)); err != nil {
			t.Fatal(err)
		}
		if got := r.Continue + tail.String(); got != sb.String() {
			t.Errorf("continued chat %q, want %q", got, sb.String())
		}
	})

	t.Run("unknown model", func(t *testing.T) {
		_, err := o.Generate(ctx, Request{Model: "nope", Prompt: "x"}, func(Chunk) error { return nil })
		if !errors.Is(err, ErrUnknownModel) {
			t.Fatalf("err %v", err)
		}
	})
}
