package experts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/mwpeer/mwpeer/internal/p2ptest"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// dhtNode is a real libp2p host with a server-mode Kademlia DHT.
type dhtNode struct {
	h   host.Host
	dht *dht.IpfsDHT
}

// hostInShard starts a host whose peer ID is in shard want of 2^bits.
func hostInShard(t *testing.T, bits, want int) host.Host {
	t.Helper()
	for {
		h := p2ptest.NewHost(t)
		if AnnounceShard(h.ID(), bits) == want {
			return h
		}
		h.Close()
	}
}

// startDHT starts a DHT on each host, all of them joined through the first,
// and waits until every routing table holds the others.
func startDHT(t *testing.T, hosts []host.Host) []dhtNode {
	t.Helper()
	nodes := make([]dhtNode, len(hosts))
	for i, h := range hosts {
		d, err := dht.New(t.Context(), h, dht.Mode(dht.ModeServer), dht.ProtocolPrefix("/mwpeer-test"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		nodes[i] = dhtNode{h: h, dht: d}
	}
	for _, n := range nodes[1:] {
		p2ptest.Connect(t, n.h, nodes[0].h)
	}
	for _, n := range nodes {
		if err := n.dht.Bootstrap(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 20*time.Second, "every routing table holds the others", func() error {
		for i, n := range nodes {
			if got := n.dht.RoutingTable().Size(); got < len(nodes)-1 {
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
				n.dht.RefreshRoutingTable()
				_, _ = n.dht.GetClosestPeers(ctx, string(n.h.ID()))
				cancel()
				return fmt.Errorf("node %d has %d of %d in its routing table", i, got, len(nodes)-1)
			}
		}
		return nil
	})
	return nodes
}

// recording is a ContentRouting that notes the keys looked up.
type recording struct {
	routing.ContentRouting
	mu   sync.Mutex
	keys []cid.Cid
}

func (r *recording) FindProvidersAsync(ctx context.Context, key cid.Cid, n int) <-chan peer.AddrInfo {
	r.mu.Lock()
	r.keys = append(r.keys, key)
	r.mu.Unlock()
	return r.ContentRouting.FindProvidersAsync(ctx, key, n)
}

func (r *recording) looked() []cid.Cid {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.keys)
	r.keys = nil
	return out
}

func advertise(t *testing.T, n dhtNode, widths Widths, poll time.Duration, few int, salted ...string) *Advertiser {
	t.Helper()
	a := NewAdvertiser(n.dht, nil)
	a.Self, a.Widths, a.WidthsPoll, a.Few = n.h.ID(), widths, poll, few
	a.Set(nil, salted)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

func contains(found []peer.AddrInfo, id peer.ID) bool {
	return slices.ContainsFunc(found, func(ai peer.AddrInfo) bool { return ai.ID == id })
}

// TestSaltedProvidersAreFoundInOtherShards: eight real DHT peers, two in
// each of four announcement shards (2 bits). The one peer serving a model,
// in shard 3, provides it under shard 3's salted key only; a peer of
// shard 0 finds it by looking up the salted keys of shards 1 to 3 (never
// its own, each once), and nobody finds it under the unsalted key. A peer
// of shard 3 itself, whose catalog would hold the expert, looks only in
// shards 0 to 2 and finds nothing.
func TestSaltedProvidersAreFoundInOtherShards(t *testing.T) {
	const bits, model = 2, "rare:7b"
	var hosts []host.Host
	for i := range 8 {
		hosts = append(hosts, hostInShard(t, bits, i%4))
	}
	nodes := startDHT(t, hosts)
	expert, asker, neighbour := nodes[3], nodes[0], nodes[7]                                      // shards 3, 0 and 3
	a := advertise(t, expert, StaticWidths(bits), 0, -1, KindModel+"/"+model, KindDomain+"/code") // salted keys only
	wait.For(t, 20*time.Second, "the expert provides its salted keys", func() error {
		if !a.ProvidedAt(KindModel, model, bits) || !a.ProvidedAt(KindDomain, "code", bits) {
			return errors.New("not yet")
		}
		return nil
	})
	if a.Provided(KindModel, model) {
		t.Error("the unsalted key is provided at 2 bits")
	}

	rec := &recording{ContentRouting: asker.dht}
	f := Finder{Routing: rec, Self: asker.h.ID(), Widths: StaticWidths(bits), Parallel: 2}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	found, err := f.Find(ctx, KindModel, model, 8)
	if err != nil || !contains(found, expert.h.ID()) || len(found) != 1 {
		t.Fatalf("shard 0 found %v (%v), want the expert %s alone", found, err, expert.h.ID())
	}
	// The unsalted key first (empty: the expert provides none), then
	// other shards' keys, each once, shard 3's among them, and never its
	// own shard's.
	plain := Key(KindModel, model)
	others := []cid.Cid{SaltedKey(KindModel, model, bits, 1), SaltedKey(KindModel, model, bits, 2), SaltedKey(KindModel, model, bits, 3)}
	got := rec.looked()
	if len(got) < 2 || !got[0].Equals(plain) || !slices.ContainsFunc(got[1:], others[2].Equals) || !subset(got[1:], others) {
		t.Errorf("looked up %v, want the unsalted key %v, then distinct keys of shards 1-3 %v with shard 3's", got, plain, others)
	}
	// One key at a time: the lookup stops at the key that has the expert.
	one := f
	one.Parallel = 1
	if found, err := one.Find(ctx, KindModel, model, 8); err != nil || !contains(found, expert.h.ID()) {
		t.Fatalf("one key at a time: %v (%v)", found, err)
	}
	if got := rec.looked(); len(got) < 2 || !got[len(got)-1].Equals(others[2]) || !subset(got[1:], others) {
		t.Errorf("one key at a time looked up %v: want shard 3's last", got)
	}
	// One provider wanted: the lookup stops at the first key that has it.
	if found, err := f.Find(ctx, KindDomain, "code", 1); err != nil || !contains(found, expert.h.ID()) {
		t.Errorf("domain/code from shard 0: %v (%v)", found, err)
	}

	if plain, err := FindProviders(ctx, asker.dht, KindModel, model, 8); err != nil || len(plain) != 0 {
		t.Errorf("the unsalted key has providers %v (%v)", plain, err)
	}
	own := Finder{Routing: neighbour.dht, Self: neighbour.h.ID(), Widths: StaticWidths(bits)}
	if found, err := own.Find(ctx, KindModel, model, 8); err != nil || len(found) != 0 {
		t.Errorf("shard 3 looked in its own shard's key and found %v (%v)", found, err)
	}
}

// subset: got holds distinct keys, each of want.
func subset(got, want []cid.Cid) bool {
	for i, g := range got {
		if !slices.ContainsFunc(want, g.Equals) || slices.ContainsFunc(got[:i], g.Equals) {
			return false
		}
	}
	return true
}

func sameKeys(got, want []cid.Cid) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, w.Equals) {
			return false
		}
	}
	return true
}

