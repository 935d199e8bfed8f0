package experts

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/experts/catchup"
	"github.com/mwpeer/mwpeer/internal/wire"
	"github.com/mwpeer/mwpeer/p2p"
)

// Topic is the GossipSub topic that carries announcements.
const Topic = "/mwpeer/announce/1.0.0"

// RejectWrongShard counts announcements, gossiped or caught up, whose
// author belongs to another announcement shard than this peer's: a
// neighbour that forwards them on this shard's topic is misbehaving.
const RejectWrongShard = "wrong_shard"

// MaxAnnounceShardBits bounds GossipConfig.ShardBits: 2^16 topics of 1,000
// authors each are 65 million peers.
const MaxAnnounceShardBits = 16

// KindAnnounceShard is the kind of the DHT key under which the peers of one
// announcement shard provide themselves ("announce-shard/<bits>/<shard>"),
// so that a peer whose connections hold few of its shard finds more.
const KindAnnounceShard = "announce-shard"

// AnnounceShard is the announcement shard of id among 2^bits: the first
// bits bits of SHA-256 over the peer ID's bytes (its multihash). The hash
// makes the prefix uniform: an Ed25519 peer ID's multihash starts with the
// same identity-hash and key-type bytes for every peer.
func AnnounceShard(id peer.ID, bits int) int {
	if bits <= 0 {
		return 0
	}
	sum := sha256.Sum256([]byte(id))
	return int(binary.BigEndian.Uint32(sum[:4]) >> (32 - bits))
}

// AnnounceTopic is the announcement topic of shard among 2^bits: Topic
// itself when bits is 0, so an unsharded swarm is unchanged. The topic
// names bits too: peers configured with different widths never mix.
func AnnounceTopic(bits, shard int) string {
	if bits <= 0 {
		return Topic
	}
	return fmt.Sprintf("%s/shard/%d/%d", Topic, bits, shard)
}

// AnnounceShardKey is the DHT key name ("<bits>/<shard>", of kind
// KindAnnounceShard) the peers of a shard provide; "" when bits is 0.
func AnnounceShardKey(bits, shard int) string {
	if bits <= 0 {
		return ""
	}
	return fmt.Sprintf("%d/%d", bits, shard)
}

// RejectTooFrequent counts announcements that arrive closer together than
// MinSpacing from one author: a peer cannot make the swarm forward a flood.
const RejectTooFrequent = "too_frequent"

// MinSpacing is the least time between two accepted announcements of one
// author on average, and between two of its leaves: a leave skips no
// limit, though it has its own, so one sent right after a heartbeat still
// goes through.
//
// Announcements are allowed a burst of SpacingBurst: two sent a second
// apart can arrive 0.4 s apart after different paths through a loaded
// mesh, and the second, often the full one a joining peer needs, must not
// be dropped (an ignored message is not forwarded either). In the
// latency-shaped world test at a load of 20 on 2 cores, a strict spacing
// ignored one announcement in ten and left catalogs incomplete for
// minutes. A flood still gets no more than one per MinSpacing through.
const (
	MinSpacing   = 500 * time.Millisecond
	SpacingBurst = 2
)

// MaxAuthorsTracked bounds the authors whose last announcement time the
// validator remembers. An author is forgotten SpacingBurst×MinSpacing after
// it was heard, so only a flood of more than this many distinct keys
// within a second fills it; past it, announcements of authors not
// remembered are dropped (not forwarded, not counted against the forwarder)
// until the oldest are forgotten.
const MaxAuthorsTracked = 16384

// RejectPrefixFull counts full announcements of new peers dropped, without
// blame, because the author's network prefix holds its share of the catalog
// (Catalog.Admits). They are not forwarded either: no catalog would take
// them.
const RejectPrefixFull = "prefix_full"

