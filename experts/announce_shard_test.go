package experts

import (
	"context"
	"fmt"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/internal/p2ptest"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// TestAnnounceShards: shard 0 of 0 bits is today's topic; the shards of
// random IDs are uniform, and a wider split refines a narrower one (the
// first bits agree), so a shard that splits hands each half its own.
func TestAnnounceShards(t *testing.T) {
	if AnnounceTopic(0, 0) != Topic || AnnounceShardKey(0, 0) != "" {
		t.Fatalf("unsharded topic %q, key %q", AnnounceTopic(0, 0), AnnounceShardKey(0, 0))
	}
	if AnnounceTopic(1, 0) == AnnounceTopic(1, 1) || AnnounceTopic(1, 1) == AnnounceTopic(2, 1) {
		t.Fatal("shard topics collide")
	}
	const n, bits = 4000, 2
	counts := make([]int, 1<<bits)
	for range n {
		_, s := newKey(t)
		id, _ := peer.Decode(s)
		if AnnounceShard(id, 0) != 0 {
			t.Fatal("unsharded: shard not 0")
		}
		sh := AnnounceShard(id, bits)
		if sh < 0 || sh >= len(counts) {
			t.Fatalf("shard %d of %d", sh, len(counts))
		}
		counts[sh]++
		if wide := AnnounceShard(id, 5); wide>>(5-bits) != sh {
			t.Fatalf("5-bit shard %d does not refine 2-bit shard %d", wide, sh)
		}
	}
	for sh, c := range counts { // expected 1,000 each; ±15% is over 5 standard deviations
		if c < 850 || c > 1150 {
			t.Errorf("shard %d holds %d of %d IDs: %v", sh, c, n, counts)
		}
	}
}

// shardedGossiper is gossiper with ShardBits bits, on a host in shard want.
func shardedGossiper(t *testing.T, bits, want int) (host.Host, *Gossip, *Catalog) {
	t.Helper()
	h, g, cat, _ := gossipInShard(t, bits, want, func(cfg GossipConfig) GossipConfig {
		cfg.ShardBits = bits
		cfg.Local = func() Announcement { return Announcement{} }
		return cfg
	})
	if b, s := g.Shard(); b != bits || s != want || g.TopicName() != AnnounceTopic(bits, want) {
		t.Fatalf("gossip in shard %d/%d on %q", b, s, g.TopicName())
	}
	return h, g, cat
}

// gossipInShard joins the gossip on a new host whose ID is in shard want of
// bits, with the config configure makes of one holding the host's key and
// a new catalog. The gossip is not started; cancel ends its context.
func gossipInShard(t *testing.T, bits, want int, configure func(GossipConfig) GossipConfig) (h host.Host, g *Gossip, cat *Catalog, cancel context.CancelFunc) {
	t.Helper()
	for range 200 {
		h = p2ptest.NewHost(t)
		if AnnounceShard(h.ID(), bits) != want {
			h.Close()
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		ps, err := pubsub.NewGossipSub(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		cat = NewCatalog(h.ID().String(), 0)
		g, err = JoinGossip(ps, h, configure(GossipConfig{Key: h.Peerstore().PrivKey(h.ID()), Catalog: cat}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Close)
		return h, g, cat, cancel
	}
	t.Fatalf("no host in shard %d of %d bits after 200 tries", want, bits)
	return nil, nil, nil, nil
}

// keyInShard returns a fresh key whose peer ID is in shard want of bits.
func keyInShard(t *testing.T, bits, want int) (crypto.PrivKey, peer.ID) {
	t.Helper()
	for {
		k, s := newKey(t)
		id, _ := peer.Decode(s)
		if AnnounceShard(id, bits) == want {
			return k, id
		}
	}
}

func TestJoinGossipRefusesTooManyShardBits(t *testing.T) {
	h := p2ptest.NewHost(t)
	ps, err := pubsub.NewGossipSub(t.Context(), h)
	if err != nil {
		t.Fatal(err)
	}
	for _, bits := range []int{ShardBitsAuto - 1, MaxAnnounceShardBits + 1} {
		if _, err := JoinGossip(ps, h, GossipConfig{Key: h.Peerstore().PrivKey(h.ID()), Catalog: NewCatalog(h.ID().String(), 0), ShardBits: bits,
			Local: func() Announcement { return Announcement{} }}); err == nil {
			t.Errorf("%d shard bits accepted", bits)
		}
	}
}

// TestWrongShardIsRejected: an announcement whose author belongs to another
// shard is rejected (so the neighbour that sent it is penalised and it goes
// no further), whether it arrives over the topic from a peer that joined
// it anyway or is checked directly; one of the shard's own is accepted.
func TestWrongShardIsRejected(t *testing.T) {
	const bits = 1
	a, g, cat := shardedGossiper(t, bits, 0)
	now := time.Now()

	// The validator directly.
	for _, tc := range []struct {
		shard int
		want  pubsub.ValidationResult
	}{{0, pubsub.ValidationAccept}, {1, pubsub.ValidationReject}} {
		key, id := keyInShard(t, bits, tc.shard)
		ann := sample(id.String(), now)
		env, err := Seal(&ann, key)
		if err != nil {
			t.Fatal(err)
		}
		if got := validateAs(g, id, env); got != tc.want {
			t.Errorf("author in shard %d: validation %v, want %v", tc.shard, got, tc.want)
		}
	}
	if n := g.Rejected()[RejectWrongShard]; n != 1 {
		t.Fatalf("%d wrong-shard rejections counted, want 1", n)
	}

	// Over the network: a shard-1 peer joins shard 0's topic and publishes.
	var x host.Host
	for x == nil || AnnounceShard(x.ID(), bits) != 1 {
		x = p2ptest.NewHost(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ps, err := pubsub.NewGossipSub(ctx, x)
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(AnnounceTopic(bits, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer topic.Close()
	p2ptest.Connect(t, x, a)
	gctx, gcancel := context.WithCancel(ctx)
	defer gcancel()
	g.Start(gctx)
	wait.For(t, 20*time.Second, "the shard-0 peer rejects the shard-1 peer's announcement", func() error {
		ann := sample(x.ID().String(), time.Now())
		ann.Seq = uint64(time.Now().UnixNano())
		env, err := Seal(&ann, x.Peerstore().PrivKey(x.ID()))
		if err != nil {
			return err
		}
		if err := topic.Publish(ctx, env); err != nil {
			return err
		}
		if n := g.Rejected()[RejectWrongShard]; n < 2 {
			return fmt.Errorf("%d wrong-shard rejections", n)
		}
		return nil
	})
	if cat.Has(x.ID().String()) {
		t.Fatal("the catalog took an announcement of another shard")
	}
}

// TestCatchUpStaysInShard: a catch-up hands a requester of the shard only
// the shard's announcements (others a neighbour holds are dropped and
// counted), and a requester of another shard is refused.
func TestCatchUpStaysInShard(t *testing.T) {
	const bits = 1
	a, _, aCat := shardedGossiper(t, bits, 0)
	now := time.Now()
	want := map[string]bool{}
	for i := range 6 { // a neighbour holding both shards' announcements
		key, id := keyInShard(t, bits, i%2)
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
		if i%2 == 0 {
			want[id.String()] = true
		}
	}
	b, bg, bCat := shardedGossiper(t, bits, 0)
	c, cg, cCat := shardedGossiper(t, bits, 1)
	p2ptest.Connect(t, b, a)
	p2ptest.Connect(t, c, a)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if n, err := bg.CatchUp(ctx, a.ID()); err != nil || n != len(want) {
		t.Fatalf("same-shard catch-up applied %d (%v), want %d", n, err, len(want))
	}
	for _, e := range bCat.Snapshot() {
		if !want[e.Peer] {
			t.Fatalf("catalog holds %s of another shard", e.Peer)
		}
	}
	if n := bg.Rejected()[RejectWrongShard]; n != 3 {
		t.Fatalf("%d wrong-shard envelopes counted, want 3", n)
	}
	if n, err := cg.CatchUp(ctx, a.ID()); err == nil || n != 0 || cCat.Len() != 0 {
		t.Fatalf("other-shard catch-up applied %d (%v), catalog %d; want it refused", n, err, cCat.Len())
	}
}

// TestShardPeersFindEachOtherThroughProviders: two peers of one shard that
// are not connected (their neighbours are of other shards) find each other
// through the providers of their shard's rendezvous key, connect, and
// their catalogs fill.
func TestShardPeersFindEachOtherThroughProviders(t *testing.T) {
	const bits = 2
	start := func(others func() []peer.AddrInfo) (host.Host, *Catalog, *Gossip) {
		for {
			h := p2ptest.NewHost(t)
			if AnnounceShard(h.ID(), bits) != 3 {
				h.Close()
				continue
			}
			ps, err := pubsub.NewGossipSub(t.Context(), h)
			if err != nil {
				t.Fatal(err)
			}
			cat := NewCatalog(h.ID().String(), 0)
			g, err := JoinGossip(ps, h, GossipConfig{Key: h.Peerstore().PrivKey(h.ID()), Catalog: cat, ShardBits: bits, MinInterval: time.Second,
				Local: func() Announcement { return Announcement{Domains: []string{"code"}} },
				Providers: func(ctx context.Context, kind, name string, max int) ([]peer.AddrInfo, error) {
					if kind != KindAnnounceShard || name != AnnounceShardKey(bits, 3) {
						return nil, fmt.Errorf("looked up %s/%s", kind, name)
					}
					return others(), nil
				}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(g.Close)
			return h, cat, g
		}
	}
	var a, b host.Host
	info := func(h *host.Host) func() []peer.AddrInfo {
		return func() []peer.AddrInfo { return []peer.AddrInfo{{ID: (*h).ID(), Addrs: (*h).Addrs()}} }
	}
	a, aCat, ag := start(info(&b))
	b, bCat, bg := start(info(&a))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ag.Start(ctx)
	bg.Start(ctx)
	wait.For(t, 20*time.Second, "the two peers of shard 3 find and hear each other", func() error {
		if !aCat.Has(b.ID().String()) || !bCat.Has(a.ID().String()) {
			return fmt.Errorf("a knows b %v, b knows a %v; connected %v, topic peers %d, rejected %v", aCat.Has(b.ID().String()), bCat.Has(a.ID().String()),
				a.Network().Connectedness(b.ID()), len(ag.cur.topic.ListPeers()), ag.Rejected())
		}
		return nil
	})
}
