package shard

import (
	"testing"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// benchModel is a generated MoE model of about 230 MB (F16): 3 layers of 8
// experts of 9 MiB each, and a 25 MB dense part.
func benchModel() randmodel.Config {
	c := randmodel.Tiny()
	c.Name = "mwpeer-bench-moe"
	c.Embedding, c.FeedForward, c.Heads, c.KVHeads, c.RopeDim = 1024, 1536, 8, 8, 128
	c.Layers, c.Experts = 3, 8
	c.Type = randmodel.F16
	return c
}

// BenchmarkSplit measures cutting the benchmark model into shards.
func BenchmarkSplit(b *testing.B) {
	src := genModel(b, benchModel(), false)
	var size int64
	for b.Loop() {
		m, err := Split(src, b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		size = m.Size()
	}
	b.SetBytes(size)
}