// GossipConfig says how a peer announces itself.
type GossipConfig struct {
	Key     crypto.PrivKey
	Catalog *Catalog
	// Local returns what this peer currently says about itself; Gossip fills
	// in Peer, Seq, Time and Interval.
	Local func() Announcement
	// The heartbeat interval adapts to the swarm's size so that each peer
	// receives about TargetRate announcements per second in all:
	// interval = clamp(peers / TargetRate, MinInterval, MaxInterval).
	// Defaults: 5 s, 60 s and 20 per second, so up to 100 peers announce
	// every 5 s (a dead peer is forgotten after 17 s) and at 1,200 peers
	// every minute. Past that the catalog is capped and the DHT finds the rest.
	MinInterval time.Duration
	MaxInterval time.Duration
	TargetRate  float64
	// CatchUpMax bounds how many announcements a newcomer is handed.
	CatchUpMax int
	// CatchUpPerPrefix bounds the full catch-ups this peer answers per
	// catch-up interval (10 s) for requesters of one network prefix
	// (0: DefaultCatchUpPerPrefix); loopback requesters are not limited.
	CatchUpPerPrefix int
	// ShardBits splits announcements over 2^ShardBits topics by the first
	// ShardBits bits of the author's hashed peer ID (AnnounceShard): this
	// peer announces on, hears and catches up only its own shard, and finds
	// experts beyond it through DHT providers. 0: one topic for the swarm.
	// ShardBitsAuto (-1): start at 0 and let the swarm's size choose (see
	// AutoShard); a fixed value pins it, and the peers of a swarm must then
	// agree on it (a pinned peer still tells others its width).
	ShardBits int
	// Auto says when an automatic width splits and merges.
	Auto AutoShard
	// Vouched reports whether this peer vouches for a peer (connected or
	// measured): only those count as voters for a width, and only those of
	// another shard stay in the catalog after a split. nil: connected.
	Vouched func(id string) bool
	// WidthChanged, if set, is called after the width changes and after a
	// grace period ends (ShardWidths changed); it must not block.
	WidthChanged func()
	// Providers, if set, finds peers providing kind/name on the DHT
	// (FindProviders): with ShardBits > 0 a peer with few neighbours on its
	// shard's topic looks up the others of its shard with it.
	Providers func(ctx context.Context, kind, name string, max int) ([]peer.AddrInfo, error)
	Logger    *slog.Logger
}

// Gossip publishes this peer's announcements, validates and applies
// everyone else's, expires the silent, and hands newcomers the catalog.
type Gossip struct {
	cfg       GossipConfig
	h         host.Host
	ps        *pubsub.PubSub
	self      peer.ID
	log       *slog.Logger
	closeOnce sync.Once
	joins     chan struct{} // a peer joined a topic while unheard

	wmu       sync.Mutex  // guards the width's state below
	cur, old  *shardTopic // the current topic; the previous one during a grace period
	graceEnd  time.Time
	started   time.Time
	changedAt time.Time // the last width change (started when none)
	reason    string    // why it changed
	authors   int       // authors in this peer's shard at the last check
	auto      bool      // the width is chosen automatically

	seq       atomic.Uint64
	changed   chan struct{}
	accepted  atomic.Uint64
	recovered atomic.Uint64
	rejected  map[string]*atomic.Uint64
	interval  atomic.Int64
	unheard   atomic.Bool // the last announcement went out with no topic peer

	mu       sync.Mutex
	lastFull []byte           // our latest signed full announcement
	lastBeat []byte           // and the latest beat after it
	fullSeq  uint64           // Seq of lastFull
	beats    int              // beats since lastFull
	dirty    bool             // something changed since lastFull
	lastFrom map[string]heard // author -> when we last accepted one of theirs
	pruned   time.Time        // when lastFrom was last pruned
	syncedAt map[peer.ID]time.Time
	served   map[peer.ID]time.Time
	fetched  map[peer.ID]time.Time       // targeted catch-ups served, per requester
	prefixes map[string][]time.Time      // full catch-ups served, per requester's network prefix
	wanted   map[peer.ID]map[string]bool // unknown authors of beats, by the neighbour that relayed them
	widthOf  map[string]int              // author of this shard -> the width it announced
	// quietUntil: no full catch-up is started before it (see catchUpQuiet).
	quietUntil time.Time

	catchUpService *catchup.Service

	wg     sync.WaitGroup
	cancel context.CancelFunc
}

