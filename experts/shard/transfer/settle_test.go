package transfer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference/tally"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/receipt"
)

// tallies is a Store hook that keeps what it is given.
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

// settlingSeeder is a seeder that settles tallies of what it sent.
func settlingSeeder(t *testing.T, dir string) (*seeder, *tallies) {
	sd := seed(t, dir)
	l := &tallies{}
	svc := tally.NewService(sd.h, tally.ServiceConfig{Key: sd.h.Peerstore().PrivKey(sd.h.ID()), Shards: sd.srv.Meter, Store: l.store})
	t.Cleanup(func() { svc.Close() })
	return sd, l
}

// TestFetchSettlesWithEachSource: a fetch from two sources ends with one
// both-signed tally with each, held by both sides, whose bytes sum to the
// shards' sizes.
func TestFetchSettlesWithEachSource(t *testing.T) {
	m, dir := splitTiny(t)
	a, atl := settlingSeeder(t, dir)
	b, btl := settlingSeeder(t, dir)
	c := newHost(t)
	connect(t, c, a.h)
	connect(t, c, b.h)
	s, err := shard.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddManifest(m.Bytes()); err != nil {
		t.Fatal(err)
	}
	var paid tallies
	f := &Fetcher{Host: c, Store: s, Sources: func(context.Context, string) []peer.ID { return []peer.ID{a.h.ID(), b.h.ID()} },
		Payer: &tally.Payer{Host: c, Key: c.Peerstore().PrivKey(c.ID()), Store: paid.store}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Fetch(ctx, m, m.Shards); err != nil {
		t.Fatal(err)
	}
	got := paid.list()
	if len(got) != 2 {
		t.Fatalf("the fetcher holds %d tallies, want one per source", len(got))
	}
	var bytes, calls uint64
	for _, tl := range got {
		if err := tl.Verify(); err != nil {
			t.Fatalf("tally with %s: %v", tl.Worker.ShortString(), err)
		}
		theirs := atl.list()
		if tl.Worker == b.h.ID() {
			theirs = btl.list()
		}
		if len(theirs) != 1 || string(theirs[0].Marshal()) != string(tl.Marshal()) {
			t.Fatalf("source %s holds %d tallies, not the fetcher's", tl.Worker.ShortString(), len(theirs))
		}
		if tl.Kind != receipt.KindShard || tl.Payer != c.ID() || tl.Bytes == 0 || tl.Cost != receipt.ShardCost(tl.Bytes) {
			t.Fatalf("tally %+v", tl.Tally)
		}
		bytes += tl.Bytes
		calls += tl.Calls
	}
	if bytes != uint64(m.Size()) {
		t.Fatalf("tallies count %d bytes, the shards hold %d", bytes, m.Size())
	}
	if sent := a.srv.Sent() + b.srv.Sent(); uint64(sent) != bytes {
		t.Fatalf("the sources sent %d bytes, the tallies count %d", sent, bytes)
	}
	t.Logf("%d bytes in %d pieces over two sources", bytes, calls)
	if f.Meter.Len() != 0 || a.srv.Meter.Len() != 0 || b.srv.Meter.Len() != 0 {
		t.Fatal("counts left after settling")
	}
}

// TestCorruptSourceIsNotPaid: bytes that fail verification earn nothing:
// the corrupt source counted more than the fetcher verified, so its tally
// of shard bytes is disputed, while the good source's is signed by both.
// (The manifest, which the corrupt source sent intact and settled on its
// own, is paid.)
func TestCorruptSourceIsNotPaid(t *testing.T) {
	m, dir := splitTiny(t)
	good, gtl := settlingSeeder(t, dir)
	bad, btl := settlingSeeder(t, dir)
	bad.corrupt(t, m.PieceSize)
	c := newHost(t)
	connect(t, c, good.h)
	connect(t, c, bad.h)
	s, err := shard.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var paid tallies
	f := &Fetcher{Host: c, Store: s, Sources: func(context.Context, string) []peer.ID { return []peer.ID{bad.h.ID(), good.h.ID()} },
		Payer: &tally.Payer{Host: c, Key: c.Peerstore().PrivKey(c.ID()), Store: paid.store}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := f.FetchManifest(ctx, m.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Fetch(ctx, got, got.Shards); err != nil {
		t.Fatal(err)
	}
	var goodBytes uint64
	disputed := 0
	for _, tl := range paid.list() {
		signed := tl.Verify() == nil
		if tl.Worker == bad.h.ID() && signed && tl.Bytes != uint64(len(m.Bytes())) {
			t.Fatalf("the corrupt source got a signed tally for %d bytes", tl.Bytes)
		}
		if tl.Worker == bad.h.ID() && !signed {
			disputed++
		}
		if tl.Worker == good.h.ID() {
			if !signed {
				t.Fatalf("the good source's tally: %v", tl.Verify())
			}
			goodBytes += tl.Bytes
		}
	}
	if goodBytes == 0 || len(gtl.list()) == 0 {
		t.Fatal("the good source was not paid")
	}
	if disputed != 1 {
		t.Fatalf("%d disputed tallies with the corrupt source, want 1", disputed)
	}
	wait.For(t, 5*time.Second, "the corrupt source holds the disputed tally", func() error {
		for _, tl := range btl.list() {
			if tl.WorkerSig == nil {
				return nil
			}
		}
		return fmt.Errorf("it holds %d tallies, none disputed", len(btl.list()))
	})
}
