package llama

import (
	"errors"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
	"github.com/ollama/ollama/fs/ggml"
)

func qwenCases() []anchorCase {
	gqa := randmodel.TinyQwen2()
	gqa.Name, gqa.Embedding, gqa.Heads, gqa.KVHeads, gqa.Seed = "mwpeer-tiny-qwen2-gqa", 96, 6, 2, 31
	q3f16 := randmodel.TinyQwen3()
	q3f16.Name, q3f16.Type = "mwpeer-tiny-qwen3-f16", randmodel.F16
	return []anchorCase{
		{name: "qwen2", cfg: randmodel.TinyQwen2(), tol: 1e-3},
		{name: "qwen2-gqa", cfg: gqa, tol: 1e-3},
		{name: "qwen3", cfg: randmodel.TinyQwen3(), tol: 1e-3},
		{name: "qwen3-f16", cfg: q3f16, tol: 1e-3},
		{name: "qwen2moe", cfg: randmodel.TinyQwen2MoE(), tol: 1e-3},
		{name: "qwen3moe", cfg: randmodel.TinyQwen3MoE(), tol: 1e-3},
	}
}

func TestLoadReadsQwenShapes(t *testing.T) {
	m := load(t, randmodel.TinyQwen3())
	if c := m.Config; c.Arch != "qwen3" || c.HeadDim != 32 || c.Heads*c.HeadDim != 128 || !c.RopeNeoX || c.RopeBase != 1e6 {
		t.Errorf("qwen3 config %+v", c)
	}
	m = load(t, randmodel.TinyQwen2MoE())
	if c := m.Config; c.FeedForward != 64 || c.SharedFeedForward != 96 || !c.ExpertWeightsRaw || c.Experts != 4 {
		t.Errorf("qwen2moe config %+v", c)
	}
	if m.layers[0].qwen.bq == nil || m.layers[0].qwen.sharedGate == nil {
		t.Error("qwen2moe biases or shared expert not loaded")
	}
}

func TestUnknownArchitectureIsAnError(t *testing.T) {
	path := patch(t, fixture(t, randmodel.TinyQwen2()), []byte("qwen2"), []byte("qwer2"))
	if _, err := Load(path); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "qwer2") {
		t.Errorf("Load: %v, want an unsupported architecture error that names it", err)
	}
}

// TestQwenMatchesOllama is the correctness anchor for the Qwen families:
// greedy tokens and log-probabilities equal Ollama's (llama.cpp for qwen2
// and qwen2moe, Ollama's own engine for qwen3 and qwen3moe), within the
// case's tolerance for the pure-Go kernels (measured: at most 7.4e-4, qwen3
// in F16; 1e-6 to 7e-5 in F32) and simdTol for the SIMD ones.
func TestQwenMatchesOllama(t *testing.T) {
	srv := ollamatest.Start(t)
	dir := t.TempDir()
	for _, tc := range qwenCases() {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".gguf")
			if err := randmodel.WriteFile(path, tc.cfg); err != nil {
				t.Fatal(err)
			}
			srv.CreateModel(t, tc.name, path)
			m, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			compareWithOllama(t, srv.Client(), tc.name, m, engineTol(tc.tol))
		})
	}
}

// TestNormTopKProbIsRead: a qwen3moe file that says norm_top_k_prob false
// (as Ollama's converter can write) keeps its top-k weights as they are.
func TestNormTopKProbIsRead(t *testing.T) {
	a, _ := lookupArch("qwen3moe")
	for _, norm := range []bool{true, false} {
		kv := ggml.KV{"general.architecture": "qwen3moe", "qwen3moe.norm_top_k_prob": norm,
			"qwen3moe.expert_feed_forward_length": uint32(64)}
		c := Config{Arch: "qwen3moe", Experts: 8, ExpertsUsed: 2, FeedForward: 512}
		if err := a.configure(kv, &c); err != nil {
			t.Fatal(err)
		}
		if c.ExpertWeightsRaw == norm || c.FeedForward != 64 {
			t.Errorf("norm_top_k_prob %v: raw weights %v, experts of %d", norm, c.ExpertWeightsRaw, c.FeedForward)
		}
	}
}

// TestRopeNeoXSharesItsAngles: computing the cosines and sines once per
// position turns every head exactly as computing them per head did.
func TestRopeNeoXSharesItsAngles(t *testing.T) {
	perHead := func(x []float32, heads, headDim, ropeDim, pos int, base float32) {
		thetaScale := float32(math.Pow(float64(base), float64(float32(-2)/float32(ropeDim))))
		half := ropeDim / 2
		for h := range heads {
			v := x[h*headDim : h*headDim+ropeDim]
			theta := float32(pos)
			for i := range half {
				cos, sin := float32(math.Cos(float64(theta))), float32(math.Sin(float64(theta)))
				x0, x1 := v[i], v[i+half]
				v[i] = float32(x0*cos) - float32(x1*sin)
				v[i+half] = float32(x0*sin) + float32(x1*cos)
				theta *= thetaScale
			}
		}
	}
	for _, tc := range []struct{ heads, headDim, ropeDim int }{{8, 64, 64}, {2, 128, 128}, {4, 64, 32}, {1, 512, 512}} {
		for _, pos := range []int{0, 1, 17, 1000, 32767} {
			x := make([]float32, tc.heads*tc.headDim)
			for i := range x {
				x[i] = float32(math.Sin(float64(i*7+pos))) * 3
			}
			want := slices.Clone(x)
			perHead(want, tc.heads, tc.headDim, tc.ropeDim, pos, 1e6)
			ropeNeoX(x, tc.heads, tc.headDim, tc.ropeDim, pos, 1e6)
			for i := range x {
				if math.Float32bits(x[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%+v pos %d: x[%d] = %v, per head %v", tc, pos, i, x[i], want[i])
				}
			}
		}
	}
}
