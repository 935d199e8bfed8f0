package experts

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/mwpeer/mwpeer/experts/catchup"
)

// The announcement shard width (GossipConfig.ShardBits) can be chosen by
// the peers themselves (ShardBitsAuto). Each peer sizes its shard from what
// it can observe and checks it against the widths its neighbours use:
//
//   - Estimate: the authors its catalog holds in its own shard, itself
//     included. Above AutoShard.SplitAbove it splits (one more bit),
//     below MergeBelow it merges (one bit less); between the two it keeps
//     its width (hysteresis: a split halves the count, a merge doubles it,
//     and Validate keeps 2×MergeBelow under SplitAbove, so neither undoes
//     the other).
//   - Majority: the widths of its voters: connected peers of any shard
//     (each names its width in a protocol ID, WidthProtocol, which
//     identify carries) and the authors of its shard it vouches for
//     (connected or measured, GossipConfig.Vouched) that announce a width.
//     When more than two thirds of at least MinVoters voters use another
//     width, the peer steps one bit towards it, but only when its own
//     estimate, scaled to that width, lies between the thresholds: it
//     follows the swarm where its own count is indifferent, and never into
//     a width its estimate would leave again.
//   - Joining: in its first Dwell, before any change, a peer adopts the
//     majority width at once (its catalog is still empty), so that a
//     newcomer to a swarm of 2^k shards does not walk there a bit per Dwell.
//
// Every change after the first waits Dwell since the last, moves one bit,
// and stays within 0..MaxAnnounceShardBits. A change joins the new topic
// and keeps the old one for Grace: announcements go out on both and are
// accepted from both (each topic's validator checks its own shard), so no
// one misses anything while the others switch. After the grace the old
// topic is left, and after a split the catalog drops the peers that are
// no longer in this peer's shard, except those it vouches for (connected
// or measured: a peer it is using), which expire with their last
// announcement as nothing refreshes them.
//
// The size is estimated from the catalog alone. kad-dht's
// IpfsDHT.NetworkSize (in v0.36.0, marked experimental) was left out: it
// has no estimate until enough of this peer's own lookups have returned a
// full bucket of 20 closest peers (never in a swarm of fewer than 20 DHT
// servers, late in a quiet one); it counts DHT servers, not announcing
// authors; and it is fed by whoever answers lookups, no harder for a
// Sybil to move than a catalog the prefix cap and byte budget bound.
//
// What bounds a Sybil flood: the estimate counts catalog entries, and the
// catalog admits at most DefaultPrefixCap strangers per network prefix
// and DefaultMaxBytes in all; a split needs SplitAbove of them in this
// peer's half, a second split twice as many, one per Dwell. Votes count
// only connected or measured peers (each a live secure connection, which
// the connection manager and resource manager bound per IP), and a
// majority can move a peer only where its own estimate is indifferent:
// it cannot drive a peer whose shard holds 1,000 authors to 16 bits.

// ShardBitsAuto as GossipConfig.ShardBits lets the peers choose the width.
const ShardBitsAuto = -1

// WidthProtocol prefixes the protocol ID by which a peer tells the peers
// it is connected to the announcement shard width it uses
// ("/mwpeer/announce-width/1.0.0/<bits>"): identify hands every peer's
// protocol list to its neighbours, and pushes it when it changes, so a
// peer learns the widths of its connected neighbours, of any shard, for
// free. No stream is ever opened on it.
const WidthProtocol = "/mwpeer/announce-width/1.0.0/"

// The default thresholds of AutoShard: a shard of more than
// DefaultSplitAbove authors splits, one of fewer than DefaultMergeBelow
// merges. The scale model (internal/scale) sizes an automatic swarm by
// them. The split is at TargetRate × MaxInterval (20/s × 60 s): a shard
// of up to 1,200 authors at the longest default interval hands each peer
// at most 20 announcements a second (about 88 KB/s of gossip in the
// model), where 2,000 would hand it 33 (147 KB/s, past the 100 KB/s goal).
const (
	DefaultSplitAbove = 1200
	DefaultMergeBelow = 250
)

