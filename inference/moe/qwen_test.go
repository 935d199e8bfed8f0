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
			checkWireBytes(t, m, c, x, len(want.ids))
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

// checkWireBytes: the expert calls of a generation of n tokens carry the
// rows of the routed experts only. Each position (prompt tokens and every
// generated token but the last) sends every layer's row to ExpertsUsed
// experts and reads their answers back, 2 × Embedding × ExpertsUsed ×
// Layers float32 values, plus the calls' headers (and the verifier's
// spot-checks); a shared expert (qwen2moe) runs on the dense shard and adds
// nothing. Were it hosted like a routed expert, one more row would travel
// per layer: the bound leaves room for headers, not for that. The healthy
// swarm of the test has no verifier.
func checkWireBytes(t *testing.T, m *llama.Model, c randmodel.Config, x *Experts, n int) {
	t.Helper()
	positions := len(m.Vocab.Encode("the quick brown fox")) + n - 1
	wire := float64(x.Client.BytesOut.Load()+x.Client.BytesIn.Load()) / float64(positions)
	rows := float64(2 * c.Embedding * c.ExpertsUsed * c.Layers * 4)
	// One more row per layer and position: what a remote shared expert
	// would add, and more than the headers take.
	bound := float64(2 * c.Embedding * (c.ExpertsUsed + 1) * c.Layers * 4)
	t.Logf("%s: %.0f bytes on the wire per token (routed rows alone %.0f, bound %.0f); shared expert of %d: local",
		c.Arch, wire, rows, bound, c.SharedFeedForward)
	if wire < rows || wire >= bound {
		t.Errorf("%.0f bytes per token, want at least %.0f and below %.0f", wire, rows, bound)
	}
}
