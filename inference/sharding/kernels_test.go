package sharding

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/p2ptest"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// TestSpotChecksFollowAnnouncedKernels: a host's shard summary announces
// the kernels of its process, and a runner spot-checking every expert call
// pairs two hosts only when their summaries announce the same set: hosts
// announcing avx2 and neon are never compared (every sampled call goes
// unpaired, nobody is convicted), two announcing avx2 are.
func TestSpotChecksFollowAnnouncedKernels(t *testing.T) {
	wait.NoLeak(t)
	c := randmodel.Tiny()
	c.Name, c.Layers, c.Experts, c.ExpertsUsed = "mwpeer-test-kernels", 2, 4, 2
	dir := t.TempDir()
	gguf := filepath.Join(dir, "model.gguf")
	if err := randmodel.WriteFile(gguf, c); err != nil {
		t.Fatal(err)
	}
	split := filepath.Join(dir, "split")
	m, err := shard.Split(gguf, split)
	if err != nil {
		t.Fatal(err)
	}
	isExpert := func(sh shard.Shard) bool { return sh.Role == shard.RoleExpert }
	ha, hb := p2ptest.NewHost(t), p2ptest.NewHost(t)
	a := open(t, ha, storeWith(t, m, split, isExpert), nil, &tallies{})
	open(t, hb, storeWith(t, m, split, isExpert), nil, &tallies{})
	sums := a.Summaries()
	if len(sums) != 1 || sums[0].Kernels != llama.Kernels() || sums[0].Count() != c.Layers*c.Experts {
		t.Fatalf("host's summaries %+v, want one of %d experts with kernels %q", sums, c.Layers*c.Experts, llama.Kernels())
	}
	summary := func(kernels string) experts.ShardSummary {
		s := sums[0]
		s.Kernels = kernels
		return s
	}

	for _, tc := range []struct {
		a, b   string
		paired bool
	}{
		{"avx2", "neon", false},
		{"avx2", "avx2", true},
	} {
		rh := p2ptest.NewHost(t)
		p2ptest.Connect(t, rh, ha)
		p2ptest.Connect(t, rh, hb)
		cat := catalog{
			{Announcement: experts.Announcement{Peer: ha.ID().String(), Shards: []experts.ShardSummary{summary(tc.a)}}},
			{Announcement: experts.Announcement{Peer: hb.ID().String(), Shards: []experts.ShardSummary{summary(tc.b)}}},
		}
		runner := openVerifying(t, rh, storeWith(t, m, split, func(sh shard.Shard) bool { return sh.Role == shard.RoleDense }), cat)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := runner.Backend().Generate(ctx, inference.Request{Model: m.Name, Prompt: "the quick brown fox", MaxTokens: 8}, func(inference.Chunk) error { return nil })
		cancel()
		if err != nil {
			t.Fatalf("%s and %s: %v", tc.a, tc.b, err)
		}
		runner.mu.Lock()
		x := runner.models[m.ID()].experts
		runner.mu.Unlock()
		if got := x.Kernels(hb.ID()); got != tc.b {
			t.Fatalf("runner's kernels of host b: %q, want %q", got, tc.b)
		}
		checks, unpaired := x.Checks.Load(), x.Unpaired.Load()
		t.Logf("%s and %s: %d remote calls, %d checks, %d unpaired", tc.a, tc.b, x.RemoteCalls.Load(), checks, unpaired)
		if lm := runner.Local(); len(lm) != 1 || lm[0].Checks != checks || lm[0].Unpaired != unpaired {
			t.Fatalf("%s and %s: /api/experts' figures %+v", tc.a, tc.b, lm)
		}
		if x.Caught.Load() != 0 {
			t.Fatalf("%s and %s: %d honest hosts convicted", tc.a, tc.b, x.Caught.Load())
		}
		if tc.paired && (checks == 0 || unpaired != 0) || !tc.paired && (checks != 0 || unpaired == 0) {
			t.Fatalf("%s and %s: %d checks, %d unpaired", tc.a, tc.b, checks, unpaired)
		}
	}
}

// openVerifying opens a runner that spot-checks every remote expert call.
func openVerifying(t *testing.T, h host.Host, dir string, cat catalog) *Sharding {
	s, err := Open(Config{Host: h, Dirs: []string{dir}, Catalog: cat, Capacity: 2, VerifyExperts: 1,
		Key: h.Peerstore().PrivKey(h.ID()), StoreTally: new(tallies).store, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	return s
}
