package experts

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/internal/p2ptest"
	"github.com/mwpeer/mwpeer/p2p"
)

// announce applies a full announcement of a new key from addrs, heard at at.
func announce(t *testing.T, c *Catalog, at time.Time, addrs ...string) (string, bool) {
	t.Helper()
	_, id := newKey(t)
	a := sample(id, at)
	a.Addrs = addrs
	return id, c.Apply(&a, nil, at)
}

func set(ids ...string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// TestCatalogNeverEvictsKeptPeersForStrangers: connected or measured peers
// (SetKeep) stay however many strangers announce themselves; a stranger
// arriving at a catalog full of kept peers is refused, and a kept newcomer
// displaces the least recently heard.
func TestCatalogNeverEvictsKeptPeersForStrangers(t *testing.T) {
	c := NewCatalog("self", 3)
	kept := map[string]bool{}
	c.SetKeep(func(id string) bool { return kept[id] })
	t0 := time.Now().Add(-time.Minute)
	a, _ := announce(t, c, t0, "/ip4/203.0.113.1/tcp/1")
	b, _ := announce(t, c, t0.Add(time.Second), "/ip4/198.51.100.1/tcp/1")
	kept[a], kept[b] = true, true
	var last string
	for i := range 5 { // each newer than a and b
		last, _ = announce(t, c, t0.Add(time.Duration(10+i)*time.Second), fmt.Sprintf("/ip4/192.0.2.%d/tcp/1", i))
	}
	if !c.Has(a) || !c.Has(b) || !c.Has(last) || c.Len() != 3 {
		t.Fatalf("kept peers evicted for strangers: a %v, b %v, newest stranger %v, %d entries", c.Has(a), c.Has(b), c.Has(last), c.Len())
	}
	kept[last] = true
	if id, ok := announce(t, c, t0.Add(time.Minute), "/ip4/192.0.2.200/tcp/1"); ok || c.Has(id) {
		t.Fatal("a stranger displaced a kept peer from a full catalog")
	}
	if _, full := c.Refused(); full != 1 {
		t.Fatalf("refused for a full catalog: %d, want 1", full)
	}
	// Kept now: it displaces the least recently heard kept peer, a.
	_, id := newKey(t)
	kept[id] = true
	an := sample(id, t0.Add(2*time.Minute))
	if !c.Apply(&an, nil, t0.Add(2*time.Minute)) || c.Has(a) || !c.Has(b) || !c.Has(id) {
		t.Fatalf("a kept newcomer in a catalog of kept peers: applied %v, a %v, b %v", c.Has(id), c.Has(a), c.Has(b))
	}
}

// TestFullCatalogEvictsFromTheMostCrowdedPrefix: a full catalog makes room
// in the prefix that holds most, even when an entry of another is older.
func TestFullCatalogEvictsFromTheMostCrowdedPrefix(t *testing.T) {
	c := NewCatalog("self", 4)
	t0 := time.Now().Add(-time.Minute)
	lone, _ := announce(t, c, t0, "/ip4/198.51.100.9/tcp/1") // the oldest
	var crowd []string
	for i := range 3 {
		id, _ := announce(t, c, t0.Add(time.Duration(1+i)*time.Second), fmt.Sprintf("/ip4/203.0.113.%d/tcp/1", i))
		crowd = append(crowd, id)
	}
	newcomer, ok := announce(t, c, t0.Add(10*time.Second), "/ip6/2001:db8:1::1/tcp/1")
	if !ok || !c.Has(newcomer) || !c.Has(lone) || c.Has(crowd[0]) || !c.Has(crowd[1]) || c.Len() != 4 {
		t.Fatalf("newcomer %v, lone %v, crowd %v %v %v", c.Has(newcomer), c.Has(lone), c.Has(crowd[0]), c.Has(crowd[1]), c.Has(crowd[2]))
	}
}

// TestPrefixCap: at most the cap of strangers per network prefix; kept
// peers do not count; a direct connection's address beats what is
// announced; a relayed address counts as its relay's.
func TestPrefixCap(t *testing.T) {
	c := NewCatalog("self", 0)
	c.SetPrefixCap(2)
	kept := map[string]bool{}
	c.SetKeep(func(id string) bool { return kept[id] })
	remote := map[string]ma.Multiaddr{}
	c.SetRemote(func(id string) ma.Multiaddr { return remote[id] })
	now := time.Now()
	for i := range 2 {
		if _, ok := announce(t, c, now, fmt.Sprintf("/ip4/203.0.113.%d/tcp/1", i)); !ok {
			t.Fatalf("stranger %d of the cap refused", i)
		}
	}
	_, k := newKey(t)
	third := sample(k, now)
	third.Addrs = []string{"/ip4/10.0.0.1/tcp/1", "/ip4/203.0.113.77/udp/1/quic-v1"} // the public address counts
	if err := c.Admits(&third); !errors.Is(err, errPrefixFull) || c.Apply(&third, nil, now) {
		t.Fatalf("a third stranger from a /24 capped at 2: Admits %v", err)
	}
	if p, _ := c.Refused(); p != 1 {
		t.Fatalf("refused for the prefix: %d, want 1", p)
	}
	kept[k] = true
	if !c.Apply(&third, nil, now) {
		t.Fatal("a kept peer was refused for its prefix")
	}
	// Same announced prefix, but connected from elsewhere: the connection counts.
	_, k2 := newKey(t)
	moved := sample(k2, now)
	moved.Addrs = []string{"/ip4/203.0.113.99/tcp/1"}
	remote[k2] = ma.StringCast("/ip4/192.0.2.50/tcp/5555")
	if !c.Apply(&moved, nil, now) {
		t.Fatal("a peer connected from another prefix was charged to the one it announces")
	}
	if e, _ := c.Get(k2); e.Prefix != "ip4/192.0.2.0/24" {
		t.Fatalf("prefix %q, want the connection's", e.Prefix)
	}
	// Relayed: by the relay's prefix, apart from the relay's own.
	relay := "/ip4/203.0.113.5/tcp/4001/p2p/12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq/p2p-circuit"
	for i := range 3 {
		_, ok := announce(t, c, now, relay, "/ip4/192.168.1.2/tcp/1")
		if ok != (i < 2) {
			t.Fatalf("relayed stranger %d: applied %v", i, ok)
		}
	}
	// A loopback-only swarm bigger than the cap needs a cap to match; the
	// default holds every test swarm.
	big := NewCatalog("self", 0)
	for i := range DefaultPrefixCap {
		if _, ok := announce(t, big, now, "/ip4/127.0.0.1/tcp/"+fmt.Sprint(4000+i)); !ok {
			t.Fatalf("loopback peer %d refused under the default cap", i)
		}
	}
	if id, ok := announce(t, big, now); !ok || func() string { e, _ := big.Get(id); return e.Prefix }() != "none" {
		t.Fatal("an announcement without addresses is not counted under none")
	}
}

// TestTombstonesAreCappedAndPruned: leaves of strangers past MaxTombstones
// leave none; a leave of a known peer makes room; all go when they expire.
func TestTombstonesAreCappedAndPruned(t *testing.T) {
	c := NewCatalog("self", 0)
	now := time.Now()
	leave := func(id string, seq uint64) {
		a := Announcement{Peer: id, Seq: seq, Time: now.UnixMilli(), Interval: 5000, Leave: true}
		c.Apply(&a, nil, now)
	}
	for i := range MaxTombstones + 100 {
		leave(peer.ID(fmt.Sprintf("stranger-%d", i)).String(), 1)
	}
	if n := c.Tombstones(); n != MaxTombstones {
		t.Fatalf("%d tombstones, cap %d", n, MaxTombstones)
	}
	known, _ := announce(t, c, now, "/ip4/203.0.113.1/tcp/1")
	leave(known, 100)
	if n := c.Tombstones(); n != MaxTombstones || c.Has(known) {
		t.Fatalf("%d tombstones after a known peer left, %v", n, c.Has(known))
	}
	a := sample(known, now) // its older announcement, relayed late
	if c.Apply(&a, nil, now) {
		t.Fatal("a peer that left was revived by an older announcement")
	}
	c.Expire(now.Add(TTL(5*time.Second) + time.Second))
	if n := c.Tombstones(); n != 0 {
		t.Fatalf("%d tombstones after they expired", n)
	}
}

// validateAs runs the GossipSub validator on an envelope from author.
func validateAs(g *Gossip, author peer.ID, env []byte) pubsub.ValidationResult {
	return g.validate(nil, author, &pubsub.Message{Message: &pb.Message{Data: env, From: []byte(author)}})
}

// TestLeavesAreRateLimited: a leave right after an announcement goes
// through; a second within MinSpacing does not and is counted.
func TestLeavesAreRateLimited(t *testing.T) {
	_, g, _ := gossiper(t)
	key, id := newKey(t)
	pid, _ := peer.Decode(id)
	now := time.Now()
	seal := func(a Announcement) []byte {
		env, err := Seal(&a, key)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	full := sample(id, now)
	if r := validateAs(g, pid, seal(full)); r != pubsub.ValidationAccept {
		t.Fatalf("announcement: %v", r)
	}
	for i, want := range []pubsub.ValidationResult{pubsub.ValidationAccept, pubsub.ValidationIgnore, pubsub.ValidationIgnore} {
		l := Announcement{Peer: id, Seq: uint64(10 + i), Time: now.UnixMilli(), Interval: 5000, Leave: true}
		if r := validateAs(g, pid, seal(l)); r != want {
			t.Fatalf("leave %d: %v, want %v", i, r, want)
		}
	}
	if n := g.Rejected()[RejectTooFrequent]; n != 2 {
		t.Fatalf("too_frequent %d, want 2", n)
	}
}

// TestAuthorsAreForgotten: the validator's memory of authors is pruned once
// their credit is full again and never grows past MaxAuthorsTracked.
func TestAuthorsAreForgotten(t *testing.T) {
	g := &Gossip{lastFrom: map[string]heard{}}
	now := time.Now()
	for i := range MaxAuthorsTracked {
		if !g.spaced(&Announcement{Peer: fmt.Sprint(i)}, now) {
			t.Fatalf("author %d refused below the cap", i)
		}
	}
	if g.spaced(&Announcement{Peer: "one too many"}, now) || g.Authors() != MaxAuthorsTracked {
		t.Fatalf("past the cap: %d authors", g.Authors())
	}
	later := now.Add(SpacingBurst * MinSpacing)
	if !g.spaced(&Announcement{Peer: "later"}, later) || g.Authors() != 1 {
		t.Fatalf("after %v: %d authors remembered, want 1", SpacingBurst*MinSpacing, g.Authors())
	}
}

// TestAnnouncementsMayArriveBunched: two announcements of one author that
// a loaded mesh delivers close together both go through; a flood gets one
// per MinSpacing.
func TestAnnouncementsMayArriveBunched(t *testing.T) {
	g := &Gossip{lastFrom: map[string]heard{}}
	a := &Announcement{Peer: "a"}
	now := time.Now()
	at := func(d time.Duration) bool { return g.spaced(a, now.Add(d)) }
	ms := time.Millisecond
	if !at(0) || !at(100*ms) {
		t.Fatal("two announcements 100 ms apart: the second was refused")
	}
	if at(200 * ms) {
		t.Fatal("a third 100 ms later went through: no limit")
	}
	accepted := 0
	for d := 300 * ms; d < 10300*ms; d += 50 * ms { // a flood: 20 a second for 10 s
		if at(d) {
			accepted++
		}
	}
	if accepted > 21 {
		t.Fatalf("a flood of 200 in 10 s: %d accepted, want at most 21", accepted)
	}
}

// TestCatchUpIsLimitedPerPrefix: fresh peer IDs do not buy more catch-ups
// from one network prefix; other prefixes and loopback are unaffected;
// the window passes.
func TestCatchUpIsLimitedPerPrefix(t *testing.T) {
	_, g, _ := gossiper(t)
	now := time.Now()
	fresh := func() peer.ID {
		k, _, _ := crypto.GenerateEd25519Key(nil)
		id, _ := peer.IDFromPrivateKey(k)
		return id
	}
	const pre = "ip4/203.0.113.0/24"
	for i := range DefaultCatchUpPerPrefix {
		if err := g.admitCatchUpAt(fresh(), pre, false, now); err != nil {
			t.Fatalf("catch-up %d from the prefix: %v", i, err)
		}
	}
	if err := g.admitCatchUpAt(fresh(), pre, false, now); !errors.Is(err, errPrefixBusy) {
		t.Fatalf("one more from the prefix: %v", err)
	}
	if err := g.admitCatchUpAt(fresh(), pre, true, now); err != nil {
		t.Fatalf("a targeted request has its own budget: %v", err)
	}
	if err := g.admitCatchUpAt(fresh(), "ip4/198.51.100.0/24", false, now); err != nil {
		t.Fatalf("another prefix: %v", err)
	}
	for range 3 * DefaultCatchUpPerPrefix {
		if err := g.admitCatchUpAt(fresh(), "", false, now); err != nil {
			t.Fatalf("loopback: %v", err)
		}
	}
	again := fresh()
	if err := g.admitCatchUpAt(again, pre, false, now.Add(catchUpPerPeer)); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	if err := g.admitCatchUpAt(again, pre, false, now.Add(catchUpPerPeer+time.Second)); !errors.Is(err, errTooSoon) {
		t.Fatalf("the per-peer limit still holds: %v", err)
	}
}

// TestTopicScoreParamsAreAccepted: GossipSub takes the announce topic's
// scoring parameters with mwpeer's peer-wide ones (JoinGossip only logs a
// refusal, so a bad value would otherwise go unnoticed).
func TestTopicScoreParamsAreAccepted(t *testing.T) {
	h := p2ptest.NewHost(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithPeerScore(p2p.ScoreParams(), p2p.ScoreThresholds()))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(Topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := topic.SetScoreParams(TopicScoreParams()); err != nil {
		t.Fatal(err)
	}
}
