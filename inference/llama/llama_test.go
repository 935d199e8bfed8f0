package llama

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// fixture writes c to a temporary file and returns its path.
func fixture(t testing.TB, c randmodel.Config) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.gguf")
	if err := randmodel.WriteFile(path, c); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t testing.TB, c randmodel.Config) *Model {
	t.Helper()
	m, err := Load(fixture(t, c))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestLoadReadsShape(t *testing.T) {
	m := load(t, randmodel.Tiny())
	want := Config{Arch: "llama", Name: "mwpeer-tiny-moe", Embedding: 64, Layers: 2, FeedForward: 128, Heads: 4, KVHeads: 4, HeadDim: 16,
		RopeDim: 16, RopeBase: 10000, NormEpsilon: 1e-5, ContextLength: 512, Experts: 4, ExpertsUsed: 2, Vocab: 259}
	if m.Config != want {
		t.Errorf("config %+v, want %+v", m.Config, want)
	}
}

// TestEncodeLikeLlamaCpp: "Hello" is <s>, "▁" spelled in its 3 bytes, then 5 bytes,
// as llama.cpp (in Ollama) tokenizes it with this vocabulary.
func TestEncodeLikeLlamaCpp(t *testing.T) {
	m := load(t, randmodel.Tiny())
	var want []int
	want = append(want, randmodel.BOSToken)
	for _, b := range []byte("▁Hello") {
		want = append(want, 3+int(b))
	}
	if got := m.Vocab.Encode("Hello"); !slices.Equal(got, want) {
		t.Errorf("Encode(Hello) = %v, want %v", got, want)
	}
	if got := m.Vocab.Encode("a<s>b"); !slices.Contains(got[1:], randmodel.BOSToken) {
		t.Errorf("Encode(a<s>b) = %v: the control token in the text was not recognized", got)
	}
}

func TestEncodeMergesWordsByScore(t *testing.T) {
	c := randmodel.Tiny()
	c.Words = []string{"▁the", "he", "▁t", "th"}
	m := load(t, c)
	got := m.Vocab.Encode("the then")
	var pieces []string
	for _, id := range got[1:] {
		pieces = append(pieces, m.Vocab.Token(id))
	}
	want := []string{"▁the", "▁the", "<0x6E>"}
	if !slices.Equal(pieces, want) {
		t.Errorf("pieces %q, want %q", pieces, want)
	}
}

// patch returns a copy of the file at path with old replaced by new once.
func patch(t *testing.T, path string, old, new []byte) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, old) {
		t.Fatalf("%q not in %s", old, path)
	}
	data = bytes.Replace(data, old, new, 1)
	out := filepath.Join(t.TempDir(), "patched.gguf")
	if err := os.WriteFile(out, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLoadNamesWhatItCannotRun(t *testing.T) {
	path := fixture(t, randmodel.TinyDense())
	arch := []byte("general.architecture\x08\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00llama")
	gemma := []byte("general.architecture\x08\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00gemma")
	_, err := Load(patch(t, path, arch, gemma))
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "gemma") {
		t.Errorf("gemma architecture: err %v, want ErrUnsupported naming gemma", err)
	}
	// token_embd.weight: 2 dims 64, 259, type F32 (0) -> Q4_1 (3).
	embd := []byte("token_embd.weight\x02\x00\x00\x00\x40\x00\x00\x00\x00\x00\x00\x00\x03\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	q41 := slices.Clone(embd)
	q41[len(q41)-4] = 3
	_, err = Load(patch(t, path, embd, q41))
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "Q4_1") {
		t.Errorf("Q4_1 tensor: err %v, want ErrUnsupported naming Q4_1", err)
	}
}