// TestUnsaltedKeyAtWidthZero: without widths (an unsharded swarm) a model
// is provided under its unsalted key, as before salting, and FindProviders
// and a Finder both find it there with one lookup of that key.
func TestUnsaltedKeyAtWidthZero(t *testing.T) {
	const model = "common:1b"
	nodes := startDHT(t, []host.Host{p2ptest.NewHost(t), p2ptest.NewHost(t), p2ptest.NewHost(t), p2ptest.NewHost(t)})
	a := advertise(t, nodes[1], nil, 0, 0, KindModel+"/"+model)
	wait.For(t, 20*time.Second, "the unsalted key is provided", func() error {
		if !a.Provided(KindModel, model) || !a.ProvidedAt(KindModel, model, 0) {
			return errors.New("not yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if found, err := FindProviders(ctx, nodes[3].dht, KindModel, model, 8); err != nil || !contains(found, nodes[1].h.ID()) {
		t.Errorf("FindProviders: %v (%v)", found, err)
	}
	rec := &recording{ContentRouting: nodes[2].dht}
	f := Finder{Routing: rec, Self: nodes[2].h.ID()}
	if found, err := f.Find(ctx, KindModel, model, 8); err != nil || !contains(found, nodes[1].h.ID()) {
		t.Errorf("Finder: %v (%v)", found, err)
	}
	if got := rec.looked(); !sameKeys(got, []cid.Cid{Key(KindModel, model)}) {
		t.Errorf("looked up %v, want the unsalted key alone", got)
	}
}

// TestAdvertiserFollowsWidths: when its Widths change, an advertiser
// provides under the new widths' keys without being told (WidthsPoll):
// from 0 bits, to 1 bit while 0 still applies (a grace period: both keys),
// to 1 bit alone; a peer of the other shard then finds it under the new
// key, and one still at 0 bits finds it under the old one until that
// record expires.
func TestAdvertiserFollowsWidths(t *testing.T) {
	const model = "moving:3b"
	hosts := []host.Host{hostInShard(t, 1, 0), hostInShard(t, 1, 1), hostInShard(t, 1, 0), hostInShard(t, 1, 1)}
	nodes := startDHT(t, hosts)
	expert, asker := nodes[1], nodes[0] // shards 1 and 0
	var current atomic.Pointer[[]int]
	set := func(w ...int) { current.Store(&w) }
	set(0)
	widths := func() []int { return *current.Load() }
	a := advertise(t, expert, widths, 50*time.Millisecond, -1, KindModel+"/"+model) // no unsalted key past 0 bits
	wait.For(t, 20*time.Second, "provided unsalted at 0 bits", func() error {
		if !a.ProvidedAt(KindModel, model, 0) {
			return errors.New("not yet")
		}
		return nil
	})
	if a.ProvidedAt(KindModel, model, 1) {
		t.Fatal("provided at 1 bit before the width changed")
	}

	set(1, 0)
	wait.For(t, 20*time.Second, "provided at 1 bit too once the width grows", func() error {
		if !a.ProvidedAt(KindModel, model, 1) {
			return errors.New("not yet")
		}
		return nil
	})
	if !a.ProvidedAt(KindModel, model, 0) {
		t.Error("the old width's key was dropped during the grace period")
	}
	set(1)
	wait.For(t, 20*time.Second, "the old width's key is no longer kept", func() error {
		if a.ProvidedAt(KindModel, model, 0) {
			return errors.New("still kept")
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	newer := Finder{Routing: asker.dht, Self: asker.h.ID(), Widths: StaticWidths(1)}
	if found, err := newer.Find(ctx, KindModel, model, 8); err != nil || !contains(found, expert.h.ID()) {
		t.Errorf("at 1 bit: %v (%v)", found, err)
	}
	older := Finder{Routing: asker.dht, Self: asker.h.ID()}
	if found, err := older.Find(ctx, KindModel, model, 8); err != nil || !contains(found, expert.h.ID()) {
		t.Errorf("at 0 bits: %v (%v)", found, err)
	}
}

// TestRareNamesAreProvidedUnsaltedWhileFew: at 2 bits, with Few 2, the
// first two peers serving a model provide its unsalted key besides their
// salted ones, and the third, finding two there, does not; a peer of
// another shard finds them with one lookup, of the unsalted key.
func TestRareNamesAreProvidedUnsaltedWhileFew(t *testing.T) {
	const bits, model = 2, "seldom:14b"
	var hosts []host.Host
	for i := range 8 {
		hosts = append(hosts, hostInShard(t, bits, i%4))
	}
	nodes := startDHT(t, hosts)
	var servers []*Advertiser
	for i, n := range nodes[1:4] { // shards 1, 2 and 3, one after the other
		a := advertise(t, n, StaticWidths(bits), 0, 2, KindModel+"/"+model)
		wait.For(t, 20*time.Second, fmt.Sprintf("server %d provides its keys", i), func() error {
			if !a.ProvidedAt(KindModel, model, bits) || (!a.Provided(KindModel, model) && !a.Crowded(KindModel, model)) {
				return errors.New("not yet")
			}
			return nil
		})
		servers = append(servers, a)
	}
	for i, a := range servers {
		if few := i < 2; a.Provided(KindModel, model) != few || a.Crowded(KindModel, model) == few {
			t.Errorf("server %d: unsalted key provided %v, crowded %v; want provided %v", i, a.Provided(KindModel, model), a.Crowded(KindModel, model), few)
		}
	}
	rec := &recording{ContentRouting: nodes[0].dht}
	f := Finder{Routing: rec, Self: nodes[0].h.ID(), Widths: StaticWidths(bits)}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	found, err := f.Find(ctx, KindModel, model, 8)
	if err != nil || len(found) != 2 || !contains(found, nodes[1].h.ID()) || !contains(found, nodes[2].h.ID()) {
		t.Errorf("found %v (%v), want the first two servers", found, err)
	}
	if got := rec.looked(); !sameKeys(got, []cid.Cid{Key(KindModel, model)}) {
		t.Errorf("looked up %v, want the unsalted key alone", got)
	}
}

// TestLookupKeysAreBounded: at 16 bits a lookup tries MaxKeys distinct
// keys of other shards, never its own; at 1 bit the one other shard's.
func TestLookupKeysAreBounded(t *testing.T) {
	self := p2ptest.NewHost(t).ID()
	for _, c := range []struct{ bits, max, want int }{{16, 0, DefaultLookupKeys}, {16, 5, 5}, {3, 0, 7}, {1, 0, 1}} {
		f := Finder{Self: self, MaxKeys: c.max}
		keys := f.lookupKeys(KindModel, "m", c.bits)
		own := SaltedKey(KindModel, "m", c.bits, AnnounceShard(self, c.bits))
		distinct := map[cid.Cid]bool{}
		for _, k := range keys {
			distinct[k] = true
		}
		if len(keys) != c.want || len(distinct) != c.want || distinct[own] {
			t.Errorf("%d bits, max %d: %d keys (%d distinct, own among them %v), want %d", c.bits, c.max, len(keys), len(distinct), distinct[own], c.want)
		}
	}
	// Widths outside 0..MaxAnnounceShardBits are ignored, duplicates once.
	w := Widths(func() []int { return []int{-1, 17, 3, 3, 2} })
	if got := w.current(); !slices.Equal(got, []int{3, 2}) {
		t.Errorf("widths %v", got)
	}
	if got := Widths(func() []int { return []int{99} }).current(); !slices.Equal(got, []int{0}) {
		t.Errorf("no valid width: %v, want [0]", got)
	}
}