// JoinGossip joins the announcement topic on ps and registers the
// validator and the catch-up protocol on h. Call Start to start announcing.
func JoinGossip(ps *pubsub.PubSub, h host.Host, cfg GossipConfig) (*Gossip, error) {
	if cfg.Key == nil || cfg.Catalog == nil || cfg.Local == nil {
		return nil, errors.New("experts: gossip needs a key, a catalog and a Local function")
	}
	if cfg.ShardBits < ShardBitsAuto || cfg.ShardBits > MaxAnnounceShardBits {
		return nil, fmt.Errorf("experts: %d announcement shard bits, want 0 to %d or %d (automatic)", cfg.ShardBits, MaxAnnounceShardBits, ShardBitsAuto)
	}
	if err := cfg.Auto.Validate(); err != nil {
		return nil, fmt.Errorf("experts: %w", err)
	}
	cfg.Auto = cfg.Auto.withDefaults()
	wire.Default(&cfg.MinInterval, 5*time.Second)
	if cfg.MaxInterval < cfg.MinInterval {
		cfg.MaxInterval = max(60*time.Second, cfg.MinInterval)
	}
	wire.Default(&cfg.TargetRate, 20)
	wire.Default(&cfg.CatchUpMax, 2048)
	wire.Default(&cfg.CatchUpPerPrefix, DefaultCatchUpPerPrefix)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Gossip{
		cfg:      cfg,
		h:        h,
		ps:       ps,
		self:     h.ID(),
		log:      cfg.Logger,
		joins:    make(chan struct{}, 1),
		auto:     cfg.ShardBits == ShardBitsAuto,
		widthOf:  make(map[string]int),
		changed:  make(chan struct{}, 1),
		rejected: make(map[string]*atomic.Uint64),
		lastFrom: make(map[string]heard),
		syncedAt: make(map[peer.ID]time.Time),
		served:   make(map[peer.ID]time.Time),
		fetched:  make(map[peer.ID]time.Time),
		prefixes: make(map[string][]time.Time),
		wanted:   make(map[peer.ID]map[string]bool),
	}
	for _, r := range append(RejectReasons, RejectTooFrequent, RejectPrefixFull, RejectWrongShard) {
		g.rejected[r] = new(atomic.Uint64)
	}
	// Seq starts from the clock so a restarted peer (same ID) outranks
	// what the swarm remembers of its previous life.
	g.seq.Store(uint64(time.Now().UnixNano()))
	g.interval.Store(int64(cfg.MinInterval))
	g.started = time.Now()
	g.changedAt = g.started
	cur, err := g.joinTopic(max(cfg.ShardBits, 0))
	if err != nil {
		return nil, err
	}
	g.cur = cur
	g.showWidth(cur.bits, -1)
	cfg.Catalog.SetRemote(g.directAddr)
	g.catchUpService = catchup.NewService(h, catchUpSource{g}, catchup.ServiceConfig{Max: cfg.CatchUpMax, Admit: g.admitCatchUp, Logger: cfg.Logger})
	return g, nil
}

// validate is the GossipSub validator: it runs before a message is
// delivered or forwarded, so a rejected announcement goes no further.
// It accepts the authors of this peer's shard at the current width or,
// during a grace period, the previous one; each topic's own validator
// (joinTopic) accepts the authors of that topic's shard only.
func (g *Gossip) validate(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	return g.validateIn(g.inShard, from, msg)
}

