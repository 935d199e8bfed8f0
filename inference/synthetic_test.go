package inference

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/internal/wait"
)

func TestSyntheticIsDeterministic(t *testing.T) {
	cfg := SyntheticConfig{Tokens: 12}
	a, b := fullText(t, cfg, testReq), fullText(t, cfg, testReq)
	if a != b || len(strings.Fields(a)) != 12 {
		t.Fatalf("answers %q and %q", a, b)
	}
	seed := int64(7)
	other := testReq
	other.Seed = &seed
	if fullText(t, cfg, other) == a {
		t.Fatal("seed does not change the answer")
	}
}

func TestSyntheticContinueResumesSequence(t *testing.T) {
	cfg := SyntheticConfig{Tokens: 10}
	full := fullText(t, cfg, testReq)
	words := strings.SplitAfter(full, " ")
	cuts := []int{0, 1, len(words[0]), len(words[0]) + 3, len(full) - 1}
	for _, cut := range cuts {
		req := testReq
		req.Continue = full[:cut]
		if got := req.Continue + fullText(t, cfg, req); got != full {
			t.Errorf("continue after %d bytes: %q, want %q", cut, got, full)
		}
	}
}

func TestSyntheticMaxTokensAndLogprobs(t *testing.T) {
	b := NewSynthetic(SyntheticConfig{Tokens: 10})
	req := testReq
	req.MaxTokens, req.Logprobs, req.TopLogprobs = 4, true, 2
	var n int
	f, err := b.Generate(context.Background(), req, func(c Chunk) error {
		n++
		if len(c.Logprobs) != 1 || len(c.Logprobs[0].Top) != 2 || c.Logprobs[0].Logprob >= 0 {
			t.Errorf("chunk %+v", c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 || f.CompletionTokens != 4 || f.FinishReason != FinishLength || !f.HasLogprob || f.MeanLogprob >= 0 {
		t.Fatalf("n=%d final %+v", n, f)
	}
}

func TestSyntheticCountsCancellation(t *testing.T) {
	b := NewSynthetic(SyntheticConfig{Tokens: 1000, Rate: 100})
	ctx, cancel := context.WithCancel(context.Background())
	_, err := b.Generate(ctx, testReq, func(Chunk) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) || b.Cancellations() != 1 {
		t.Fatalf("err %v, cancellations %d", err, b.Cancellations())
	}
}

func TestSyntheticBusyAndUnknownModel(t *testing.T) {
	b := NewSynthetic(SyntheticConfig{Tokens: 1000, Rate: 100, Capacity: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Generate(ctx, testReq, func(Chunk) error { return nil })
	}()
	wait.For(t, 5*time.Second, "first call active", func() error {
		if n := b.Active(); n != 1 {
			return fmt.Errorf("%d calls active", n)
		}
		return nil
	})
	if _, err := b.Generate(context.Background(), testReq, func(Chunk) error { return nil }); !errors.Is(err, ErrBusy) {
		t.Errorf("second call: %v, want ErrBusy", err)
	}
	cancel()
	<-done
	if _, err := b.Generate(context.Background(), Request{Model: "nope", Prompt: "x"}, func(Chunk) error { return nil }); !errors.Is(err, ErrUnknownModel) {
		t.Errorf("unknown model: %v", err)
	}
}

func TestSimilarity(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want float64
	}{
		{"", "", 1},
		{"a b c d", "a b c d", 1},
		{"a b c d", "a b x d", 0.75},
		{"a b c d", "a b", 0.5},
		{"a b", "c d", 0},
	} {
		if got := Similarity(tc.a, tc.b); got != tc.want {
			t.Errorf("Similarity(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
