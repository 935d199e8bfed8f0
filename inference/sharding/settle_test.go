package sharding

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/p2ptest"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/receipt"
)

// catalog is a fixed catalog.
type catalog []experts.Entry

func (c catalog) Select(keep func(*experts.Entry) bool) []experts.Entry {
	var out []experts.Entry
	for i := range c {
		if keep(&c[i]) {
			out = append(out, c[i])
		}
	}
	return out
}

// tallies is a StoreTally hook.
type tallies struct {
	mu  sync.Mutex
	all []*receipt.SignedTally
}

func (l *tallies) store(t *receipt.SignedTally) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, t)
	return nil
}

func (l *tallies) list() []*receipt.SignedTally {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*receipt.SignedTally(nil), l.all...)
}

// storeWith copies the manifest and the shards keep picks from the split
// in dir into a new store directory.
func storeWith(t *testing.T, m *shard.Manifest, dir string, keep func(shard.Shard) bool) string {
	out := t.TempDir()
	for _, sub := range []string{"manifests", "blobs"} {
		if err := os.MkdirAll(filepath.Join(out, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(out, "manifests", m.ID()+".json"), m.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sh := range m.Shards {
		if !keep(sh) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256-"+sh.Hash))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, "blobs", "sha256-"+sh.Hash), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func open(t *testing.T, h host.Host, dir string, cat catalog, l *tallies) *Sharding {
	s, err := Open(Config{Host: h, Dirs: []string{dir}, Catalog: cat, Capacity: 2,
		Key: h.Peerstore().PrivKey(h.ID()), StoreTally: l.store, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	return s
}

// TestGenerationEndSettlesExpertCalls: a runner holding only the dense
// shard generates with the experts of a host; when the generation ends,
// the two settle, and both hold the same both-signed tally of the calls.
func TestGenerationEndSettlesExpertCalls(t *testing.T) {
	wait.NoLeak(t)
	c := randmodel.Tiny()
	c.Name, c.Layers, c.Experts, c.ExpertsUsed = "mwpeer-test-tally", 2, 4, 2
	dir := t.TempDir()
	gguf := filepath.Join(dir, "model.gguf")
	if err := randmodel.WriteFile(gguf, c); err != nil {
		t.Fatal(err)
	}
	m, err := shard.Split(gguf, filepath.Join(dir, "split"))
	if err != nil {
		t.Fatal(err)
	}
	split := filepath.Join(dir, "split")

	rh, hh := p2ptest.NewHost(t), p2ptest.NewHost(t)
	p2ptest.Connect(t, rh, hh)
	var paid, earned tallies
	host := open(t, hh, storeWith(t, m, split, func(sh shard.Shard) bool { return sh.Role == shard.RoleExpert }), nil, &earned)
	sum := experts.NewShardSummary(m.ID(), m.Name, c.Layers, c.Experts)
	for l := range c.Layers {
		for e := range c.Experts {
			sum.Set(l, e)
		}
	}
	cat := catalog{{Announcement: experts.Announcement{Peer: hh.ID().String(), Shards: []experts.ShardSummary{sum}}}}
	runner := open(t, rh, storeWith(t, m, split, func(sh shard.Shard) bool { return sh.Role == shard.RoleDense }), cat, &paid)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := runner.Backend().Generate(ctx, inference.Request{Model: m.Name, Prompt: "the quick brown fox", MaxTokens: 8}, func(inference.Chunk) error { return nil }); err != nil {
		t.Fatal(err)
	}
	served, _, _ := host.Counters()
	wait.For(t, 10*time.Second, "runner and host hold the same signed tally", func() error {
		p, e := paid.list(), earned.list()
		if len(p) != 1 || len(e) != 1 {
			return fmt.Errorf("runner holds %d tallies, host %d", len(p), len(e))
		}
		if string(p[0].Marshal()) != string(e[0].Marshal()) {
			return fmt.Errorf("they differ")
		}
		return p[0].Verify()
	})
	tl := paid.list()[0]
	if tl.Calls != served || tl.Model != m.ID() || tl.Worker != hh.ID() || tl.Payer != rh.ID() ||
		tl.Flops != 6*uint64(c.Embedding*c.FeedForward)*tl.Rows {
		t.Fatalf("tally %+v; the host served %d calls", tl.Tally, served)
	}
}
