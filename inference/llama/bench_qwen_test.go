package llama

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
	"github.com/ollama/ollama/api"
)

// qwenBenchModels are F16 models of each Qwen family and of deepseek2 of
// about 60 to 100 MB.
func qwenBenchModels() []randmodel.Config {
	base := func(c randmodel.Config) randmodel.Config {
		c.Embedding, c.Layers, c.Heads, c.ContextLength = 512, 8, 8, 1024
		c.Type, c.Scale, c.RopeDim = randmodel.F16, 0.05, 0
		return c
	}
	q2 := base(randmodel.TinyQwen2())
	q2.Name, q2.FeedForward, q2.KVHeads = "mwpeer-bench-qwen2-f16", 1536, 2
	q3 := base(randmodel.TinyQwen3())
	q3.Name, q3.FeedForward, q3.KVHeads, q3.HeadDim, q3.RopeDim = "mwpeer-bench-qwen3-f16", 1536, 2, 128, 128
	q2m := base(randmodel.TinyQwen2MoE())
	q2m.Name, q2m.KVHeads, q2m.Experts, q2m.ExpertsUsed, q2m.FeedForward, q2m.SharedFeedForward = "mwpeer-bench-qwen2moe-f16", 8, 8, 2, 512, 1024
	q3m := base(randmodel.TinyQwen3MoE())
	q3m.Name, q3m.KVHeads, q3m.HeadDim, q3m.RopeDim, q3m.Experts, q3m.ExpertsUsed, q3m.FeedForward = "mwpeer-bench-qwen3moe-f16", 2, 64, 64, 16, 4, 384
	ds := base(randmodel.TinyDeepSeek2())
	ds.Name, ds.KVHeads, ds.RopeDim, ds.Experts, ds.ExpertsUsed, ds.FeedForward = "mwpeer-bench-deepseek2-f16", 8, 32, 8, 2, 384
	ds.DeepSeek2.QLoraRank, ds.DeepSeek2.KVLoraRank, ds.DeepSeek2.NopeDim, ds.DeepSeek2.ValueDim = 192, 128, 64, 64
	ds.DeepSeek2.DenseFeedForward = 1536
	return []randmodel.Config{q2, q3, q2m, q3m, ds}
}