// TestPrefillEqualsStepwise: running a prompt in one batch or token by token
// gives the same logits.
func TestPrefillEqualsStepwise(t *testing.T) {
	for _, c := range []randmodel.Config{randmodel.Tiny(), randmodel.TinyDense()} {
		m := load(t, c)
		ids := m.Vocab.Encode("The quick brown fox jumps over the lazy dog")
		batch, err := m.NewState(0, nil).Forward(context.Background(), ids)
		if err != nil {
			t.Fatal(err)
		}
		st := m.NewState(0, nil)
		var step []float32
		for _, id := range ids {
			if step, err = st.Forward(context.Background(), []int{id}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range batch {
			if d := math.Abs(float64(batch[i] - step[i])); d > 1e-4*math.Max(1, math.Abs(float64(step[i]))) {
				t.Fatalf("%s: logit %d: batch %v, stepwise %v", c.Name, i, batch[i], step[i])
			}
		}
	}
}

// countingExperts wraps the local experts and counts calls.
type countingExperts struct {
	Experts
	calls atomic.Int64
}

func (c *countingExperts) Apply(ctx context.Context, layer, expert int, in, out [][]float32) error {
	c.calls.Add(1)
	return c.Experts.Apply(ctx, layer, expert, in, out)
}

// TestExpertsSeam: a MoE model asks its Experts for every expert it uses, and a
// wrapper that forwards to the local experts changes nothing.
func TestExpertsSeam(t *testing.T) {
	m := load(t, randmodel.Tiny())
	ce := &countingExperts{Experts: m.Local()}
	gen := func(e Experts) []int {
		var ids []int
		_, _, err := m.Generate(context.Background(), "Hello", Options{MaxTokens: 8}, e, func(tok Token) error {
			ids = append(ids, tok.ID)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	local, wrapped := gen(nil), gen(ce)
	if !slices.Equal(local, wrapped) {
		t.Errorf("through the seam %v, locally %v", wrapped, local)
	}
	if ce.calls.Load() == 0 {
		t.Error("the MoE layer never called its Experts")
	}
}

func TestBackendServesModel(t *testing.T) {
	b, err := NewBackend(fixture(t, randmodel.Tiny()), BackendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	models, err := b.Models(context.Background())
	if err != nil || len(models) != 1 || models[0].Name != "mwpeer-tiny-moe" || !strings.HasPrefix(models[0].Digest, "sha256:") {
		t.Fatalf("Models = %+v, %v", models, err)
	}
	zero := 0.0
	req := inference.Request{Model: "mwpeer-tiny-moe", Prompt: "Hello", Raw: true, MaxTokens: 12, Temperature: &zero, Logprobs: true, TopLogprobs: 3}
	run := func(req inference.Request) (string, inference.Final) {
		var sb strings.Builder
		n := 0
		f, err := b.Generate(context.Background(), req, func(c inference.Chunk) error {
			sb.WriteString(c.Text)
			n += len(c.Logprobs)
			for _, lp := range c.Logprobs {
				if len(lp.Top) != 3 || lp.Top[0].Logprob < lp.Logprob {
					t.Errorf("logprob %+v: want 3 alternatives, the first the most likely", lp)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n != f.CompletionTokens {
			t.Errorf("%d logprobs for %d tokens", n, f.CompletionTokens)
		}
		return sb.String(), f
	}
	text, f := run(req)
	if f.CompletionTokens != 12 || f.FinishReason != inference.FinishLength || f.PromptTokens != 9 || !f.HasLogprob {
		t.Errorf("final %+v", f)
	}
	// Continuation: generating after the first half gives the second half.
	req2 := req
	req2.Continue = text[:6]
	req2.MaxTokens = 6
	rest, _ := run(req2)
	if text[:6]+rest != text {
		t.Errorf("continued %q+%q, want %q", text[:6], rest, text)
	}
	// Sampling with a seed is repeatable.
	warm, seed := 1.0, int64(42)
	req.Temperature, req.Seed = &warm, &seed
	a, _ := run(req)
	bb, _ := run(req)
	if a != bb {
		t.Errorf("seeded samples differ: %q, %q", a, bb)
	}
	req.Model = "other"
	if _, err := b.Generate(context.Background(), req, func(inference.Chunk) error { return nil }); !errors.Is(err, inference.ErrUnknownModel) {
		t.Errorf("unknown model: err %v", err)
	}
}

// TestLoadRejectsLyingHeaders: a GGUF header that claims an absurd string or
// array length is an error, not a crash or a huge allocation.
func TestLoadRejectsLyingHeaders(t *testing.T) {
	le := binary.LittleEndian
	for name, tail := range map[string][]byte{
		"string length": le.AppendUint64(nil, 1<<62),
		"array length":  le.AppendUint64(le.AppendUint32(le.AppendUint32(append(le.AppendUint64(nil, 1), 'k'), 9), 4), 1<<40),
	} {
		var b []byte
		b = append(b, "GGUF"...)
		b = le.AppendUint32(b, 3)
		b = le.AppendUint64(b, 0) // tensors
		b = le.AppendUint64(b, 1) // key-value pairs
		b = append(b, tail...)
		if _, err := Read(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestActiveParamsCountOnlyTheExpertsUsed(t *testing.T) {
	dense := Config{Embedding: 64, Layers: 2, FeedForward: 128, Heads: 4, KVHeads: 4, HeadDim: 16, Vocab: 259}
	moe := dense
	moe.Experts, moe.ExpertsUsed = 8, 2
	ffn := int64(3 * 64 * 128 * 2) // one expert's FFN, per layer and used expert
	if got, want := moe.ActiveParams()-dense.ActiveParams(), int64(2)*(ffn/2+64*8); got != want {
		t.Fatalf("MoE with 2 of 8 experts uses %d more than dense, want %d (one more expert's FFN and the router, per layer)", got, want)
	}
	// embeddings, output, attention, norms: 2·259·64 + 2·(4·64·64 + 2·64) + 64
	if got, want := dense.ActiveParams(), int64(2*259*64+2*(4*64*64+3*64*128+2*64)+64); got != want {
		t.Fatalf("dense %d, want %d", got, want)
	}
}
