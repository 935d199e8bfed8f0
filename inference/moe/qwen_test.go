package moe

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// qwenMoE are the Qwen MoE families: qwen2moe with its shared expert, which
// stays in the dense shard, and qwen3moe with eight routed experts.
func qwenMoE() []randmodel.Config {
	q2 := randmodel.TinyQwen2MoE()
	q2.Layers = 3
	return []randmodel.Config{q2, randmodel.TinyQwen3MoE()}
}

// TestQwenShardsLoadBitwiseEqual: a qwen2moe or qwen3moe model split into
// shards and loaded back (the dense shard, with the shared expert, plus the
// expert shards) computes exactly what the whole model computes.
func TestQwenShardsLoadBitwiseEqual(t *testing.T) {
	for _, c := range qwenMoE() {
		t.Run(c.Arch, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "model.gguf")
			if err := randmodel.WriteFile(src, c); err != nil {
				t.Fatal(err)
			}
			full, err := llama.Load(src)
			if err != nil {
				t.Fatal(err)
			}
			defer full.Close()
			dir := t.TempDir()
			m, err := shard.SplitWith(src, dir, shard.SplitOptions{PieceSize: 16 << 10})
			if err != nil {
				t.Fatal(err)
			}
			if m.Architecture != c.Arch || m.Shape.FeedForward != c.FeedForward {
				t.Errorf("manifest says %s with experts of %d, want %s of %d", m.Architecture, m.Shape.FeedForward, c.Arch, c.FeedForward)
			}
			s, err := shard.OpenStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			dense, err := LoadDense(s, m.ID())
			if err != nil {
				t.Fatal(err)
			}
			defer dense.Close()
			if dense.Config != full.Config {
				t.Errorf("dense config %+v, want %+v", dense.Config, full.Config)
			}
			experts := make(storeExperts)
			for l := range c.Layers {
				for e := range c.Experts {
					x, err := LoadExpert(s, m.ID(), l, e)
					if err != nil {
						t.Fatal(err)
					}
					experts[[2]int{l, e}] = x
				}
			}
			ctx := context.Background()
			a, b := full.NewState(64, nil), dense.NewState(64, experts)
			for _, toks := range [][]int{{1, 72, 101, 108}, {108, 111}} {
				la, err := a.Forward(ctx, toks)
				if err != nil {
					t.Fatal(err)
				}
				lb, err := b.Forward(ctx, toks)
				if err != nil {
					t.Fatal(err)
				}
				if !bitsEqual([][]float32{la}, [][]float32{lb}) {
					t.Fatal("logits of dense shard + expert shards differ from the full model's")
				}
			}
		})
	}
}

// TestQwenDistributedEqualsLocal: the routed experts of a qwen2moe or
// qwen3moe model on three other peers (each holding some, each expert on
// two) give exactly the tokens and log-probabilities of local execution,
// and still do when a host is killed mid-answer.
func TestQwenDistributedEqualsLocal(t *testing.T) {
	for _, c := range qwenMoE() {
		t.Run(c.Arch, func(t *testing.T) {
			m := loadModel(t, c)
			want, err := generate(t, m, nil, 32, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := newSwarm(t, m, 3, replicated(3, c.Experts))
			x := s.experts(t)
			got, err := generate(t, m, x, 32, nil)
			if err != nil {
				t.Fatal(err)
			}
			same(t, got, want)
			if x.RemoteCalls.Load() == 0 || x.LocalCalls.Load() != 0 {
				t.Fatalf("remote %d local %d", x.RemoteCalls.Load(), x.LocalCalls.Load())
			}
			got, err = generate(t, m, x, 32, func(n int) {
				if n == 8 {
					s.servers[0].Close()
					s.hosts[0].Close()
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			same(t, got, want)
			if x.Failovers.Load() == 0 {
				t.Fatal("no failover recorded after a host died")
			}
		})
	}
}