// validateIn is validate with inShard saying which authors belong.
func (g *Gossip) validateIn(inShard func(id string) bool, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	a, err := Open(msg.Data, time.Now())
	if err != nil {
		reason := ReasonOf(err)
		g.count(reason)
		g.log.Debug("announcement rejected", "from", from.ShortString(), "reason", reason, "err", err)
		switch reason {
		case RejectStale, RejectFuture:
			return pubsub.ValidationIgnore // honest peers with bad clocks or slow links: drop, don't punish
		default:
			return pubsub.ValidationReject
		}
	}
	if author := msg.GetFrom(); author != "" && author.String() != a.Peer {
		g.count(RejectForeign)
		return pubsub.ValidationReject
	}
	if !inShard(a.Peer) {
		// Its author announces on another topic: whoever put it on this
		// one (the author or a relay) is not following the protocol.
		g.count(RejectWrongShard)
		return pubsub.ValidationReject
	}
	if a.Peer != g.self.String() {
		if !g.spaced(a, time.Now()) {
			g.count(RejectTooFrequent)
			return pubsub.ValidationIgnore
		}
		if err := g.cfg.Catalog.Admits(a); err != nil {
			g.count(RejectPrefixFull)
			return pubsub.ValidationIgnore
		}
	}
	msg.ValidatorData = a
	return pubsub.ValidationAccept
}

// heard is when an author's latest announcement and leave were accepted,
// and the spacing credit its announcements had left then.
type heard struct {
	any, leave time.Time
	credit     time.Duration
}

// spaced reports whether a is within its author's rate, and notes it: a
// leave must come at least MinSpacing after its previous leave; an
// announcement spends MinSpacing of a credit that grows with the time
// since the author's previous one, up to SpacingBurst times MinSpacing (a
// token bucket).
func (g *Gossip) spaced(a *Announcement, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	h, known := g.lastFrom[a.Peer]
	credit := SpacingBurst * MinSpacing
	if a.Leave {
		if now.Sub(h.leave) < MinSpacing {
			return false
		}
	} else {
		if known && !h.any.IsZero() {
			credit = min(h.credit+now.Sub(h.any), credit)
		}
		if credit < MinSpacing {
			return false
		}
	}
	if !known && len(g.lastFrom) >= MaxAuthorsTracked {
		if now.Sub(g.pruned) < MinSpacing/4 {
			return false
		}
		g.pruneAuthorsLocked(now)
		if len(g.lastFrom) >= MaxAuthorsTracked {
			return false
		}
	}
	if a.Leave {
		h.leave = now
	} else {
		h.any, h.credit = now, credit-MinSpacing
	}
	g.lastFrom[a.Peer] = h
	return true
}

// pruneAuthorsLocked forgets authors whose credit is full again and whose
// last leave is MinSpacing old: the validator has no more use for them.
func (g *Gossip) pruneAuthorsLocked(now time.Time) {
	g.pruned = now
	for id, h := range g.lastFrom {
		if now.Sub(h.any) >= SpacingBurst*MinSpacing && now.Sub(h.leave) >= MinSpacing {
			delete(g.lastFrom, id)
		}
	}
}

// Shard returns the current shard width (bits) and this peer's
// announcement shard at it.
func (g *Gossip) Shard() (bits, shard int) {
	cur, _ := g.topics()
	return cur.bits, cur.shard
}

// TopicName is the announcement topic this peer announces on now.
func (g *Gossip) TopicName() string {
	cur, _ := g.topics()
	return cur.name
}

// inShard reports whether the peer with ID id (a string, as announcements
// carry it) belongs to this peer's announcement shard, at the current
// width or, during a grace period, the previous one; every peer does when
// the swarm is unsharded.
func (g *Gossip) inShard(id string) bool {
	cur, old := g.topics()
	if cur.bits == 0 || (old != nil && old.bits == 0) {
		return true
	}
	pid, err := peer.Decode(id)
	return err == nil && g.inShardID(pid)
}