// BenchmarkQwen reports the engine's prefill and decode tokens/s on each
// Qwen family and deepseek2 and, with an Ollama ($MWPEER_OLLAMA_NATIVE, else
// $MWPEER_OLLAMA), Ollama's on the same file and the ratios. The prompt is
// the first 128 tokens of randmodel.MergeCorpus, repeated.
// Run it with: go test ./inference/llama -run '^$' -bench Qwen -benchtime 1x
func BenchmarkQwen(b *testing.B) {
	var srv *ollamatest.Server
	if native := os.Getenv(EnvNative); native != "" {
		b.Setenv(ollamatest.EnvBinary, native)
	}
	if os.Getenv(ollamatest.EnvBinary) != "" {
		srv = ollamatest.Start(b)
	}
	var table strings.Builder
	fmt.Fprintf(&table, "engine (%s kernels) / Ollama, GOMAXPROCS %d:\n", Kernels(), runtime.GOMAXPROCS(0))
	for _, c := range qwenBenchModels() {
		b.Run(c.Arch, func(b *testing.B) {
			path := benchFile(b, c)
			m, err := Load(path)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			text := strings.Repeat(randmodel.MergeCorpus, 4)
			ids := m.Vocab.Encode(text)[:benchPrompt]
			prompt := ""
			for i, id := range ids {
				if i == 0 && m.Vocab.AddBOS && id == m.Vocab.BOS {
					continue // Encode and Ollama add it again
				}
				prompt += m.Vocab.Piece(id)
			}
			if got := m.Vocab.Encode(prompt); len(got) != benchPrompt {
				b.Fatalf("prompt of %d tokens, want %d", len(got), benchPrompt)
			}
			var prefill, decode time.Duration
			for b.Loop() {
				ctx := context.Background()
				st := m.NewState(benchPrompt+benchDecode, nil)
				start := time.Now()
				logits, err := st.Forward(ctx, ids)
				if err != nil {
					b.Fatal(err)
				}
				prefill += time.Since(start)
				start = time.Now()
				smp := NewSampler(Options{})
				for range benchDecode {
					if logits, err = st.Forward(ctx, []int{smp.Sample(logits)}); err != nil {
						b.Fatal(err)
					}
				}
				decode += time.Since(start)
			}
			pRate, dRate := float64(b.N*benchPrompt)/prefill.Seconds(), float64(b.N*benchDecode)/decode.Seconds()
			b.ReportMetric(pRate, "prefill-tok/s")
			b.ReportMetric(dRate, "decode-tok/s")
			if srv == nil {
				return
			}
			name := strings.ToLower(c.Name)
			srv.CreateModel(b, name, path)
			// Load the model with another prompt: Ollama would reuse the
			// cached prompt on the second call and report its prefill
			// from a token or two.
			ollamaMetrics(b, srv, name, "Hello")
			pm := ollamaMetrics(b, srv, name, prompt)
			if pm.EvalCount == 0 {
				b.Logf("no Ollama figures for %s", name)
				return
			}
			oPrefill := math.NaN()
			if pm.PromptEvalCount > 0 {
				oPrefill = float64(pm.PromptEvalCount) / pm.PromptEvalDuration.Seconds()
				b.ReportMetric(oPrefill, "ollama-prefill-tok/s")
			}
			oDecode := float64(pm.EvalCount) / pm.EvalDuration.Seconds()
			b.ReportMetric(oDecode, "ollama-decode-tok/s")
			// Ollama's deepseek-v3 pre-tokenizer duplicates text before a
			// number (arch_deepseek2_test.go): its prompt is then longer.
			b.ReportMetric(float64(pm.PromptEvalCount), "ollama-prompt-tokens")
			fmt.Fprintf(&table, "%-10s decode %7.1f / %7.1f (%3.0f%%)  prefill %7.1f / %7.1f (%3.0f%%)\n", c.Arch,
				dRate, oDecode, 100*dRate/oDecode, pRate, oPrefill, 100*pRate/oPrefill)
		})
	}
	if srv != nil {
		b.Log(table.String())
	}
}

// ollamaMetrics completes prompt greedily for benchDecode tokens and returns
// Ollama's timings. Its stream for some random-weight models ends without a
// final message (the runner stops early); then the decode rate comes from
// the arrival times of the streamed tokens, and the prefill is unknown
// (PromptEvalCount 0).
func ollamaMetrics(b *testing.B, srv *ollamatest.Server, model, prompt string) api.Metrics {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stream := true
	req := &api.GenerateRequest{
		Model: model, Prompt: prompt, Raw: true, Stream: &stream,
		Options: map[string]any{"temperature": 0, "num_predict": benchDecode, "num_ctx": 1024,
			"num_thread": runtime.GOMAXPROCS(0), "repeat_penalty": 1, "seed": 1},
	}
	var last api.GenerateResponse
	var arrivals []time.Time
	err := srv.Client().Generate(ctx, req, func(r api.GenerateResponse) error {
		last = r
		if r.Response != "" {
			arrivals = append(arrivals, time.Now())
		}
		return nil
	})
	if err != nil && len(arrivals) == 0 {
		b.Fatalf("ollama generate %s: %v", model, err)
	}
	if last.Done {
		return last.Metrics
	}
	b.Logf("ollama's stream for %s ended after %d tokens without a final message (%v): decode timed from the tokens' arrivals, no prefill figure", model, len(arrivals), err)
	if len(arrivals) < 8 {
		return api.Metrics{}
	}
	return api.Metrics{EvalCount: len(arrivals) - 1, EvalDuration: arrivals[len(arrivals)-1].Sub(arrivals[0])}
}
