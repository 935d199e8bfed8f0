package experts

import (
	"sort"
	"sync"
	"time"
)

// Entry is one peer in the catalog: its latest announcement, the signed
// envelope it came in (so it can be handed on), and when it was heard.
type Entry struct {
	Announcement           // the latest full announcement
	Envelope     []byte    // its signed envelope
	BeatEnvelope []byte    // the latest beat since, if any
	LastSeq      uint64    // Seq of the latest full or beat applied
	Outdated     bool      // a beat named a newer full than this one, which was missed
	Seen         time.Time // local time the latest full or beat arrived
	Expires      time.Time
}

// Serves reports whether the entry serves model (or any model when model is "").
func (e *Entry) Serves(model string) bool {
	for _, m := range e.Models {
		if model == "" || m.Name == model {
			return true
		}
	}
	return false
}

// HasDomain reports whether the entry declares domain d.
func (e *Entry) HasDomain(d string) bool {
	for _, x := range e.Domains {
		if x == d {
			return true
		}
	}
	return false
}

// Change is what happened to a peer in the catalog.
type Change struct {
	Peer    string
	Removed bool   // left, expired or evicted
	Reason  string // "joined", "updated", "left", "expired", "evicted"
}

// DefaultMaxEntries bounds the catalog. Past it, the peer heard from least
// recently is dropped; the DHT still finds peers beyond the catalog.
const DefaultMaxEntries = 10000

// Catalog is the swarm as this peer sees it. It is safe for concurrent use.
type Catalog struct {
	self string
	max  int

	mu         sync.RWMutex
	entries    map[string]*Entry
	tombstones map[string]tombstone // peers that left, so an older announcement relayed later cannot revive them
	watchers   []func(Change)
}

type tombstone struct {
	seq     uint64
	expires time.Time
}

// NewCatalog returns an empty catalog for the peer self (never listed in it).
func NewCatalog(self string, maxEntries int) *Catalog {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	return &Catalog{self: self, max: maxEntries, entries: make(map[string]*Entry), tombstones: make(map[string]tombstone)}
}

// Watch registers fn to be called after each change, outside the catalog's
// lock, from the goroutine that made the change.
func (c *Catalog) Watch(fn func(Change)) {
	c.mu.Lock()
	c.watchers = append(c.watchers, fn)
	c.mu.Unlock()
}

// Apply takes a verified announcement (see Open) with its envelope, heard at
// now. An announcement no newer than what the catalog holds is ignored; a
// leave removes the peer. It reports whether anything changed.
func (c *Catalog) Apply(a *Announcement, envelope []byte, now time.Time) bool {
	if a.Peer == c.self {
		return false
	}
	var changes []Change
	c.mu.Lock()
	if ts, ok := c.tombstones[a.Peer]; ok && a.Seq <= ts.seq {
		c.mu.Unlock()
		return false
	}
	old, had := c.entries[a.Peer]
	// A relayed (catch-up) announcement may be older than now: it counts
	// from when its author wrote it, never from later.
	seen := now
	if at := a.At(); at.Before(seen) {
		seen = at
	}
	switch {
	case a.Beat:
		// Beats keep known peers alive; an unknown peer waits for a full
		// announcement (or a catch-up) to enter the catalog.
		if !had || a.Seq <= old.LastSeq {
			c.mu.Unlock()
			return false
		}
		old.LastSeq = a.Seq
		old.Load = a.Load
		old.Interval = a.Interval
		old.BeatEnvelope = envelope
		old.Outdated = a.State != old.Seq
		if seen.After(old.Seen) {
			old.Seen = seen
			old.Expires = seen.Add(a.TTL())
		}
		c.mu.Unlock()
		return true
	case had && a.Seq <= old.Seq:
		c.mu.Unlock()
		return false
	case a.Leave:
		if had && a.Seq <= old.LastSeq {
			c.mu.Unlock()
			return false
		}
		delete(c.entries, a.Peer)
		c.tombstones[a.Peer] = tombstone{seq: a.Seq, expires: now.Add(a.TTL())}
		if had {
			changes = append(changes, Change{Peer: a.Peer, Removed: true, Reason: "left"})
		}
	default:
		e := &Entry{Announcement: *a, Envelope: envelope, LastSeq: a.Seq, Seen: seen, Expires: seen.Add(a.TTL())}
		if had {
			if old.LastSeq > e.LastSeq {
				e.LastSeq, e.BeatEnvelope = old.LastSeq, old.BeatEnvelope
			}
			if old.Seen.After(e.Seen) {
				e.Seen, e.Expires = old.Seen, old.Expires
			}
		}
		c.entries[a.Peer] = e
		reason := "updated"
		if !had {
			reason = "joined"
		}
		changes = append(changes, Change{Peer: a.Peer, Reason: reason})
		if len(c.entries) > c.max {
			if victim := c.oldestLocked(); victim != "" {
				delete(c.entries, victim)
				changes = append(changes, Change{Peer: victim, Removed: true, Reason: "evicted"})
			}
		}
	}
	watchers := c.watchers
	c.mu.Unlock()
	for _, ch := range changes {
		for _, w := range watchers {
			w(ch)
		}
	}
	return len(changes) > 0
}

