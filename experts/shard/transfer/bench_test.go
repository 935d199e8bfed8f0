package transfer

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// benchModel is a generated MoE model of about 230 MB (F16): 3 layers of 8
// experts of 9 MiB each, and a 25 MB dense part (shard's BenchmarkSplit cuts
// the same).
func benchModel() randmodel.Config {
	c := randmodel.Tiny()
	c.Name = "mwpeer-bench-moe"
	c.Embedding, c.FeedForward, c.Heads, c.KVHeads, c.RopeDim = 1024, 1536, 8, 8, 128
	c.Layers, c.Experts = 3, 8
	c.Type = randmodel.F16
	return c
}

// BenchmarkFetch measures a fresh peer fetching every shard of the
// benchmark model from two peers over loopback TCP.
func BenchmarkFetch(b *testing.B) {
	dir := b.TempDir()
	m, err := shard.Split(genModel(b, benchModel()), dir)
	if err != nil {
		b.Fatal(err)
	}
	s1, s2 := seed(b, dir), seed(b, dir)
	c := newHost(b)
	connect(b, c, s1.h)
	connect(b, c, s2.h)
	b.SetBytes(m.Size())
	var took time.Duration
	for b.Loop() {
		s, err := shard.OpenStore(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		f := &Fetcher{Host: c, Store: s, Sources: func(context.Context, string) []peer.ID { return []peer.ID{s1.h.ID(), s2.h.ID()} }}
		start := time.Now()
		if err := f.Fetch(context.Background(), m, m.Shards); err != nil {
			b.Fatal(err)
		}
		took += time.Since(start)
	}
	b.Logf("%d shards, %d bytes; %.0f MB/s", len(m.Shards), m.Size(), float64(m.Size())*float64(b.N)/took.Seconds()/1e6)
}
