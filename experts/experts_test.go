package experts

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/geo"
)

func newKey(t *testing.T) (crypto.PrivKey, string) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return k, id.String()
}

func sample(id string, now time.Time) Announcement {
	return Announcement{
		Peer: id, Seq: 7, Time: now.UnixMilli(), Interval: 5000,
		Addrs:    []string{"/ip4/127.0.0.1/tcp/4001"},
		Models:   []Model{{Name: "llama3:8b", Digest: "sha256:abc", Engine: "ollama"}},
		Domains:  []string{"code", "math"},
		Hardware: Hardware{CPUs: 8, MemoryMB: 16000},
		Capacity: 2, Load: 1,
		Location: &geo.Point{Lat: 1, Lon: 2}, Region: "eu",
		RTT: map[string]float64{id: 1.5},
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	key, id := newKey(t)
	now := time.Now()
	a := sample(id, now)
	data, err := Seal(&a, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(data, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Peer != id || got.Seq != 7 || got.Models[0].Digest != "sha256:abc" || got.Domains[1] != "math" ||
		got.Location.Lat != 1 || got.RTT[id] != 1.5 || got.Hardware.CPUs != 8 {
		t.Fatalf("round trip changed the announcement: %+v", got)
	}
}

func TestOpenRejects(t *testing.T) {
	key, id := newKey(t)
	otherKey, otherID := newKey(t)
	now := time.Now()
	seal := func(a Announcement, k crypto.PrivKey) []byte {
		d, err := Seal(&a, k)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	mod := func(f func(a *Announcement)) []byte {
		a := sample(id, now)
		f(&a)
		return seal(a, key)
	}
	good := seal(sample(id, now), key)
	flipped := bytes.Replace(good, []byte("llama3"), []byte("llama4"), 1)
	cases := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"signed by someone else", seal(sample(otherID, now), key), RejectForeign},
		{"altered after signing", flipped, RejectSignature},
		{"not an envelope", []byte("hello"), RejectMalformed},
		{"too big", make([]byte, MaxAnnouncementSize+1), RejectOversized},
		{"stale", mod(func(a *Announcement) { a.Time = now.Add(-time.Minute).UnixMilli() }), RejectStale},
		{"future", mod(func(a *Announcement) { a.Time = now.Add(time.Minute).UnixMilli() }), RejectFuture},
		{"unknown domain", mod(func(a *Announcement) { a.Domains = []string{"astrology"} }), RejectInvalid},
		{"seq zero", mod(func(a *Announcement) { a.Seq = 0 }), RejectInvalid},
		{"interval too short", mod(func(a *Announcement) { a.Interval = 10 }), RejectInvalid},
		{"bad location", mod(func(a *Announcement) { a.Location = &geo.Point{Lat: 100} }), RejectInvalid},
		{"negative load", mod(func(a *Announcement) { a.Load = -1 }), RejectInvalid},
		{"bad RTT peer", mod(func(a *Announcement) { a.RTT = map[string]float64{"nope": 1} }), RejectInvalid},
		{"empty model name", mod(func(a *Announcement) { a.Models = []Model{{}} }), RejectInvalid},
	}
	_ = otherKey
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(c.data, now)
			if got := ReasonOf(err); got != c.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, c.reason)
			}
			var re *RejectError
			if !errors.As(err, &re) {
				t.Fatalf("not a RejectError: %v", err)
			}
		})
	}
}

func TestSealRefusesOversized(t *testing.T) {
	key, id := newKey(t)
	a := sample(id, time.Now())
	a.Region = string(make([]byte, MaxAnnouncementSize))
	if _, err := Seal(&a, key); err == nil {
		t.Fatal("Seal accepted an oversized announcement")
	}
}

func TestTTL(t *testing.T) {
	if got := TTL(5 * time.Second); got != 17*time.Second {
		t.Fatalf("TTL(5s) = %s", got)
	}
	if got := TTL(0); got != TTL(MinInterval) {
		t.Fatalf("TTL(0) = %s", got)
	}
	if got := TTL(time.Hour); got != TTL(MaxInterval) {
		t.Fatalf("TTL(1h) = %s", got)
	}
}

