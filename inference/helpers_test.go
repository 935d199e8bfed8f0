package inference

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"
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

// checkNoLeak fails if goroutines started during the test outlive it.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines: %d before, %d after\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func collect(sb *strings.Builder) func(Chunk) error {
	return func(c Chunk) error {
		sb.WriteString(c.Text)
		return nil
	}
}

var testReq = Request{Model: SyntheticName, Prompt: "why is the sky blue?"}