// inShardID is inShard for a decoded peer ID.
func (g *Gossip) inShardID(p peer.ID) bool {
	cur, old := g.topics()
	in := func(st *shardTopic) bool { return st.bits == 0 || AnnounceShard(p, st.bits) == st.shard }
	return in(cur) || (old != nil && in(old))
}

// Authors is how many authors the validator remembers.
func (g *Gossip) Authors() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.lastFrom)
}

// directAddr is the remote address of a direct connection to id, nil when
// there is none: where id is, as the catalog counts prefixes.
func (g *Gossip) directAddr(id string) ma.Multiaddr {
	pid, err := peer.Decode(id)
	if err != nil {
		return nil
	}
	for _, c := range g.h.Network().ConnsToPeer(pid) {
		if a := c.RemoteMultiaddr(); !p2p.IsRelayed(a) && !c.Stat().Limited {
			return a
		}
	}
	return nil
}

func (g *Gossip) count(reason string) {
	if c, ok := g.rejected[reason]; ok {
		c.Add(1)
	}
}

// Rejected returns how many announcements were refused, per reason.
func (g *Gossip) Rejected() map[string]uint64 {
	out := make(map[string]uint64, len(g.rejected))
	for r, c := range g.rejected {
		out[r] = c.Load()
	}
	return out
}

// Accepted is the number of announcements accepted from others.
func (g *Gossip) Accepted() uint64 { return g.accepted.Load() }

// Interval is the current heartbeat interval.
func (g *Gossip) Interval() time.Duration { return time.Duration(g.interval.Load()) }

// Changed asks for a full announcement soon (coalesced; at most one a second).
func (g *Gossip) Changed() {
	g.mu.Lock()
	g.dirty = true
	g.mu.Unlock()
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// Start announces, receives, expires and catches up in the background
// until ctx ends or Close is called.
func (g *Gossip) Start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	g.mu.Lock()
	g.cancel = cancel
	g.mu.Unlock()
	g.wg.Add(6)
	cur, _ := g.topics()
	g.startTopic(ctx, cur)
	go g.mend(ctx)
	go g.autoWidth(ctx)
	go g.expire(ctx)
	go g.catchUpNewcomers(ctx)
	go g.fetchWanted(ctx)
	go func() {
		defer g.wg.Done()
		g.heartbeat(ctx)
	}()
}

func (g *Gossip) adapt() time.Duration {
	iv := AdaptInterval(g.cfg.Catalog.Len()+1, g.cfg.MinInterval, g.cfg.MaxInterval, g.cfg.TargetRate)
	g.interval.Store(int64(iv))
	return iv
}

// AdaptInterval is the heartbeat interval of a peer that knows peers peers
// (its catalog and itself): peers / rate seconds, clamped to [minIv, maxIv],
// so each peer receives about rate announcements a second in all while the
// catalog holds the whole swarm. The scale model (internal/scale) calls it.
func AdaptInterval(peers int, minIv, maxIv time.Duration, rate float64) time.Duration {
	iv := time.Duration(float64(peers) / rate * float64(time.Second))
	return max(min(iv, maxIv), minIv)
}

func (g *Gossip) heartbeat(ctx context.Context) {
	var last time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-g.changed:
		case <-g.joins: // see startTopic
		}
		if wait := time.Second - time.Since(last); wait > 0 && !last.IsZero() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		cur, _ := g.topics()
		g.unheard.Store(len(cur.topic.ListPeers()) == 0)
		if err := g.publish(ctx, false); err != nil && ctx.Err() == nil {
			g.log.Warn("announce failed", "err", err)
		}
		last = time.Now()
		iv := g.adapt()
		jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(iv)) // ±10%, so peers drift apart
		timer.Reset(iv + jitter)
	}
}