func TestCatalogOrderingLeaveAndExpiry(t *testing.T) {
	_, id := newKey(t)
	now := time.Now()
	c := NewCatalog("self", 0)
	var changes []Change
	c.Watch(func(ch Change) { changes = append(changes, ch) })

	a := sample(id, now)
	if !c.Apply(&a, []byte("env7"), now) {
		t.Fatal("first announcement not applied")
	}
	older := a
	older.Seq = 6
	older.Domains = []string{"general"}
	if c.Apply(&older, nil, now) {
		t.Fatal("older seq replaced a newer one")
	}
	if e, _ := c.Get(id); e.Domains[0] != "code" {
		t.Fatal("older seq changed the entry")
	}
	self := sample("self", now)
	if c.Apply(&self, nil, now) || c.Len() != 1 {
		t.Fatal("the catalog listed its own peer")
	}
	leave := Announcement{Peer: id, Seq: 8, Time: now.UnixMilli(), Interval: 5000, Leave: true}
	c.Apply(&leave, nil, now)
	if _, ok := c.Get(id); ok {
		t.Fatal("leave did not remove the peer")
	}
	// A relayed copy of seq 7 must not bring it back.
	if c.Apply(&a, nil, now) {
		t.Fatal("an announcement older than the leave revived the peer")
	}
	// A later life (higher seq) does.
	again := a
	again.Seq = 9
	if !c.Apply(&again, nil, now) {
		t.Fatal("a newer announcement after leave was refused")
	}
	if gone := c.Expire(now.Add(again.TTL() - time.Millisecond)); len(gone) != 0 {
		t.Fatalf("expired early: %v", gone)
	}
	if gone := c.Expire(now.Add(again.TTL() + time.Millisecond)); len(gone) != 1 || gone[0] != id {
		t.Fatalf("did not expire after the TTL: %v", gone)
	}
	var reasons []string
	for _, ch := range changes {
		reasons = append(reasons, ch.Reason)
	}
	want := []string{"joined", "left", "joined", "expired"}
	if len(reasons) != len(want) {
		t.Fatalf("changes %v, want %v", reasons, want)
	}
	for i := range want {
		if reasons[i] != want[i] {
			t.Fatalf("changes %v, want %v", reasons, want)
		}
	}
}

func TestCatalogIsBounded(t *testing.T) {
	c := NewCatalog("self", 3)
	now := time.Now()
	var ids []string
	for i := 0; i < 5; i++ {
		_, id := newKey(t)
		ids = append(ids, id)
		a := sample(id, now.Add(time.Duration(i)*time.Second))
		c.Apply(&a, nil, now.Add(time.Duration(i)*time.Second))
	}
	if c.Len() != 3 {
		t.Fatalf("catalog holds %d, cap 3", c.Len())
	}
	for _, id := range ids[:2] {
		if _, ok := c.Get(id); ok {
			t.Fatal("the least recently heard peer was kept")
		}
	}
}

func TestKeyIsStableAndDistinct(t *testing.T) {
	if !Key(KindDomain, "code").Equals(Key(KindDomain, "code")) {
		t.Fatal("Key not deterministic")
	}
	if Key(KindDomain, "code").Equals(Key(KindModel, "code")) {
		t.Fatal("domain and model keys collide")
	}
}

func TestBeatsKeepKnownPeersAlive(t *testing.T) {
	key, id := newKey(t)
	now := time.Now()
	c := NewCatalog("self", 0)
	beat := Announcement{Peer: id, Seq: 8, Time: now.UnixMilli(), Interval: 5000, Beat: true, State: 7, Load: 3}
	if c.Apply(&beat, nil, now) {
		t.Fatal("a beat introduced an unknown peer")
	}
	full := sample(id, now)
	c.Apply(&full, []byte("full"), now)
	later := now.Add(10 * time.Second)
	beat.Time = later.UnixMilli()
	if !c.Apply(&beat, []byte("beat"), later) {
		t.Fatal("beat for a known peer not applied")
	}
	e, _ := c.Get(id)
	if e.Load != 3 || !e.Expires.After(later) || e.Outdated || e.Domains[0] != "code" {
		t.Fatalf("after beat: %+v", e)
	}
	if gone := c.Expire(now.Add(full.TTL() + time.Second)); len(gone) != 0 {
		t.Fatal("the beat did not extend the TTL")
	}
	envs := c.Envelopes(0)
	if len(envs) != 2 || string(envs[0]) != "full" || string(envs[1]) != "beat" {
		t.Fatalf("catch-up envelopes %q", envs)
	}
	missed := Announcement{Peer: id, Seq: 10, Time: later.UnixMilli(), Interval: 5000, Beat: true, State: 9}
	c.Apply(&missed, nil, later)
	if e, _ := c.Get(id); !e.Outdated {
		t.Fatal("a beat naming an unseen full did not mark the entry outdated")
	}
	// Sealed beats validate; a beat carrying payload does not.
	data, err := Seal(&beat, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(data, later); err != nil {
		t.Fatalf("valid beat rejected: %v", err)
	}
	fat := beat
	fat.Domains = []string{"code"}
	data, _ = Seal(&fat, key)
	if _, err := Open(data, later); ReasonOf(err) != RejectInvalid {
		t.Fatalf("beat with payload: %v", err)
	}
	// A full relayed by catch-up may be older than its TTL (beats kept it alive).
	old := sample(id, now.Add(-30*time.Second))
	data, _ = Seal(&old, key)
	if _, err := Open(data, now); ReasonOf(err) != RejectStale {
		t.Fatalf("old full via gossip: %v", err)
	}
	if _, err := OpenRelayed(data, now); err != nil {
		t.Fatalf("old full via catch-up: %v", err)
	}
}
