package experts

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"

	"github.com/mwpeer/mwpeer/internal/p2ptest"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// autoPeer is a gossiping host of the automatic-width tests.
type autoPeer struct {
	h      host.Host
	g      *Gossip
	cat    *Catalog
	cancel context.CancelFunc
}

// tinyAuto splits above 5 authors per shard and merges below 2, so that 8
// peers split in two shards of 4 and 2 peers merge back.
var tinyAuto = AutoShard{SplitAbove: 5, MergeBelow: 2, Dwell: 3 * time.Second, Grace: 3 * time.Second, MinVoters: 2}

// startAutoPeer starts a peer with an automatic width whose ID is in shard
// shard of 1 bit, vouching for the peers vouch says.
func startAutoPeer(t *testing.T, shard int, vouch func(string) bool) *autoPeer {
	t.Helper()
	h, g, cat, cancel := gossipInShard(t, 1, shard, func(cfg GossipConfig) GossipConfig {
		cfg.ShardBits, cfg.Auto, cfg.MinInterval, cfg.Vouched = ShardBitsAuto, tinyAuto, time.Second, vouch
		cfg.Local = func() Announcement { return Announcement{Domains: []string{"code"}} }
		return cfg
	})
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	g.Start(ctx)
	return &autoPeer{h: h, g: g, cat: cat, cancel: func() { stop(); cancel() }}
}

// stop sends p's leave and closes it.
func (p *autoPeer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = p.g.Leave(ctx)
	p.g.Close()
	p.cancel()
	p.h.Close()
}

// TestAutoShardSplitsAndMerges: eight peers (four per shard of 1 bit)
// start unsharded and split to 1 bit on their own; while they switch no
// catalog loses a peer; after the grace each catalog holds its shard only,
// but for a peer of the other shard that its owner vouches for; a
// newcomer adopts the swarm's width at once; and when only one peer per
// shard is left, they merge back to one topic and hear each other again.
func TestAutoShardSplitsAndMerges(t *testing.T) {
	const n = 8
	var ids [n]string
	var mu sync.Mutex
	peers := make([]*autoPeer, n)
	for i := range n {
		vouch := func(id string) bool {
			mu.Lock()
			defer mu.Unlock()
			return i == 0 && id == ids[1] // peer 0 is using peer 1, of the other shard
		}
		peers[i] = startAutoPeer(t, i%2, vouch)
		// Alone, it has no count to split on and no voters to follow.
		if cur, _, grace := peers[i].g.ShardWidths(); cur != 0 || grace || peers[i].g.TopicName() != Topic {
			t.Fatalf("peer %d starts at width %d (grace %v) on %s", i, cur, grace, peers[i].g.TopicName())
		}
		mu.Lock()
		ids[i] = peers[i].h.ID().String()
		mu.Unlock()
	}
	start := time.Now()
	for i := range peers {
		for j := range i {
			p2ptest.Connect(t, peers[i].h, peers[j].h)
		}
	}

	// The split: every peer at 1 bit. Meanwhile a peer in its grace period
	// holds every other peer: nobody's announcements are lost.
	shortest := n
	wait.For(t, 60*time.Second, "every peer splits to 1 bit", func() error {
		for i, p := range peers {
			cur, _, grace := p.g.ShardWidths()
			if grace {
				shortest = min(shortest, p.cat.Len()+1)
				if p.cat.Len() != n-1 {
					return fmt.Errorf("peer %d in its grace period holds %d peers, want %d", i, p.cat.Len(), n-1)
				}
			}
			if cur != 1 {
				return fmt.Errorf("peer %d at width %d (%d authors)", i, cur, p.g.WidthStatus().Authors)
			}
		}
		return nil
	})
	split := time.Since(start)
	for i, p := range peers {
		// Most split on their own count; one that checks late follows the
		// others (or, still in its first dwell, joins them).
		if st := p.g.WidthStatus(); st.Reason != "split" && st.Reason != "followed the majority" && st.Reason != "joined the majority" {
			t.Errorf("peer %d changed width because %q", i, st.Reason)
		}
		if p.g.TopicName() != AnnounceTopic(1, i%2) {
			t.Errorf("peer %d announces on %s", i, p.g.TopicName())
		}
	}
	wait.For(t, 30*time.Second, "every grace period ends and each catalog holds its shard", func() error {
		for i, p := range peers {
			if _, _, grace := p.g.ShardWidths(); grace {
				return fmt.Errorf("peer %d still in its grace period", i)
			}
			for j := range peers {
				has := p.cat.Has(ids[j])
				switch {
				case i == j:
				case i == 0 && j == 1: // vouched for: kept at the grace's end, until it expires
				case i%2 != j%2 && has:
					return fmt.Errorf("peer %d holds peer %d of the other shard", i, j)
				case i%2 == j%2 && !has:
					return fmt.Errorf("peer %d lost peer %d of its shard", i, j)
				}
			}
		}
		return nil
	})
	settled := time.Since(start)
	for i, p := range peers {
		if r := p.g.Rejected()[RejectWrongShard]; r != 0 {
			t.Errorf("peer %d rejected %d wrong-shard announcements from honest peers", i, r)
		}
	}

	// A newcomer of shard 0 adopts 1 bit from its neighbours' protocols,
	// without waiting a dwell, and hears its shard.
	newcomer := startAutoPeer(t, 0, nil)
	for _, p := range peers[:3] {
		p2ptest.Connect(t, newcomer.h, p.h)
	}
	wait.For(t, 30*time.Second, "the newcomer joins the swarm's width and its shard", func() error {
		if cur, _, _ := newcomer.g.ShardWidths(); cur != 1 {
			return fmt.Errorf("newcomer at width %d", cur)
		}
		for j := 0; j < n; j += 2 {
			if !newcomer.cat.Has(ids[j]) {
				return fmt.Errorf("newcomer does not hear peer %d (catalog %d)", j, newcomer.cat.Len())
			}
		}
		return nil
	})
	if st := newcomer.g.WidthStatus(); st.Reason != "joined the majority" || time.Since(st.Changed) > tinyAuto.Dwell+time.Second {
		t.Errorf("newcomer's width: %+v", st)
	}

	// The merge: all but one peer of each shard leave.
	left := time.Now() // they leave one by one: a peer may merge before the last has left
	newcomer.stop()
	for _, p := range peers[2:] {
		p.stop()
	}
	wait.For(t, 60*time.Second, "the two peers left merge to one topic and hear each other", func() error {
		for i, p := range peers[:2] {
			if cur, _, _ := p.g.ShardWidths(); cur != 0 {
				return fmt.Errorf("peer %d at width %d (%d authors)", i, cur, p.g.WidthStatus().Authors)
			}
			if !p.cat.Has(ids[1-i]) || p.cat.Len() != 1 {
				return fmt.Errorf("peer %d holds %d peers, not the other", i, p.cat.Len())
			}
		}
		return nil
	})
	t.Logf("split after %s, graces over and catalogs split after %s, fewest peers held in a grace period %d of %d; merged %s after the others began to leave",
		split.Round(time.Millisecond), settled.Round(time.Millisecond), shortest, n, time.Since(left).Round(time.Millisecond))
}