func (c *Catalog) oldestLocked() string {
	var victim string
	var oldest time.Time
	for id, e := range c.entries {
		if victim == "" || e.Seen.Before(oldest) {
			victim, oldest = id, e.Seen
		}
	}
	return victim
}

// Expire removes entries whose TTL has passed and returns their IDs.
func (c *Catalog) Expire(now time.Time) []string {
	var gone []string
	c.mu.Lock()
	for id, e := range c.entries {
		if now.After(e.Expires) {
			delete(c.entries, id)
			gone = append(gone, id)
		}
	}
	for id, ts := range c.tombstones {
		if now.After(ts.expires) {
			delete(c.tombstones, id)
		}
	}
	watchers := c.watchers
	c.mu.Unlock()
	sort.Strings(gone)
	for _, id := range gone {
		for _, w := range watchers {
			w(Change{Peer: id, Removed: true, Reason: "expired"})
		}
	}
	return gone
}

// Remove drops a peer at once (for example one found to be lying).
func (c *Catalog) Remove(id string) {
	c.mu.Lock()
	_, had := c.entries[id]
	delete(c.entries, id)
	watchers := c.watchers
	c.mu.Unlock()
	if had {
		for _, w := range watchers {
			w(Change{Peer: id, Removed: true, Reason: "evicted"})
		}
	}
}

// Get returns a copy of id's entry.
func (c *Catalog) Get(id string) (Entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.entries[id]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// Has reports whether id is in the catalog, without copying its entry.
func (c *Catalog) Has(id string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.entries[id]
	return ok
}

// Select returns copies of the entries keep accepts, in no particular
// order: what a request needs, without copying and sorting the whole catalog.
func (c *Catalog) Select(keep func(*Entry) bool) []Entry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []Entry
	for _, e := range c.entries {
		if keep(e) {
			out = append(out, *e)
		}
	}
	return out
}

// Len is the number of peers in the catalog.
func (c *Catalog) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// Snapshot returns a copy of every entry, sorted by peer ID. Slices inside
// entries are shared with the catalog and must not be modified.
func (c *Catalog) Snapshot() []Entry {
	c.mu.RLock()
	out := make([]Entry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, *e)
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

// Envelopes returns the signed announcements of up to max peers, most
// recently heard first, for handing to a newcomer: each peer's full
// announcement, then its latest beat when it has one.
func (c *Catalog) Envelopes(max int) [][]byte {
	type pair struct {
		seen       time.Time
		full, beat []byte
	}
	c.mu.RLock()
	ps := make([]pair, 0, len(c.entries))
	for _, e := range c.entries { // copied under the lock: beats update entries in place
		p := pair{seen: e.Seen, full: e.Envelope}
		if e.BeatEnvelope != nil && e.LastSeq > e.Seq {
			p.beat = e.BeatEnvelope
		}
		ps = append(ps, p)
	}
	c.mu.RUnlock()
	sort.Slice(ps, func(i, j int) bool { return ps[i].seen.After(ps[j].seen) })
	if max > 0 && len(ps) > max {
		ps = ps[:max]
	}
	out := make([][]byte, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.full)
		if p.beat != nil {
			out = append(out, p.beat)
		}
	}
	return out
}

// EnvelopesOf returns the signed announcements (full, then beat) of the
// given peers that the catalog holds.
func (c *Catalog) EnvelopesOf(ids []string) [][]byte {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out [][]byte
	for _, id := range ids {
		e, ok := c.entries[id]
		if !ok {
			continue
		}
		out = append(out, e.Envelope)
		if e.BeatEnvelope != nil && e.LastSeq > e.Seq {
			out = append(out, e.BeatEnvelope)
		}
	}
	return out
}
