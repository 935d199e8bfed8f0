package experts

import (
	"context"
	"fmt"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"

	"github.com/mwpeer/mwpeer/internal/p2ptest"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// gossiper joins gossip on a loopback host with an empty catalog.
func gossiper(t *testing.T) (host.Host, *Gossip, *Catalog) {
	t.Helper()
	h := p2ptest.NewHost(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ps, err := pubsub.NewGossipSub(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	cat := NewCatalog(h.ID().String(), 0)
	g, err := JoinGossip(ps, h, GossipConfig{Key: h.Peerstore().PrivKey(h.ID()), Catalog: cat, Local: func() Announcement { return Announcement{} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return h, g, cat
}

// TestCatchUpHandsOverTheCatalog: a newcomer asks a neighbour over the
// catch-up protocol and gets the announcements it holds, all of them or just
// the peers asked for, verified and applied.
func TestCatchUpHandsOverTheCatalog(t *testing.T) {
	a, _, aCat := gossiper(t)
	now := time.Now()
	var ids []string
	for range 3 {
		key, id := newKey(t)
		ann := sample(id, now)
		env, err := Seal(&ann, key)
		if err != nil {
			t.Fatal(err)
		}
		opened, err := Open(env, now)
		if err != nil {
			t.Fatal(err)
		}
		aCat.Apply(opened, env, now)
		ids = append(ids, id)
	}
	b, bg, bCat := gossiper(t)
	p2ptest.Connect(t, b, a)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Targeted: just the peer asked for.
	n, err := bg.catchUp(ctx, a.ID(), ids[1:2])
	if err != nil || n != 1 || !bCat.Has(ids[1]) || bCat.Has(ids[0]) {
		t.Fatalf("targeted catch-up applied %d (%v); has asked-for %v, other %v", n, err, bCat.Has(ids[1]), bCat.Has(ids[0]))
	}
	// Everything: the rest arrives.
	n, err = bg.CatchUp(ctx, a.ID())
	if err != nil || n != 2 || bCat.Len() != 3 {
		t.Fatalf("catch-up applied %d (%v), catalog holds %d", n, err, bCat.Len())
	}
	// A requester is served at most every catchUpPerPeer.
	if n, err := bg.CatchUp(ctx, a.ID()); n != 0 || err == nil {
		t.Fatalf("a second catch-up at once applied %d (%v); want it refused", n, err)
	}
}

// fill applies n fresh announcements, heard now, to each of cats alike.
func fill(t *testing.T, n int, cats ...*Catalog) {
	t.Helper()
	now := time.Now()
	for range n {
		key, id := newKey(t)
		ann := sample(id, now)
		env, err := Seal(&ann, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cats {
			opened, err := Open(env, now)
			if err != nil {
				t.Fatal(err)
			}
			c.Apply(opened, env, now)
		}
	}
}

// TestCatchUpsPauseOnceCaughtUp: a newcomer catches up from its first
// neighbour (all news), then from a second holding the same catalog
// (almost nothing new): it then holds what its neighbours hold and starts
// no full catch-up for catchUpQuiet, however many new connections come.
func TestCatchUpsPauseOnceCaughtUp(t *testing.T) {
	a, _, aCat := gossiper(t)
	c, _, cCat := gossiper(t)
	fill(t, 16, aCat, cCat)
	b, bg, bCat := gossiper(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	bg.Start(ctx)
	quiet := func() bool {
		bg.mu.Lock()
		defer bg.mu.Unlock()
		return time.Now().Before(bg.quietUntil)
	}
	p2ptest.Connect(t, b, a)
	wait.For(t, 10*time.Second, "b catches up from a", func() error {
		if bCat.Len() < 16 {
			return fmt.Errorf("b holds %d of 16", bCat.Len())
		}
		return nil
	})
	if quiet() {
		t.Fatal("a catch-up that was all news paused catch-ups")
	}
	p2ptest.Connect(t, b, c)
	wait.For(t, 10*time.Second, "b catches up from c, which holds the same, and pauses", func() error {
		if !quiet() {
			return fmt.Errorf("not paused; b holds %d", bCat.Len())
		}
		return nil
	})

	// Thresholds: news of at least 1 in catchUpNews keeps catching up.
	g := &Gossip{}
	now := time.Now()
	for _, tc := range []struct {
		applied, received int
		pause             bool
	}{{0, 0, false}, {16, 16, false}, {2, 16, false}, {1, 16, true}, {0, 3, true}} {
		g.quietUntil = time.Time{}
		g.quietAfter(tc.applied, tc.received, now)
		if paused := g.quietUntil.After(now); paused != tc.pause {
			t.Errorf("%d applied of %d received: paused %v, want %v", tc.applied, tc.received, paused, tc.pause)
		}
	}
}
