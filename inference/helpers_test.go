package inference

import (
	"context"
	"strings"
	"testing"
)

// fullText runs req directly on a fresh synthetic backend with cfg.
func fullText(t testing.TB, cfg SyntheticConfig, req Request) string {
	t.Helper()
	cfg.TTFT, cfg.Rate = 0, 0
	var sb strings.Builder
	if _, err := NewSynthetic(cfg).Generate(context.Background(), req, func(c Chunk) error {
		sb.WriteString(c.Text)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

func collect(sb *strings.Builder) func(Chunk) error {
	return func(c Chunk) error {
		sb.WriteString(c.Text)
		return nil
	}
}

var testReq = Request{Model: SyntheticName, Prompt: "why is the sky blue?"}
