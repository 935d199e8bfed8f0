package llama

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
)

// fuzzModels are small real models: MoE and dense, F32 and F16, about
// 12 to 40 KB each so that the fuzzer can afford to mutate them.
func fuzzModels(tb testing.TB) [][]byte {
	var out [][]byte
	for _, c := range []randmodel.Config{
		{Embedding: 8, Layers: 1, FeedForward: 16, Heads: 2, Experts: 2, ExpertsUsed: 1, Type: randmodel.F32, Seed: 1},
		{Embedding: 8, Layers: 2, FeedForward: 8, Heads: 2, KVHeads: 1, Type: randmodel.F32, Seed: 2},
		{Embedding: 32, Layers: 1, FeedForward: 32, Heads: 2, Experts: 2, ExpertsUsed: 2, Type: randmodel.F16, Seed: 3},
	} {
		var b bytes.Buffer
		if err := randmodel.Write(&b, c); err != nil {
			tb.Fatal(err)
		}
		out = append(out, b.Bytes())
	}
	return out
}

// FuzzRead loads GGUF files as Load does: any bytes give a model whose
// shape matches its tensors, or an error, never a panic, and no tensor is
// read beyond the file (so a small file cannot make it allocate much).
func FuzzRead(f *testing.F) {
	models := fuzzModels(f)
	for _, m := range models {
		fuzzcorpus.Add(f, m, false)
	}
	fuzzcorpus.Add(f, models[0], true)
	fuzzcorpus.Add(f, models[0][:len(models[0])/2], false) // cut short
	// Shapes a small file only claims: wide layers, many layers.
	fuzzcorpus.Add(f, setKV(f, models[1], "llama.embedding_length", 1<<20), false)
	fuzzcorpus.Add(f, setKV(f, models[1], "llama.block_count", 1<<31), false)
	fuzzcorpus.Add(f, setKV(f, models[0], "llama.expert_count", 1<<30), false)
	fuzzcorpus.Add(f, []byte("GGUF\x03\x00\x00\x00"), false)
	fuzzcorpus.Add(f, []byte("GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), false)
	f.Fuzz(func(t *testing.T, data []byte, withoutExperts bool) {
		if len(data) > 1<<20 {
			return
		}
		m, err := ReadWith(bytes.NewReader(data), ReadOptions{WithoutExperts: withoutExperts})
		if err != nil {
			return
		}
		c := m.Config
		if c.Embedding <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.Vocab <= 0 || len(m.layers) != c.Layers {
			t.Fatalf("loaded a model of shape %+v with %d layers", c, len(m.layers))
		}
		if m.size > int64(len(data)) {
			t.Fatalf("read %d bytes of tensors from a %d-byte file", m.size, len(data))
		}
		if c.Vocab != len(m.Vocab.tokens) {
			t.Fatalf("vocab %d, %d tokens", c.Vocab, len(m.Vocab.tokens))
		}
	})
}

// setKV returns model with the uint32 value of key set to v.
func setKV(tb testing.TB, model []byte, key string, v uint32) []byte {
	k := binary.LittleEndian.AppendUint64(nil, uint64(len(key)))
	k = append(k, key...)
	i := bytes.Index(model, k)
	if i < 0 {
		tb.Fatalf("no key %s", key)
	}
	out := bytes.Clone(model)
	binary.LittleEndian.PutUint32(out[i+len(k)+4:], v)
	return out
}
