package mwpeer

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/inference/sharding"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// TestQwenShardsFetchedAndRunAcrossPeers: a qwen3moe and a qwen2moe model
// (routed experts, and for qwen2moe a shared expert behind its gate) are
// split; one seed peer holds every shard. Three hosts asked to host two
// thirds of the experts each and a runner asked to run the model fetch
// their shards from the swarm over libp2p (the shard protocol). The seed
// then leaves, and a greedy answer through the runner, whose experts all
// run on the hosts from the fetched shards, is bit-identical to running the
// whole file locally: the same tokens with the same log-probabilities.
func TestQwenShardsFetchedAndRunAcrossPeers(t *testing.T) {
	q2 := randmodel.TinyQwen2MoE()
	q2.Layers = 3
	for _, c := range []randmodel.Config{randmodel.TinyQwen3MoE(), q2} {
		t.Run(c.Arch, func(t *testing.T) {
			f := qwenShardedFixture(t, c)
			id := f.man.ID()
			// Host h (1..3) holds every expert e with e%3 != h-1, so that
			// each expert of every layer is on two hosts.
			peers := startSwarm(t, 5, func(i int, cfg *Config) {
				cfg.HTTPAddr = "127.0.0.1:0"
				cfg.Domains = []string{"general"}
				cfg.Models = nil
				cfg.Engine = EngineNone
				switch {
				case i == 0:
					cfg.Shards = []string{f.split}
				case i <= 3:
					var es []int
					for e := range c.Experts {
						if e%3 != i-1 {
							es = append(es, e)
						}
					}
					cfg.HostExperts = []sharding.HostSpec{{Model: id[:12], AllLayers: true, Experts: es}}
				default:
					cfg.HostExperts = []sharding.HostSpec{{Model: id[:12], Dense: true}}
				}
			})
			seed, hosts, runner := peers[0], peers[1:4], peers[4]
			wait.For(t, slow(60*time.Second), "the hosts and the runner fetch their shards", func() error {
				for i, p := range peers[1:] {
					want := 0 // the runner: the dense shard
					if i < 3 {
						want = c.Layers * (c.Experts - (c.Experts+2-i)/3)
					}
					if err := holdsShards(p, f.man, want); err != nil {
						return fmt.Errorf("peer %d: %w", i+1, err)
					}
				}
				return nil
			})
			seed.Close()
			wait.For(t, slow(30*time.Second), "the runner sees every expert on two live hosts, the seed gone", func() error {
				v := runner.Experts()
				for _, m := range v.Models {
					if m.ID != id {
						continue
					}
					if m.MinReplicas != 2 || m.Local == nil || !m.Local.Dense {
						return fmt.Errorf("min replicas %d, local %+v", m.MinReplicas, m.Local)
					}
					if _, ok := m.Hosts[seed.ID().String()]; ok {
						return fmt.Errorf("the seed still hosts")
					}
					return nil
				}
				return fmt.Errorf("the runner does not run %s", id[:12])
			})

			const n = 32
			prompt := "the quick brown fox"
			wantIDs, wantLps := localTokens(t, f.gguf, prompt, n)
			ctx, cancel := context.WithTimeout(context.Background(), slow(time.Minute))
			defer cancel()
			zero := 0.0
			var gotText []string
			var gotLps []float64
			if _, err := runner.backend.Generate(ctx, inference.Request{Model: f.man.Name, Prompt: prompt, Raw: true, MaxTokens: n, Temperature: &zero, Logprobs: true},
				func(ch inference.Chunk) error {
					for _, lp := range ch.Logprobs {
						gotText = append(gotText, lp.Token)
						gotLps = append(gotLps, lp.Logprob)
					}
					return nil
				}); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(gotText, wantIDs) || !slices.Equal(gotLps, wantLps) {
				t.Fatalf("across peers %q %v,\nlocal %q %v", gotText, gotLps, wantIDs, wantLps)
			}
			m := runner.Experts().Models[0]
			var served uint64
			for _, h := range hosts {
				for _, hm := range h.Experts().Models {
					if hm.ID == id && hm.Local != nil {
						served += hm.Local.Served
					}
				}
			}
			if m.Local.RemoteCalls == 0 || m.Local.LocalCalls != 0 || served == 0 {
				t.Fatalf("runner's calls: %d remote, %d local; hosts served %d", m.Local.RemoteCalls, m.Local.LocalCalls, served)
			}
			t.Logf("%s: %d tokens bit-identical; %d expert calls, all answered by the hosts", c.Arch, len(wantIDs), m.Local.RemoteCalls)
		})
	}
}

// qwenShardedFixture is newShardedFixture for config c.
func qwenShardedFixture(t *testing.T, c randmodel.Config) shardedFixture {
	t.Helper()
	dir := t.TempDir()
	f := shardedFixture{cfg: c, gguf: filepath.Join(dir, "model.gguf"), split: filepath.Join(dir, "split")}
	if err := randmodel.WriteFile(f.gguf, c); err != nil {
		t.Fatal(err)
	}
	m, err := shard.Split(f.gguf, f.split)
	if err != nil {
		t.Fatal(err)
	}
	f.man = m
	return f
}

// holdsShards reports whether p holds and serves what it was asked to
// host: experts expert shards (a host), or the dense shard (experts 0: the
// runner), all fetched into its store.
func holdsShards(p *Peer, man *shard.Manifest, experts int) error {
	st, err := shard.OpenStore(filepath.Join(p.cfg.DataDir, "shards"))
	if err != nil {
		return err
	}
	n := 0
	for _, sh := range man.Shards {
		if sh.Role == shard.RoleExpert && st.Has(sh.Hash) {
			n++
		}
	}
	if n != experts || (experts == 0) != st.Has(man.Dense().Hash) {
		return fmt.Errorf("%d expert shards of %d in the store, dense %v", n, experts, st.Has(man.Dense().Hash))
	}
	for _, m := range p.Experts().Models {
		if m.ID == man.ID() && m.Local != nil && m.Local.Fetch == "" && m.Local.Experts == experts && m.Local.Dense == (experts == 0) {
			return nil
		}
	}
	return fmt.Errorf("not serving them yet")
}

// localTokens is the model file run whole in this process: the reference
// tokens (as text) and log-probabilities of a greedy answer.
func localTokens(t *testing.T, path, prompt string, n int) ([]string, []float64) {
	t.Helper()
	m, err := llama.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var toks []string
	var lps []float64
	if _, _, err := m.Generate(context.Background(), prompt, llama.Options{MaxTokens: n}, nil, func(tok llama.Token) error {
		toks = append(toks, tok.Text)
		lps = append(lps, tok.Logprob)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return toks, lps
}