// AutoShard says when an automatic width splits and merges.
type AutoShard struct {
	// SplitAbove and MergeBelow: authors in this peer's shard, itself
	// included (defaults 1,200 and 250).
	SplitAbove, MergeBelow int
	// Dwell is the least time between two changes of width, and how long
	// a new peer may adopt the majority's width at once (default 10 min).
	Dwell time.Duration
	// Grace is how long the previous topic is kept after a change
	// (default 2 min: two heartbeats at the longest default interval).
	Grace time.Duration
	// Check is how often the width is reconsidered (default Dwell/20,
	// between 100 ms and 15 s).
	Check time.Duration
	// MinVoters is how many voters a majority needs (default 3).
	MinVoters int
}

// withDefaults fills in what a is missing.
func (a AutoShard) withDefaults() AutoShard {
	if a.SplitAbove <= 0 {
		a.SplitAbove = DefaultSplitAbove
	}
	if a.MergeBelow <= 0 {
		a.MergeBelow = min(DefaultMergeBelow, a.SplitAbove/4)
	}
	if a.Dwell <= 0 {
		a.Dwell = 10 * time.Minute
	}
	if a.Grace <= 0 {
		a.Grace = 2 * time.Minute
	}
	if a.Check <= 0 {
		a.Check = min(max(a.Dwell/20, 100*time.Millisecond), 15*time.Second)
	}
	if a.MinVoters <= 0 {
		a.MinVoters = 3
	}
	return a
}

// Validate checks that the thresholds leave room for hysteresis.
func (a AutoShard) Validate() error {
	if a.SplitAbove < 0 || a.MergeBelow < 0 || a.Dwell < 0 || a.Grace < 0 || a.Check < 0 || a.MinVoters < 0 {
		return fmt.Errorf("negative automatic shard setting %+v", a)
	}
	d := a.withDefaults()
	if 2*d.MergeBelow >= d.SplitAbove {
		return fmt.Errorf("merge below %d and split above %d: a merge would split again (want 2×merge < split)", d.MergeBelow, d.SplitAbove)
	}
	return nil
}

// widthView is what a width decision looks at.
type widthView struct {
	bits    int         // the current width
	authors int         // authors in this peer's shard at bits, itself included
	votes   map[int]int // voters per width they use
	since   time.Duration
	fresh   bool // no change yet and started less than Dwell ago
}

// decide returns the width to use next and why ("" when it stays).
func (a AutoShard) decide(v widthView) (int, string) {
	target, n, total := majority(v.votes)
	if total >= a.MinVoters && target != v.bits && 3*n > 2*total {
		target = max(0, min(target, MaxAnnounceShardBits))
		if v.fresh {
			return target, "joined the majority"
		}
		step := v.bits + 1
		if target < v.bits {
			step = v.bits - 1
		}
		if v.since >= a.Dwell && a.indifferent(v.authors, v.bits, step) {
			return step, "followed the majority"
		}
	}
	if v.since < a.Dwell {
		return v.bits, ""
	}
	switch {
	case v.authors > a.SplitAbove && v.bits < MaxAnnounceShardBits:
		return v.bits + 1, "split"
	case v.authors < a.MergeBelow && v.bits > 0:
		return v.bits - 1, "merged"
	}
	return v.bits, ""
}

// indifferent reports whether authors counted at width from, scaled to
// width to, lie between the thresholds: this peer's own estimate would
// keep width to.
func (a AutoShard) indifferent(authors, from, to int) bool {
	scaled := float64(authors)
	if to > from {
		scaled /= 2
	} else {
		scaled *= 2
	}
	return scaled >= float64(a.MergeBelow) && scaled <= float64(a.SplitAbove)
}

// majority returns the width most voters use (the narrower on a tie), how
// many use it, and how many voted.
func majority(votes map[int]int) (width, n, total int) {
	width = -1
	for w, c := range votes {
		total += c
		if c > n || (c == n && w < width) {
			width, n = w, c
		}
	}
	return width, n, total
}

// shardTopic is one announcement topic this peer has joined: its current
// one, and during a grace period the previous one.
type shardTopic struct {
	bits, shard int
	name        string
	topic       *pubsub.Topic
	sub         *pubsub.Subscription
	cancel      context.CancelFunc // stops the goroutines startTopic started
	wg          sync.WaitGroup
}

