package llama

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
	"github.com/ollama/ollama/api"
)

// BenchmarkTiny reports prefill and decode tokens/s of the tiny MoE and dense
// models. A decode op is one token (at positions cycling through 1..64), so
// allocs/op is the allocations per decoded token.
func BenchmarkTiny(b *testing.B) {
	for _, c := range []randmodel.Config{randmodel.Tiny(), randmodel.TinyDense()} {
		m := load(b, c)
		prompt := make([]int, 128)
		for i := range prompt {
			prompt[i] = 3 + 'a' + i%26
		}
		b.Run(c.Name+"/prefill", func(b *testing.B) {
			for b.Loop() {
				if _, err := m.NewState(len(prompt), nil).Forward(context.Background(), prompt); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(prompt))/b.Elapsed().Seconds(), "tokens/s")
		})
		b.Run(c.Name+"/decode", func(b *testing.B) {
			const n = 64
			st := m.NewState(n, nil)
			tok := prompt[0]
			smp := NewSampler(Options{})
			b.ReportAllocs()
			for b.Loop() {
				if st.pos == n {
					st.pos = 0
				}
				logits, err := st.Forward(context.Background(), []int{tok})
				if err != nil {
					b.Fatal(err)
				}
				tok = smp.Sample(logits)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// benchModels are the models of BenchmarkLarge: the tiny dense one, a dense F16
// model of about 180 MB with grouped-query attention, and a Mixture-of-Experts
// F16 model of about 220 MB (8 experts, 2 used: about 70 MB of weights per token).
func benchModels() []randmodel.Config {
	dense := randmodel.Config{Name: "mwpeer-bench-dense-f16", Embedding: 1024, Layers: 8, FeedForward: 2816,
		Heads: 16, KVHeads: 4, ContextLength: 1024, Type: randmodel.F16, Seed: 21, Scale: 0.05, Printable: true}
	moe := randmodel.Config{Name: "mwpeer-bench-moe-f16", Embedding: 1024, Layers: 4, FeedForward: 1024,
		Heads: 16, KVHeads: 4, ContextLength: 1024, Experts: 8, ExpertsUsed: 2, Type: randmodel.F16, Seed: 22,
		Scale: 0.05, Printable: true}
	return []randmodel.Config{randmodel.TinyDense(), dense, moe}
}

// benchFile returns the path of c written as GGUF, kept in the user cache
// directory (keyed by the configuration) so that re-runs skip generation.
func benchFile(b *testing.B, c randmodel.Config) string {
	b.Helper()
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = b.TempDir()
	}
	dir = filepath.Join(dir, "mwpeer-bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	// The key prints the BPE vocabulary, not its pointer: with the
	// pointer every run wrote a new file of up to 200 MB.
	keyed, bpe := c, randmodel.BPE{}
	if c.BPE != nil {
		keyed.BPE, bpe = nil, *c.BPE
	}
	key := sha256.Sum256(fmt.Appendf(nil, "%+v %+v", keyed, bpe))
	path := filepath.Join(dir, fmt.Sprintf("%s-%x.gguf", c.Name, key[:6]))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	tmp := path + ".tmp"
	if err := randmodel.WriteFile(tmp, c); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	return path
}

const (
	benchPrompt = 128 // tokens, with <s>
	benchDecode = 64
)

// benchText returns a prompt of benchPrompt tokens: <s>, the three bytes of
// the leading "▁" and one byte token per letter.
func benchText(seed uint64) string {
	rng := rand.New(rand.NewPCG(seed, 7))
	var sb strings.Builder
	for range benchPrompt - 4 {
		sb.WriteByte(byte('a' + rng.IntN(26)))
	}
	return sb.String()
}

// EnvNative names the environment variable that holds the path of an Ollama
// built with -O3 -march=native (OLLAMA_NATIVE=1 ../shared/tools/build-ollama):
// llama.cpp's SIMD kernels, the speed to compare the engine with.
const EnvNative = "MWPEER_OLLAMA_NATIVE"

// benchFormats are the formats BenchmarkLarge runs a model in: its own
// (F32 or F16), then what Ollama quantizes it to (a model's rows must be a
// multiple of 256 for K-quants; q5_K_M is made from Ollama's q4_K_M, see
// createQuantized). Quantized formats need an Ollama.
func benchFormats(c randmodel.Config) []string {
	own := strings.ToLower(c.Type.String())
	if c.Experts > 0 || c.Embedding < 256 {
		return []string{own}
	}
	return []string{own, "q8_0", "q4_K_M", "q5_K_M"}
}

// BenchmarkLarge reports prefill (128-token prompt) and decode (64 tokens)
// tokens/s of the engine on the tiny dense and ~200 MB generated models, in
// F16 and, quantized by Ollama, Q8_0, Q4_K_M and Q5_K_M, and Ollama's on the same
// files on the same machine: the native build named by $MWPEER_OLLAMA_NATIVE
// when set (the speed a user's Ollama has), else $MWPEER_OLLAMA (the portable
// build). With an Ollama it reports the ratios engine/llama.cpp
// (decode-ratio, prefill-ratio) and prints a table of them at the end.
// Ollama runs with num_thread = GOMAXPROCS, the engine on all of GOMAXPROCS.
// Run it with: go test ./inference/llama -run '^$' -bench Large -benchtime 1x
func BenchmarkLarge(b *testing.B) {
	var srv *ollamatest.Server
	ref := "portable"
	if native := os.Getenv(EnvNative); native != "" {
		b.Setenv(ollamatest.EnvBinary, native)
		ref = "native"
	}
	if os.Getenv(ollamatest.EnvBinary) == "" {
		b.Log("neither MWPEER_OLLAMA nor MWPEER_OLLAMA_NATIVE is set: measuring the engine only, on unquantized files")
	} else {
		srv = ollamatest.Start(b)
	}
	var table strings.Builder
	fmt.Fprintf(&table, "engine (%s kernels) / llama.cpp (%s build), threads = GOMAXPROCS for both:\n", Kernels(), ref)
	fmt.Fprintf(&table, "%-32s %-7s %7s %22s %22s\n", "model", "format", "threads", "decode tok/s (ratio)", "prefill tok/s (ratio)")
	for _, c := range benchModels() {
		f16 := benchFile(b, c)
		for _, format := range benchFormats(c) {
			quantized := format != strings.ToLower(c.Type.String())
			if quantized && srv == nil {
				continue
			}
			b.Run(c.Name+"/"+format, func(b *testing.B) {
				name := strings.ToLower(c.Name + "-" + format)
				path := f16
				if srv != nil {
					if quantized {
						path = createQuantized(b, srv, name, f16, format)
					} else {
						srv.CreateModel(b, name, f16)
					}
				}
				prefill, decode := engineSpeed(b, path)
				b.ReportMetric(prefill, "prefill-tok/s")
				b.ReportMetric(decode, "decode-tok/s")
				if srv == nil {
					return
				}
				ollamaGenerate(b, srv.Client(), name, benchText(2)) // loads the model
				pm := ollamaGenerate(b, srv.Client(), name, benchText(1))
				if pm.PromptEvalCount != benchPrompt || pm.EvalCount != benchDecode {
					b.Logf("ollama counted %d prompt and %d generated tokens: no Ollama figures", pm.PromptEvalCount, pm.EvalCount)
					return
				}
				oPrefill := float64(pm.PromptEvalCount) / pm.PromptEvalDuration.Seconds()
				oDecode := float64(pm.EvalCount) / pm.EvalDuration.Seconds()
				b.ReportMetric(oPrefill, "ollama-prefill-tok/s")
				b.ReportMetric(oDecode, "ollama-decode-tok/s")
				b.ReportMetric(decode/oDecode, "decode-ratio")
				b.ReportMetric(prefill/oPrefill, "prefill-ratio")
				fmt.Fprintf(&table, "%-32s %-7s %7d %7.1f / %6.1f (%3.0f%%) %7.1f / %6.1f (%3.0f%%)\n", c.Name, format,
					runtime.GOMAXPROCS(0), decode, oDecode, 100*decode/oDecode, prefill, oPrefill, 100*prefill/oPrefill)
			})
		}
	}
	if srv != nil {
		// On stdout: a parent benchmark's log is not shown once it has sub-benchmarks.
		fmt.Print(table.String())
	}
}

// engineSpeed loads the model at path and returns the engine's prefill and
// decode tokens/s over b.N runs of the benchmark prompt.
func engineSpeed(b *testing.B, path string) (prefillRate, decodeRate float64) {
	m, err := Load(path)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ids := m.Vocab.Encode(benchText(1))
	if len(ids) != benchPrompt {
		b.Fatalf("prompt of %d tokens, want %d", len(ids), benchPrompt)
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
	return float64(b.N*benchPrompt) / prefill.Seconds(), float64(b.N*benchDecode) / decode.Seconds()
}

// ollamaGenerate completes prompt greedily for benchDecode tokens and returns Ollama's timings.
func ollamaGenerate(b *testing.B, client *api.Client, model, prompt string) api.Metrics {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	req := &api.GenerateRequest{
		Model: model, Prompt: prompt, Raw: true,
		Options: map[string]any{"temperature": 0, "num_predict": benchDecode, "num_ctx": 1024,
			"num_thread": runtime.GOMAXPROCS(0), "repeat_penalty": 1, "seed": 1},
	}
	var last api.GenerateResponse
	var text strings.Builder
	if err := client.Generate(ctx, req, func(r api.GenerateResponse) error {
		text.WriteString(r.Response)
		if r.Done {
			last = r
		}
		return nil
	}); err != nil {
		b.Fatalf("ollama generate %s: %v", model, err)
	}
	if !last.Done {
		// Seen with Ollama 0.17.4's llama.cpp runner (which runs llama MoE
		// models) on the MoE model here: the stream ends early, with no
		// final response and no error.
		b.Logf("ollama's stream for %s ended after %q without a final response", model, text.String())
	}
	return last.Metrics
}