// idleAutoGossiper is a gossiper with an automatic width that does not
// run (no Start, a dwell of an hour), on a host in shard want of 1 bit.
func idleAutoGossiper(t *testing.T, want int) (host.Host, *Gossip, *Catalog) {
	t.Helper()
	for {
		h := p2ptest.NewHost(t)
		if AnnounceShard(h.ID(), 1) != want {
			h.Close()
			continue
		}
		ps, err := pubsub.NewGossipSub(t.Context(), h)
		if err != nil {
			t.Fatal(err)
		}
		cat := NewCatalog(h.ID().String(), 0)
		g, err := JoinGossip(ps, h, GossipConfig{Key: h.Peerstore().PrivKey(h.ID()), Catalog: cat, ShardBits: ShardBitsAuto,
			Auto: AutoShard{Dwell: time.Hour}, Local: func() Announcement { return Announcement{} }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Close)
		return h, g, cat
	}
}

// TestCatchUpAcrossASwitch: a peer that just split to 1 bit still takes
// both halves in a catch-up and serves a requester of the other half that
// has not switched yet, while its grace period lasts; when it ends, the
// other half leaves its catalog, and its rendezvous widths are its new
// one only.
func TestCatchUpAcrossASwitch(t *testing.T) {
	a, _, aCat := idleAutoGossiper(t, 0)
	b, bg, bCat := idleAutoGossiper(t, 0)
	c, cg, cCat := idleAutoGossiper(t, 1)
	now := time.Now()
	for i := range 4 { // a, unsharded, holds both halves
		key, id := keyInShard(t, 1, i%2)
		ann := sample(id.String(), now)
		env, err := Seal(&ann, key)
		if err != nil {
			t.Fatal(err)
		}
		opened, err := Open(env, now)
		if err != nil {
			t.Fatal(err)
		}
		aCat.Apply(opened, env, now)
	}
	p2ptest.Connect(t, b, a)
	p2ptest.Connect(t, c, b)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := bg.switchWidth(ctx, 1, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	if cur, prev, grace := bg.ShardWidths(); cur != 1 || prev != 0 || !grace || fmt.Sprint(bg.Widths()) != "[1 0]" {
		t.Fatalf("after the switch: widths %d, %d, grace %v, %v", cur, prev, grace, bg.Widths())
	}
	if n, err := bg.CatchUp(ctx, a.ID()); err != nil || n != 4 {
		t.Fatalf("in its grace period b took %d of a's 4 (%v)", n, err)
	}
	if n, err := cg.CatchUp(ctx, b.ID()); err != nil || n != 4 || cCat.Len() != 4 {
		t.Fatalf("c, of the other half and not switched, took %d of b's 4 (%v)", n, err)
	}
	cur, old := bg.topics()
	bg.endGrace(cur, old)
	if bCat.Len() != 2 {
		t.Fatalf("after the grace b holds %d, want its half's 2", bCat.Len())
	}
	for _, e := range bCat.Snapshot() {
		if !bg.inShard(e.Peer) {
			t.Fatalf("b kept %s of the other half", e.Peer)
		}
	}
	if fmt.Sprint(bg.Widths()) != "[1]" || bg.TopicName() != AnnounceTopic(1, 0) {
		t.Fatalf("after the grace: widths %v on %s", bg.Widths(), bg.TopicName())
	}
}