// joinTopic joins the topic of this peer's shard at bits, with a validator
// that accepts the authors of that shard only.
func (g *Gossip) joinTopic(bits int) (*shardTopic, error) {
	st := &shardTopic{bits: bits, shard: AnnounceShard(g.self, bits)}
	st.name = AnnounceTopic(bits, st.shard)
	inTopic := func(id string) bool { return g.inShardAt(id, bits) }
	validate := func(ctx context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		return g.validateIn(inTopic, from, msg)
	}
	if err := g.ps.RegisterTopicValidator(st.name, validate); err != nil {
		return nil, fmt.Errorf("experts: register validator of %s: %w", st.name, err)
	}
	t, err := g.ps.Join(st.name)
	if err != nil {
		g.ps.UnregisterTopicValidator(st.name)
		return nil, fmt.Errorf("experts: join %s: %w", st.name, err)
	}
	sub, err := t.Subscribe()
	if err != nil {
		t.Close()
		g.ps.UnregisterTopicValidator(st.name)
		return nil, fmt.Errorf("experts: subscribe %s: %w", st.name, err)
	}
	st.topic, st.sub = t, sub
	if err := t.SetScoreParams(TopicScoreParams()); err != nil {
		// A router without peer scoring (a test's bare GossipSub) still
		// works; anything else is a parameter GossipSub refused.
		if strings.Contains(err.Error(), "not enabled") {
			g.log.Debug("announce topic unscored", "err", err)
		} else {
			g.log.Warn("announce topic unscored", "err", err)
		}
	}
	return st, nil
}

// startTopic receives st's messages and watches its joins until ctx ends
// or closeTopic.
func (g *Gossip) startTopic(ctx context.Context, st *shardTopic) {
	ctx, st.cancel = context.WithCancel(ctx)
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		g.receive(ctx, st.sub)
	}()
	events, err := st.topic.EventHandler()
	if err != nil {
		return
	}
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		defer events.Cancel()
		for {
			ev, err := events.NextPeerEvent(ctx)
			if err != nil {
				return
			}
			// Re-announce only when the last announcement reached no topic
			// neighbour (typically the first one, sent before joining):
			// then it was heard by nobody.
			if ev.Type == pubsub.PeerJoin && g.unheard.Load() {
				g.mu.Lock()
				g.dirty = true // the re-announcement must be a full one
				g.mu.Unlock()
				select {
				case g.joins <- struct{}{}:
				default:
				}
			}
		}
	}()
}

// closeTopic stops st's goroutines and leaves it.
func (g *Gossip) closeTopic(st *shardTopic) {
	if st == nil {
		return
	}
	if st.cancel != nil {
		st.cancel()
	}
	st.sub.Cancel()
	st.wg.Wait()
	if err := st.topic.Close(); err != nil {
		g.log.Debug("leave announce topic", "topic", st.name, "err", err)
	}
	g.ps.UnregisterTopicValidator(st.name)
}

// topics returns the current topic and, during a grace period, the
// previous one.
func (g *Gossip) topics() (cur, old *shardTopic) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	return g.cur, g.old
}

// ShardWidths returns the announcement shard width this peer uses and,
// during the grace period after a change, the one it used before (inGrace
// true; previous equals current otherwise). DHT keys salted by shard are
// provided and looked up under both while inGrace.
func (g *Gossip) ShardWidths() (current, previous int, inGrace bool) {
	cur, old := g.topics()
	if old == nil {
		return cur.bits, cur.bits, false
	}
	return cur.bits, old.bits, true
}

// Widths is ShardWidths as a list: the current width, then the previous
// one during a grace period.
func (g *Gossip) Widths() []int {
	cur, prev, grace := g.ShardWidths()
	if grace {
		return []int{cur, prev}
	}
	return []int{cur}
}

// WidthStatus is what a peer shows of its announcement shard width.
type WidthStatus struct {
	Auto     bool
	Bits     int
	Previous int           // during a grace period
	GraceEnd time.Time     // zero outside a grace period
	Estimate int           // authors in this peer's shard × 2^Bits, at the last check
	Authors  int           // authors in this peer's shard, itself included, at the last check
	Changed  time.Time     // the last change (zero: none)
	Reason   string        // why it last changed
	Dwell    time.Duration // the least time between two changes
}

