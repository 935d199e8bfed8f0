package experts

import (
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/p2p"
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
	// Prefix is the network prefix the entry counts under (see prefixOf):
	// where its author was connected from, else where it says it is.
	Prefix string
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

// Bounds of the catalog, the one piece of state a stranger can make every
// peer keep by announcing itself. Keys cost nothing, so none of these counts
// identities: they count what is harder to fake.
const (
	// DefaultMaxEntries bounds the catalog; past it the DHT finds the rest.
	DefaultMaxEntries = 10000
	// DefaultPrefixCap bounds the entries one network prefix (a /24 of
	// IPv4, a /48 of IPv6, or a relay's, see p2p.Prefix) may hold in the
	// catalog, not counting kept ones (connected or measured, see
	// SetKeep). 64 is more than the peers one rack or office runs, and
	// makes a flood from one range fill at most 64 of 10,000 entries: to
	// fill the catalog an attacker must announce from 157 ranges, where a
	// flood of fresh keys from one address costs it nothing.
	DefaultPrefixCap = 64
	// DefaultMaxBytes bounds the bytes the catalog holds (see EntryBytes),
	// whatever its entries announce: 10,000 typical entries take about
	// 62 MB, but 10,000 near the 32 KiB announcement limit would take
	// 730 MB. 40 MB holds about 6,500 typical entries, or 550 of the
	// largest, within the 50 MB a peer's catalog may cost at any swarm size
	// (issue 19; internal/scale).
	DefaultMaxBytes = 40_000_000
	// entryOverhead is what an entry holds besides its envelopes and
	// their decoding: the Entry itself, the map slots (the catalog's and
	// its prefix set's).
	entryOverhead = 1280
	// MaxTombstones bounds the peers remembered as gone (see Apply). A
	// tombstone only guards against an older announcement relayed after a
	// leave; when full, the one expiring soonest makes room, and a leave of
	// a peer the catalog never held leaves none.
	MaxTombstones = 4096
)

// Catalog is the swarm as this peer sees it. It is safe for concurrent use.
//
// Whom it keeps: a peer this one is connected to or has measured (SetKeep)
// is never evicted, nor refused, to make room for one it only heard of.
// Among the rest, at most the prefix cap share one network prefix, and when
// the catalog is full the least recently heard entry of the most crowded
// prefix goes first, so a flood of identities from few places evicts
// itself before anyone else. The same rules make room when the catalog
// would pass its byte budget (SetMaxBytes): a peer announcing a large entry
// displaces strangers, never a peer this one vouches for.
type Catalog struct {
	self     string
	max      int
	maxBytes int64

	mu         sync.RWMutex
	entries    map[string]*Entry
	prefixes   map[string]map[string]struct{} // prefix -> peers counted under it
	tombstones map[string]tombstone           // peers that left, so an older announcement relayed later cannot revive them
	watchers   []func(Change)
	bytes      int64 // EntryBytes summed over entries
	prefixCap  int
	keep       func(id string) bool
	remote     func(id string) ma.Multiaddr

	refusedPrefix atomic.Uint64
	refusedFull   atomic.Uint64
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
	return &Catalog{self: self, max: maxEntries, maxBytes: DefaultMaxBytes, prefixCap: DefaultPrefixCap, entries: make(map[string]*Entry),
		prefixes: make(map[string]map[string]struct{}), tombstones: make(map[string]tombstone)}
}

// SetKeep tells the catalog which peers this one vouches for: connected to
// or measured (a ping answered). Such a peer is never evicted nor refused for
// one that is not, and does not count against its prefix's cap. keep runs
// under the catalog's lock and must not call the catalog.
func (c *Catalog) SetKeep(keep func(id string) bool) {
	c.mu.Lock()
	c.keep = keep
	c.mu.Unlock()
}

// SetRemote tells the catalog how to find the remote address of a direct
// connection to a peer (nil when there is none). The prefix of that address,
// which the peer cannot lie about, counts before the addresses it announces.
// remote runs under the catalog's lock and must not call the catalog.
func (c *Catalog) SetRemote(remote func(id string) ma.Multiaddr) {
	c.mu.Lock()
	c.remote = remote
	c.mu.Unlock()
}

// SetPrefixCap sets how many entries that are not kept one network prefix
// may hold (n <= 0: DefaultPrefixCap). Entries already held stay.
func (c *Catalog) SetPrefixCap(n int) {
	if n <= 0 {
		n = DefaultPrefixCap
	}
	c.mu.Lock()
	c.prefixCap = n
	c.mu.Unlock()
}

// SetMaxBytes sets the byte budget (n <= 0: DefaultMaxBytes). Entries past
// a smaller budget are evicted at once, by the rules of a full catalog; a
// catalog of kept entries may stay over it.
func (c *Catalog) SetMaxBytes(n int64) {
	if n <= 0 {
		n = DefaultMaxBytes
	}
	c.mu.Lock()
	c.maxBytes = n
	evicted := c.fitLocked("", 0)
	watchers := c.watchers
	c.mu.Unlock()
	notify(watchers, evicted)
}

// Bytes is what the catalog's entries hold, as EntryBytes counts it, and
// its budget.
func (c *Catalog) Bytes() (held, budget int64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes, c.maxBytes
}

// EntryBytes is what the catalog counts an entry as holding: its envelopes,
// the announcement decoded from the full one (4/3 of its size again), and a
// fixed overhead. Fitted to the heap a filled catalog retains, typical and
// near the 32 KiB limit alike (internal/scale, TestCatalogCountsItsHeap).
func EntryBytes(e *Entry) int64 {
	return entryOverhead + int64(len(e.Envelope))*7/3 + int64(len(e.BeatEnvelope))
}

// Refused counts full announcements of peers the catalog did not take: their
// prefix was at its cap, or the catalog was full of entries it keeps.
func (c *Catalog) Refused() (prefixFull, catalogFull uint64) {
	return c.refusedPrefix.Load(), c.refusedFull.Load()
}

// errPrefixFull is Admits' answer for a peer whose prefix is at its cap.
var errPrefixFull = errors.New("its network prefix holds its share of the catalog")

// Admits reports whether a full announcement of a would enter the catalog,
// without changing it, so gossip need not forward what no catalog takes.
// Announcements of peers the catalog holds (updates, beats, leaves) are
// always admitted.
func (c *Catalog) Admits(a *Announcement) error {
	if a.Beat || a.Leave || a.Peer == c.self {
		return nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if _, had := c.entries[a.Peer]; had {
		return nil
	}
	return c.admitsLocked(a.Peer, c.prefixOf(a))
}

func (c *Catalog) admitsLocked(id, prefix string) error {
	if c.kept(id) {
		return nil
	}
	n := 0
	for other := range c.prefixes[prefix] {
		if !c.kept(other) {
			if n++; n >= c.prefixCap {
				return errPrefixFull
			}
		}
	}
	return nil
}

func (c *Catalog) kept(id string) bool { return c.keep != nil && c.keep(id) }

// prefixOf is the network prefix a's author counts under: that of a direct
// connection to it, which it cannot fake; else that of the first public
// address it announces, else the first relayed one (by the relay's prefix),
// else the first on a local range (a LAN, or loopback in tests), else "none"
// (an announcement without a usable address shares one prefix with all such).
// Call with c.mu held.
func (c *Catalog) prefixOf(a *Announcement) string {
	if c.remote != nil {
		if addr := c.remote(a.Peer); addr != nil {
			if p := p2p.Prefix(addr); p != "" {
				return p
			}
		}
	}
	var relayed, local string
	for _, s := range a.Addrs {
		addr, err := ma.NewMultiaddr(s)
		if err != nil {
			continue
		}
		p := p2p.Prefix(addr)
		switch {
		case p == "":
		case p2p.IsRelayed(addr):
			if relayed == "" {
				relayed = p
			}
		case p2p.IsLocal(addr):
			if local == "" {
				local = p
			}
		default:
			return p
		}
	}
	switch {
	case relayed != "":
		return relayed
	case local != "":
		return local
	}
	return "none"
}

func (c *Catalog) addLocked(e *Entry) {
	c.bytes += EntryBytes(e)
	set := c.prefixes[e.Prefix]
	if set == nil {
		set = make(map[string]struct{})
		c.prefixes[e.Prefix] = set
	}
	set[e.Peer] = struct{}{}
	c.entries[e.Peer] = e
}

func (c *Catalog) deleteLocked(id string) {
	e, ok := c.entries[id]
	if !ok {
		return
	}
	delete(c.entries, id)
	c.bytes -= EntryBytes(e)
	if set := c.prefixes[e.Prefix]; set != nil {
		delete(set, id)
		if len(set) == 0 {
			delete(c.prefixes, e.Prefix)
		}
	}
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
		c.bytes -= EntryBytes(old)
		old.LastSeq = a.Seq
		old.Load = a.Load
		old.Interval = a.Interval
		old.BeatEnvelope = envelope
		old.Outdated = a.State != old.Seq
		if seen.After(old.Seen) {
			old.Seen = seen
			old.Expires = seen.Add(a.TTL())
		}
		c.bytes += EntryBytes(old)
		evicted := c.fitLocked(a.Peer, 0)
		watchers := c.watchers
		c.mu.Unlock()
		notify(watchers, evicted)
		return true
	case had && a.Seq <= old.Seq:
		c.mu.Unlock()
		return false
	case a.Leave:
		if had && a.Seq <= old.LastSeq {
			c.mu.Unlock()
			return false
		}
		c.deleteLocked(a.Peer)
		c.tombLocked(a.Peer, a.Seq, now.Add(a.TTL()), had)
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
			e.Prefix = old.Prefix // counted where it first came from
		} else {
			e.Prefix = c.prefixOf(a)
			if c.admitsLocked(a.Peer, e.Prefix) != nil {
				c.mu.Unlock()
				c.refusedPrefix.Add(1)
				return false
			}
		}
		need := EntryBytes(e)
		if had {
			need -= EntryBytes(old)
		}
		if !c.fitsLocked(a.Peer, !had, need) {
			c.mu.Unlock()
			c.refusedFull.Add(1)
			return false
		}
		var evicted []string
		if !had && len(c.entries) >= c.max {
			victim := c.victimLocked(a.Peer)
			c.deleteLocked(victim)
			evicted = append(evicted, victim)
		}
		evicted = append(evicted, c.fitLocked(a.Peer, need)...)
		if had {
			c.deleteLocked(a.Peer)
		}
		c.addLocked(e)
		reason := "updated"
		if !had {
			reason = "joined"
		}
		changes = append(changes, Change{Peer: a.Peer, Reason: reason})
		for _, v := range evicted {
			changes = append(changes, Change{Peer: v, Removed: true, Reason: "evicted"})
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

// fitsLocked reports whether id's entry, new (taking a slot) or not, and
// growing the catalog by need bytes, can be made room for: the victims
// victimLocked would pick, apart from id itself, free enough slots and
// bytes. It changes nothing.
func (c *Catalog) fitsLocked(id string, new bool, need int64) bool {
	slots := 0
	if new && len(c.entries) >= c.max {
		slots = 1
	}
	over := c.bytes + need - c.maxBytes
	if slots == 0 && over <= 0 {
		return true
	}
	if c.kept(id) {
		return len(c.entries) > 1 || !new // a kept peer displaces the least recently heard
	}
	var free int64
	n := 0
	for other, e := range c.entries {
		if other != id && !c.kept(other) {
			free += EntryBytes(e)
			if n++; n >= slots && free >= over {
				return true
			}
		}
	}
	return false
}

// fitLocked evicts, by victimLocked's rules and never id, until the
// catalog grown by need bytes keeps within its byte budget, or nothing is
// left that id may displace. It returns whom it evicted.
func (c *Catalog) fitLocked(id string, need int64) []string {
	var evicted []string
	for c.bytes+need > c.maxBytes {
		v := c.victimLocked(id)
		if v == "" {
			break
		}
		c.deleteLocked(v)
		evicted = append(evicted, v)
	}
	return evicted
}

// notify tells watchers of evicted peers; call without the lock.
func notify(watchers []func(Change), evicted []string) {
	for _, id := range evicted {
		for _, w := range watchers {
			w(Change{Peer: id, Removed: true, Reason: "evicted"})
		}
	}
}

// victimLocked picks the entry to drop so that newcomer can enter a full
// catalog (or keep within its bytes): among the entries not kept, the least
// recently heard of the most crowded prefix. A newcomer that is not kept
// never displaces a kept entry: then there is no victim ("") and the
// newcomer is refused. A kept newcomer in a catalog of kept entries
// displaces the least recently heard. The newcomer itself, when the catalog
// holds it (an update), is never the victim; "" is SetMaxBytes's newcomer,
// a stranger.
func (c *Catalog) victimLocked(newcomer string) string {
	// Prefix sizes from the most crowded down; a flood from few prefixes
	// stops at the first. Among prefixes of one size, the least recently
	// heard entry of any of them.
	sizes := make([]int, 0, 8)
	seen := make(map[int]bool)
	for _, set := range c.prefixes {
		if n := len(set); !seen[n] {
			seen[n] = true
			sizes = append(sizes, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(sizes)))
	for _, n := range sizes {
		var victim string
		var oldest time.Time
		for _, set := range c.prefixes {
			if len(set) != n {
				continue
			}
			if id, at := c.oldestOf(set, newcomer); id != "" && (victim == "" || at.Before(oldest)) {
				victim, oldest = id, at
			}
		}
		if victim != "" {
			return victim
		}
	}
	if !c.kept(newcomer) {
		return ""
	}
	var victim string
	var oldest time.Time
	for id, e := range c.entries {
		if id != newcomer && (victim == "" || e.Seen.Before(oldest)) {
			victim, oldest = id, e.Seen
		}
	}
	return victim
}

// oldestOf is the least recently heard of ids that are not kept, apart
// from except, and when it was heard; "" if none. keep is asked only of an
// entry older than the best so far.
func (c *Catalog) oldestOf(ids map[string]struct{}, except string) (string, time.Time) {
	var victim string
	var oldest time.Time
	for id := range ids {
		e := c.entries[id]
		if e == nil || id == except || (victim != "" && !e.Seen.Before(oldest)) || c.kept(id) {
			continue
		}
		victim, oldest = id, e.Seen
	}
	return victim, oldest
}

// tombLocked remembers that id left with seq, until expires. At
// MaxTombstones the tombstone expiring soonest gives way, for a peer the
// catalog held (had); a stranger's leave leaves no tombstone then.
func (c *Catalog) tombLocked(id string, seq uint64, expires time.Time, had bool) {
	if _, ok := c.tombstones[id]; !ok && len(c.tombstones) >= MaxTombstones {
		if !had {
			return
		}
		var soonest string
		var at time.Time
		for other, ts := range c.tombstones {
			if soonest == "" || ts.expires.Before(at) {
				soonest, at = other, ts.expires
			}
		}
		delete(c.tombstones, soonest)
	}
	c.tombstones[id] = tombstone{seq: seq, expires: expires}
}

// Tombstones is the number of peers remembered as gone.
func (c *Catalog) Tombstones() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.tombstones)
}

// Expire removes entries whose TTL has passed and returns their IDs.
func (c *Catalog) Expire(now time.Time) []string {
	var gone []string
	c.mu.Lock()
	for id, e := range c.entries {
		if now.After(e.Expires) {
			c.deleteLocked(id)
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
	c.deleteLocked(id)
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
