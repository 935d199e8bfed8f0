package experts

import (
	"fmt"
	"testing"
	"time"
)

// heldBytes is the sum of EntryBytes over the catalog's entries: what
// Bytes must report.
func heldBytes(c *Catalog) int64 {
	var n int64
	for _, e := range c.Snapshot() {
		n += EntryBytes(&e)
	}
	return n
}

// applySized applies a full announcement of a new key from addr, heard at
// at, whose envelope is size bytes (the catalog keeps envelopes as given;
// gossip verified them before).
func applySized(t *testing.T, c *Catalog, at time.Time, addr string, size int) (string, bool) {
	t.Helper()
	_, id := newKey(t)
	a := sample(id, at)
	a.Addrs = []string{addr}
	return id, c.Apply(&a, make([]byte, size), at)
}

// TestCatalogKeepsWithinItsByteBudget floods a catalog with the largest
// announcements gossip accepts, from many network prefixes, far past its
// byte budget: the bytes it holds never pass the budget and always add up
// to its entries'; the peers it is connected to stay, and so does a
// stranger alone in its prefix (the flood's crowded prefixes give way
// first).
func TestCatalogKeepsWithinItsByteBudget(t *testing.T) {
	const budget = 2_000_000
	c := NewCatalog("self", 0)
	c.SetMaxBytes(budget)
	kept := map[string]bool{}
	c.SetKeep(func(id string) bool { return kept[id] })
	t0 := time.Now().Add(-time.Hour)

	var honest []string
	for i := range 5 {
		id, ok := applySized(t, c, t0, fmt.Sprintf("/ip4/198.51.100.%d/tcp/4001", i), 2000)
		if !ok {
			t.Fatalf("honest peer %d refused", i)
		}
		kept[id] = true
		honest = append(honest, id)
	}
	lone, _ := applySized(t, c, t0, "/ip4/192.0.2.1/tcp/4001", 2000)

	flood := 0
	for i := range 600 { // 600 x 64 KB: 19 times the budget, from 10 /24s
		at := t0.Add(time.Duration(1+i) * time.Second)
		if _, ok := applySized(t, c, at, fmt.Sprintf("/ip4/10.0.%d.%d/tcp/4001", i%10, 1+i/10), MaxAnnouncementSize-512); ok {
			flood++
		}
		held, max := c.Bytes()
		if held > max || max != budget {
			t.Fatalf("after %d large announcements the catalog holds %d bytes, budget %d", i+1, held, max)
		}
		if want := heldBytes(c); held != want {
			t.Fatalf("after %d announcements Bytes says %d, the entries hold %d", i+1, held, want)
		}
	}
	for _, id := range honest {
		if !c.Has(id) {
			t.Fatalf("a connected peer was evicted by the flood")
		}
	}
	if !c.Has(lone) {
		t.Error("a stranger alone in its prefix was evicted before the crowded prefixes")
	}
	held, _ := c.Bytes()
	t.Logf("flood: %d of 600 entered, %d entries hold %d bytes of %d", flood, c.Len(), held, budget)
	if c.Len() < 20 {
		t.Errorf("only %d entries: the budget should hold about 30 of the largest", c.Len())
	}

	// Beats count: a beat's envelope is added, and a catalog that is kept
	// within budget stays there.
	e, _ := c.Get(honest[0])
	b := Announcement{Peer: honest[0], Seq: e.Seq + 1, Time: e.Time, Interval: e.Interval, Beat: true, State: e.Seq, Load: 1}
	if !c.Apply(&b, make([]byte, 300), time.Now()) {
		t.Fatal("beat of a known peer ignored")
	}
	if held, _ := c.Bytes(); held != heldBytes(c) || held > budget {
		t.Fatalf("after a beat Bytes says %d, the entries hold %d (budget %d)", held, heldBytes(c), budget)
	}

	// A smaller budget evicts strangers at once, never the connected.
	c.SetMaxBytes(100_000)
	if held, _ := c.Bytes(); held > 100_000 || held != heldBytes(c) {
		t.Fatalf("after shrinking the budget: %d bytes held (entries %d)", held, heldBytes(c))
	}
	for _, id := range honest {
		if !c.Has(id) {
			t.Fatal("shrinking the budget evicted a connected peer")
		}
	}
	// Removal gives the bytes back.
	for _, e := range c.Snapshot() {
		c.Remove(e.Peer)
	}
	if held, _ := c.Bytes(); held != 0 || c.Len() != 0 {
		t.Fatalf("empty catalog holds %d bytes", held)
	}
}

// TestStrangerTooLargeForKeptPeersIsRefused: a catalog whose budget is
// taken by peers it vouches for refuses a stranger's announcement, and an
// update that would not fit leaves the entry as it was.
func TestStrangerTooLargeForKeptPeersIsRefused(t *testing.T) {
	c := NewCatalog("self", 0)
	c.SetMaxBytes(12_000)
	kept := map[string]bool{}
	c.SetKeep(func(id string) bool { return kept[id] })
	t0 := time.Now().Add(-time.Minute)
	a, _ := applySized(t, c, t0, "/ip4/198.51.100.1/tcp/4001", 3000)
	kept[a] = true
	s, _ := applySized(t, c, t0, "/ip4/203.0.113.1/tcp/4001", 1000)
	if id, ok := applySized(t, c, t0.Add(time.Second), "/ip4/192.0.2.1/tcp/4001", 5000); ok || c.Has(id) {
		t.Fatal("a stranger passed the budget held by a kept peer")
	}
	if _, full := c.Refused(); full != 1 {
		t.Fatalf("refused for a full catalog: %d, want 1", full)
	}
	e, _ := c.Get(s)
	up := e.Announcement
	up.Seq++
	if c.Apply(&up, make([]byte, 20_000), t0.Add(2*time.Second)) {
		t.Fatal("an update past the budget was applied")
	}
	if got, _ := c.Get(s); got.Seq != e.Seq || len(got.Envelope) != 1000 {
		t.Fatalf("the refused update changed the entry: seq %d, envelope %d bytes", got.Seq, len(got.Envelope))
	}
	if _, full := c.Refused(); full != 2 {
		t.Fatalf("refused for a full catalog: %d, want 2", full)
	}
	if held, _ := c.Bytes(); held != heldBytes(c) || held > 12_000 {
		t.Fatalf("holds %d bytes, entries %d", held, heldBytes(c))
	}
}