// WidthStatus returns the shard width, the estimate behind it and the
// grace period.
func (g *Gossip) WidthStatus() WidthStatus {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	st := WidthStatus{Auto: g.auto, Bits: g.cur.bits, Previous: g.cur.bits, Authors: g.authors,
		Estimate: g.authors << g.cur.bits, Reason: g.reason, Dwell: g.cfg.Auto.Dwell}
	if !g.changedAt.Equal(g.started) {
		st.Changed = g.changedAt
	}
	if g.old != nil {
		st.Previous, st.GraceEnd = g.old.bits, g.graceEnd
	}
	return st
}

// inShardAt reports whether the peer with ID id is in this peer's shard
// at width bits.
func (g *Gossip) inShardAt(id string, bits int) bool {
	if bits == 0 {
		return true
	}
	pid, err := peer.Decode(id)
	return err == nil && AnnounceShard(pid, bits) == AnnounceShard(g.self, bits)
}

// widthProtocol is the protocol ID that names width bits.
func widthProtocol(bits int) protocol.ID {
	return protocol.ID(WidthProtocol + strconv.Itoa(bits))
}

// showWidth tells connected peers (through identify) the width this peer
// uses now, and no longer the one before.
func (g *Gossip) showWidth(bits, before int) {
	if before >= 0 && before != bits {
		g.h.RemoveStreamHandler(widthProtocol(before))
	}
	g.h.SetStreamHandler(widthProtocol(bits), func(s network.Stream) { _ = s.Reset() })
}

// votes counts the widths of this peer's voters: connected peers that name
// one in their protocols, and authors of its shard it vouches for that
// announce one; each peer once.
func (g *Gossip) votes() map[int]int {
	byPeer := map[peer.ID]int{}
	for _, p := range g.h.Network().Peers() {
		protos, err := g.h.Peerstore().GetProtocols(p)
		if err != nil {
			continue
		}
		for _, pr := range protos {
			if w, ok := strings.CutPrefix(string(pr), WidthProtocol); ok {
				if bits, err := strconv.Atoi(w); err == nil && bits >= 0 && bits <= MaxAnnounceShardBits {
					byPeer[p] = bits
				}
			}
		}
	}
	g.mu.Lock()
	for id, bits := range g.widthOf {
		if !g.cfg.Catalog.Has(id) {
			delete(g.widthOf, id) // expired or dropped: no longer a voter
			continue
		}
		pid, err := peer.Decode(id)
		if err != nil || !g.vouched(pid) {
			continue
		}
		byPeer[pid] = bits
	}
	g.mu.Unlock()
	out := map[int]int{}
	for _, bits := range byPeer {
		out[bits]++
	}
	return out
}

// vouched reports whether this peer vouches for p: GossipConfig.Vouched,
// or a live connection when that is not set.
func (g *Gossip) vouched(p peer.ID) bool {
	if g.cfg.Vouched != nil {
		return g.cfg.Vouched(p.String())
	}
	return g.h.Network().Connectedness(p) == network.Connected
}

// noteWidth remembers the width an author of this shard announced.
func (g *Gossip) noteWidth(a *Announcement) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, known := g.widthOf[a.Peer]; !known && len(g.widthOf) >= MaxAuthorsTracked {
		return
	}
	g.widthOf[a.Peer] = a.ShardBits
}

// shardAuthors counts the authors the catalog holds in this peer's shard at
// bits, itself included.
func (g *Gossip) shardAuthors(bits int) int {
	if bits == 0 {
		return g.cfg.Catalog.Len() + 1
	}
	return len(g.cfg.Catalog.Select(func(e *Entry) bool { return g.inShardAt(e.Peer, bits) })) + 1
}

// autoWidth reconsiders the width every Check, and ends grace periods.
func (g *Gossip) autoWidth(ctx context.Context) {
	defer g.wg.Done()
	t := time.NewTicker(g.cfg.Auto.Check)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			g.checkWidth(ctx, now)
		}
	}
}