func (g *Gossip) publish(ctx context.Context, leave bool) error {
	local := g.cfg.Local()
	now := time.Now()
	cur, old := g.topics()
	g.mu.Lock()
	seq := g.seq.Add(1)
	a := Announcement{Peer: g.self.String(), Seq: seq, Time: now.UnixMilli(), Interval: g.Interval().Milliseconds(), ShardBits: cur.bits}
	switch {
	case leave:
		a.Leave = true
	case g.lastFull == nil || g.dirty || g.beats+1 >= FullEvery || g.unheard.Load():
		full := local
		full.Peer, full.Seq, full.Time, full.Interval, full.ShardBits = a.Peer, a.Seq, a.Time, a.Interval, a.ShardBits
		a = full
	default:
		a.Beat, a.State, a.Load = true, g.fullSeq, local.Load
	}
	g.mu.Unlock()
	env, err := Seal(&a, g.cfg.Key)
	if err != nil {
		return err
	}
	g.mu.Lock()
	switch {
	case a.Beat:
		g.lastBeat = env
		g.beats++
	case !a.Leave:
		g.lastFull, g.lastBeat, g.fullSeq, g.beats, g.dirty = env, nil, a.Seq, 0, false
	}
	g.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = cur.topic.Publish(pctx, env)
	if old != nil {
		// During a grace period both topics carry it: the peers that have
		// not switched yet hear it too. The grace may end meanwhile and
		// the topic be closed: not this peer's announcement's failure.
		if oerr := old.topic.Publish(pctx, env); oerr != nil {
			g.log.Debug("announce on the previous topic", "topic", old.name, "err", oerr)
		}
	}
	return err
}

// Leave tells the swarm this peer is going, then stops announcing. The
// message is best effort: peers that miss it expire this one after its TTL.
func (g *Gossip) Leave(ctx context.Context) error {
	err := g.publish(ctx, true)
	// Give GossipSub a moment to push the message out before the host closes.
	if cur, _ := g.topics(); err == nil && len(cur.topic.ListPeers()) > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return err
}

// Close stops what Start started, leaves the topic and removes the catch-up
// handler. Calls after the first do nothing.
func (g *Gossip) Close() {
	g.closeOnce.Do(g.close)
}

func (g *Gossip) close() {
	g.mu.Lock()
	cancel := g.cancel
	g.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	cur, old := g.topics()
	for _, st := range []*shardTopic{cur, old} {
		if st != nil {
			st.sub.Cancel() // so a receive not started by Start ends too
		}
	}
	g.wg.Wait() // nothing switches topics after this
	cur, old = g.topics()
	g.catchUpService.Close()
	g.closeTopic(old)
	g.closeTopic(cur)
}

// receive applies the announcements sub delivers until ctx ends or sub
// is cancelled.
func (g *Gossip) receive(ctx context.Context, sub *pubsub.Subscription) {
	for {
		msg, err := sub.Next(ctx)
		if err != nil {
			return
		}
		a, ok := msg.ValidatorData.(*Announcement)
		if !ok || a.Peer == g.self.String() {
			continue
		}
		g.accepted.Add(1)
		g.noteWidth(a)
		if a.Beat && !g.cfg.Catalog.Has(a.Peer) {
			// A beat from a peer whose full announcement was missed: ask the
			// neighbour that relayed it, and the author itself when connected
			// (the neighbour may only have relayed the beat).
			if msg.ReceivedFrom != "" {
				g.want(a.Peer, msg.ReceivedFrom)
			}
			if author, err := peer.Decode(a.Peer); err == nil && author != msg.ReceivedFrom &&
				g.h.Network().Connectedness(author) == network.Connected {
				g.want(a.Peer, author)
			}
		}
		g.cfg.Catalog.Apply(a, msg.Data, time.Now())
	}
}

func (g *Gossip) expire(ctx context.Context) {
	defer g.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, id := range g.cfg.Catalog.Expire(now) {
				g.log.Debug("peer expired", "other", id)
			}
			g.mu.Lock()
			g.pruneAuthorsLocked(now)
			g.mu.Unlock()
		}
	}
}
