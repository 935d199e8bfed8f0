package ollamatest_test

import (
	"context"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
)

const (
	numPredict  = 16
	topLogprobs = 5
)

// generation is what one greedy /api/generate call returned.
type generation struct {
	text     string
	logprobs []api.Logprob
	metrics  api.Metrics
}

// generate asks for numPredict greedy tokens with their log-probabilities.
func generate(t *testing.T, s *ollamatest.Server, model, prompt string) generation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var g generation
	req := &api.GenerateRequest{
		Model:       model,
		Prompt:      prompt,
		Raw:         true,
		Logprobs:    true,
		TopLogprobs: topLogprobs,
		// Ollama's default repeat_penalty of 1.1 would make the choice differ
		// from the argmax of the log-probabilities it reports, which come from
		// the raw logits.
		Options: map[string]any{"temperature": 0, "repeat_penalty": 1, "num_predict": numPredict},
	}
	err := s.Client().Generate(ctx, req, func(r api.GenerateResponse) error {
		g.text += r.Response
		g.logprobs = append(g.logprobs, r.Logprobs...)
		if r.Done {
			g.metrics = r.Metrics
		}
		return nil
	})
	if err != nil {
		t.Fatalf("generate with %s: %v", model, err)
	}
	return g
}

// checkGreedy checks that g holds numPredict greedy tokens, each one printable
// byte with a finite log-probability, the best of its topLogprobs alternatives.
func checkGreedy(t *testing.T, g generation) {
	t.Helper()
	if len(g.logprobs) != numPredict || g.metrics.EvalCount != numPredict {
		t.Fatalf("%d log-probabilities and eval count %d, want %d of each (text %q)", len(g.logprobs), g.metrics.EvalCount, numPredict, g.text)
	}
	var text string
	for i, lp := range g.logprobs {
		text += lp.Token
		if len(lp.Bytes) != 1 || lp.Bytes[0] < 0x20 || lp.Bytes[0] > 0x7e {
			t.Errorf("token %d %q is not one printable byte, which a Printable model guarantees", i, lp.Token)
		}
		if math.IsNaN(lp.Logprob) || math.IsInf(lp.Logprob, 0) || lp.Logprob > 0 {
			t.Errorf("token %d %q has log-probability %v", i, lp.Token, lp.Logprob)
		}
		if len(lp.TopLogprobs) != topLogprobs {
			t.Fatalf("token %d has %d alternatives, want %d", i, len(lp.TopLogprobs), topLogprobs)
		}
		best := lp.TopLogprobs[0]
		if best.Token != lp.Token || best.Logprob != lp.Logprob {
			t.Errorf("token %d: greedy chose %q (%v) but the best alternative is %q (%v)", i, lp.Token, lp.Logprob, best.Token, best.Logprob)
		}
		for j := 1; j < len(lp.TopLogprobs); j++ {
			if lp.TopLogprobs[j].Logprob > lp.TopLogprobs[j-1].Logprob {
				t.Errorf("token %d: alternatives not in descending order: %+v", i, lp.TopLogprobs)
				break
			}
		}
	}
	if text != g.text {
		t.Errorf("tokens spell %q, response is %q", text, g.text)
	}
}

func sameGeneration(t *testing.T, a, b generation) {
	t.Helper()
	if a.text != b.text || len(a.logprobs) != len(b.logprobs) {
		t.Fatalf("two greedy runs differ: %q and %q", a.text, b.text)
	}
	for i := range a.logprobs {
		x, y := a.logprobs[i], b.logprobs[i]
		if x.Token != y.Token || math.Abs(x.Logprob-y.Logprob) > 1e-4 {
			t.Errorf("token %d: %q (%v) then %q (%v)", i, x.Token, x.Logprob, y.Token, y.Logprob)
		}
	}
}

func tokensPerSecond(m api.Metrics) float64 {
	return float64(m.EvalCount) / m.EvalDuration.Seconds()
}

func TestOllamaRunsGeneratedModel(t *testing.T) {
	s := ollamatest.Start(t)
	for _, c := range []randmodel.Config{randmodel.Tiny(), randmodel.TinyDense()} {
		t.Run(c.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), c.Name+".gguf")
			if err := randmodel.WriteFile(path, c); err != nil {
				t.Fatal(err)
			}
			s.CreateModel(t, c.Name, path)
			first := generate(t, s, c.Name, "Hello")
			checkGreedy(t, first)
			second := generate(t, s, c.Name, "Hello")
			sameGeneration(t, first, second)
			t.Logf("%q: %.0f tokens/s, first token %q at %.3f", first.text, tokensPerSecond(second.metrics), first.logprobs[0].Token, first.logprobs[0].Logprob)
		})
	}
}

func TestOllamaQuantizesF16Model(t *testing.T) {
	s := ollamatest.Start(t)
	c := randmodel.Tiny()
	c.Name, c.Type = "mwpeer-tiny-moe-f16", randmodel.F16
	path := filepath.Join(t.TempDir(), c.Name+".gguf")
	if err := randmodel.WriteFile(path, c); err != nil {
		t.Fatal(err)
	}
	s.CreateQuantized(t, "tiny-q8", path, "q8_0")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	show, err := s.Client().Show(ctx, &api.ShowRequest{Model: "tiny-q8"})
	if err != nil {
		t.Fatal(err)
	}
	if got := show.Details.QuantizationLevel; got != "Q8_0" {
		t.Errorf("quantization level %q, want Q8_0", got)
	}
	g := generate(t, s, "tiny-q8", "Hello")
	checkGreedy(t, g)
	t.Logf("%q: %.0f tokens/s", g.text, tokensPerSecond(g.metrics))
}