// checkWidth ends a grace period that is over, then, for an automatic
// width outside one, changes it when decide says so.
func (g *Gossip) checkWidth(ctx context.Context, now time.Time) {
	g.wmu.Lock()
	cur, old, graceOver := g.cur, g.old, g.old != nil && !now.Before(g.graceEnd)
	g.wmu.Unlock()
	if graceOver {
		g.endGrace(cur, old)
		old = nil
	}
	authors := g.shardAuthors(cur.bits)
	g.wmu.Lock()
	g.authors = authors
	view := widthView{bits: cur.bits, authors: authors, since: now.Sub(g.changedAt),
		fresh: g.changedAt.Equal(g.started) && now.Sub(g.started) < g.cfg.Auto.Dwell}
	g.wmu.Unlock()
	if !g.auto || old != nil {
		return
	}
	view.votes = g.votes()
	next, why := g.cfg.Auto.decide(view)
	if next == cur.bits {
		return
	}
	if err := g.switchWidth(ctx, next, why, now); err != nil && ctx.Err() == nil {
		g.log.Warn("announcement shard width unchanged", "bits", cur.bits, "want", next, "err", err)
	}
}

// switchWidth joins the topic of width bits, keeps the current one for the
// grace period, and announces on the new one.
func (g *Gossip) switchWidth(ctx context.Context, bits int, why string, now time.Time) error {
	st, err := g.joinTopic(bits)
	if err != nil {
		return err
	}
	g.startTopic(ctx, st)
	g.wmu.Lock()
	prev := g.cur
	g.cur, g.old = st, prev
	g.graceEnd, g.changedAt, g.reason = now.Add(g.cfg.Auto.Grace), now, why
	authors := g.authors
	g.wmu.Unlock()
	g.showWidth(bits, prev.bits)
	g.log.Info("announcement shard width changed", "bits", bits, "from", prev.bits, "shard", st.shard, "why", why,
		"shard_authors", authors, "grace", g.cfg.Auto.Grace)
	g.Changed() // a full announcement on the new topic
	if g.cfg.WidthChanged != nil {
		g.cfg.WidthChanged()
	}
	if bits < prev.bits {
		// A merge: the other half's announcements are news to this peer.
		g.mu.Lock()
		g.quietUntil = time.Time{}
		g.mu.Unlock()
		g.catchUpShard(ctx, 2)
	}
	return nil
}

// endGrace leaves the previous topic and, after a split, drops the catalog
// entries of the other half that this peer does not vouch for.
func (g *Gossip) endGrace(cur, old *shardTopic) {
	g.wmu.Lock()
	if g.old != old {
		g.wmu.Unlock()
		return
	}
	g.old = nil
	g.wmu.Unlock()
	g.closeTopic(old)
	dropped := 0
	if cur.bits > old.bits {
		for _, e := range g.cfg.Catalog.Select(func(e *Entry) bool { return !g.inShardAt(e.Peer, cur.bits) }) {
			if pid, err := peer.Decode(e.Peer); err == nil && g.vouched(pid) {
				continue
			}
			g.cfg.Catalog.Remove(e.Peer)
			dropped++
		}
	}
	g.log.Info("announcement shard grace over", "bits", cur.bits, "left", old.name, "dropped", dropped)
	if g.cfg.WidthChanged != nil {
		g.cfg.WidthChanged()
	}
}

// catchUpShard catches up, in the background, from up to n connected peers
// of this peer's shard that serve catch-up.
func (g *Gossip) catchUpShard(ctx context.Context, n int) {
	for _, p := range g.h.Network().Peers() {
		if n == 0 {
			return
		}
		if ok, err := g.h.Peerstore().SupportsProtocols(p, catchup.ID); err != nil || len(ok) == 0 || !g.inShardID(p) {
			continue
		}
		n--
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if applied, err := g.catchUp(ctx, p, nil); err != nil {
				g.log.Debug("catch-up after a width change failed", "other", p.ShortString(), "err", err)
			} else {
				g.log.Debug("caught up after a width change", "other", p.ShortString(), "applied", applied)
			}
		}()
	}
}
