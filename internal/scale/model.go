package scale

import (
	"math"
	"time"

	mwpeer "github.com/mwpeer/mwpeer"
	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/p2p"
)

// Params are the model's inputs. DefaultParams takes them from the code.
type Params struct {
	Sizes Sizes
	// The adaptive heartbeat (experts.GossipConfig).
	MinInterval, MaxInterval time.Duration
	TargetRate               float64
	FullEvery                int // one announcement in FullEvery is full, the rest beats
	// GossipSub (p2p.GossipSubParams). A peer receives each message once
	// from each mesh neighbour but the first to send it, about D-1 copies
	// (every peer forwards to its D-1 other mesh peers once). Each
	// heartbeat it sends IHAVE with the IDs of the last HistoryGossip
	// heartbeats' messages (at most MaxIHaveLength) to max(Dlazy,
	// GossipFactor × its non-mesh topic peers) peers, and as many send
	// IHAVE to it.
	D, Dlazy                      int
	GossipFactor                  float64
	HistoryGossip, MaxIHaveLength int
	Heartbeat                     time.Duration
	IDontWantThreshold            int
	// Conns is how many topic peers a peer has once the swarm is larger:
	// the connection manager trims to its low watermark (p2p.Config.ConnLow).
	Conns int
	// Catalog (experts.Catalog, experts.JoinGossip).
	MaxEntries   int
	EntryBytes   float64 // heap per entry, MeasureCatalog
	LargestBytes float64 // the same for announcements near the 32 KiB cap
	// EntryCounted and LargestCounted are what the catalog counts those
	// entries as against its byte budget (experts.EntryBytes).
	EntryCounted, LargestCounted float64
	CatchUpMax                   int // envelopes handed to a newcomer per catch-up
	CatchUpPerMin                int // catch-ups a peer starts per minute (on new connections)
	// CatchUpQuiet: once a full catch-up brings little news, a peer starts
	// none for so long, whatever connections come.
	CatchUpQuiet time.Duration
	Session      time.Duration
	// DHT (go-libp2p-kad-dht): bucket size k, parallelism α; a hop to a
	// peer not yet connected costs HopRTTs round trips (QUIC handshake,
	// protocol selection, request), each drawn from a log-normal RTT with
	// median RTTMedian and shape RTTSigma.
	K, Alpha  int
	HopRTTs   float64
	RTTMedian time.Duration
	RTTSigma  float64
	// Link is a joining peer's download rate for catch-up, bytes/s.
	Link float64

	// Sharding bounds a peer's costs at any size. Announcements go to one
	// of 2^bits topics, chosen by the first bits of the author's hashed
	// peer ID (experts.AnnounceShard); a peer subscribes to its own shard
	// only, hears its authors at most, and finds experts beyond it through
	// DHT provider lookups under keys salted by shard (experts.SaltedKey),
	// so that no DHT peer holds the records of more than a shard's
	// providers of one key. The width is automatic (experts.AutoShard): a
	// shard of more than SplitAbove authors splits (one bit more), one of
	// fewer than MergeBelow merges (one bit less), and between the two the
	// width stays (AutoWidth). 0: one topic, unsalted keys.
	SplitAbove, MergeBelow int
	// Provider lookups (experts.Finder): salted keys looked up at once and
	// at most; kad-dht's limit on a message it reads.
	LookupParallel, LookupKeys int
	MessageSizeMax             int
	// FewProviders: a salted name is provided under its unsalted key too
	// while fewer peers provide it there (experts.DefaultFewProviders).
	FewProviders int
	// CatalogBudget caps the bytes the catalog counts (EntryCounted),
	// whatever its entries announce (0: the entry cap only);
	// experts.DefaultMaxBytes by default.
	CatalogBudget float64
}

// Sharded is p with the sharded design: the automatic width with split
// and merge thresholds (authors per shard), the catalog within budget
// bytes.
func (p Params) Sharded(split, merge int, budget float64) Params {
	p.SplitAbove, p.MergeBelow, p.CatalogBudget = split, merge, budget
	return p
}

// AutoWidth is the announcement shard width a swarm of n settles at from
// width from, as experts.AutoShard decides it: one bit more while a shard
// holds more than SplitAbove authors, one less while it holds fewer than
// MergeBelow. A swarm that grew to n (from 0) has the least width whose
// shards hold at most SplitAbove; one that shrank keeps its width until
// its shards fall under MergeBelow (hysteresis). Shards hold n/2^width
// authors on average (peer IDs hash uniformly; the fullest of many is
// a few standard deviations, sqrt(n/2^width), above).
func (p Params) AutoWidth(n, from int) int {
	if p.SplitAbove <= 0 {
		return 0
	}
	w := max(from, 0)
	for range 2 * experts.MaxAnnounceShardBits {
		switch m := members(n, w); {
		case m > p.SplitAbove && w < experts.MaxAnnounceShardBits:
			w++
		case m < p.MergeBelow && w > 0:
			w--
		default:
			return w
		}
	}
	return w
}

// members is the authors of a shard of a swarm of n at width bits.
func members(n, bits int) int { return (n + 1<<bits - 1) >> bits }

// shards is how many announcement topics a swarm of n that grew to n
// has, and how many authors each holds.
func (p Params) shards(n int) (shards, authors int) {
	w := p.AutoWidth(n, 0)
	return 1 << w, members(n, w)
}

// DefaultParams are the code's defaults with the measured sizes: heap and
// counted bytes per catalog entry, typical and largest.
func DefaultParams(s Sizes, entryBytes, entryCounted, largestBytes, largestCounted float64) Params {
	cfg := mwpeer.DefaultConfig()
	gp := p2p.GossipSubParams()
	p := Params{
		Sizes:       s,
		MinInterval: cfg.AnnounceMin, MaxInterval: cfg.AnnounceMax, TargetRate: cfg.AnnounceRate,
		FullEvery: experts.FullEvery,
		D:         gp.D, Dlazy: gp.Dlazy, GossipFactor: gp.GossipFactor,
		HistoryGossip: gp.HistoryGossip, MaxIHaveLength: gp.MaxIHaveLength,
		Heartbeat: gp.HeartbeatInterval, IDontWantThreshold: gp.IDontWantMessageThreshold,
		Conns:      64, // p2p.Config.ConnLow's default
		MaxEntries: experts.DefaultMaxEntries,
		EntryBytes: entryBytes, LargestBytes: largestBytes,
		EntryCounted: entryCounted, LargestCounted: largestCounted,
		CatalogBudget: experts.DefaultMaxBytes,
		// experts.JoinGossip's CatchUpMax default and experts'
		// catchUpPerMinute and catchUpQuiet (unexported there).
		CatchUpMax: 2048, CatchUpPerMin: 3, CatchUpQuiet: 30 * time.Minute,
		Session: time.Hour,
		K:       20, Alpha: 10, // go-libp2p-kad-dht v0.36.0's defaults (amino.DefaultBucketSize, DefaultConcurrency)
		HopRTTs:   3,
		RTTMedian: 80 * time.Millisecond, RTTSigma: 0.6, // p10 37 ms, p90 173 ms: a world of home links
		Link: 2.5e6, // 20 Mbit/s
	}
	providerDefaults(&p)
	return p
}

// Point is what one peer pays in a swarm of N.
type Point struct {
	N int
	// Shards and Members: announcement topics, and authors in each (N and
	// 1 without sharding).
	Shards, Members int
	Interval        time.Duration // heartbeat, as experts.AdaptInterval computes it
	Rate            float64       // announcements received per second (distinct)
	// Gossip bytes received per second, and its parts.
	Gossip, Messages, IHave, IDontWant float64
	// ValidateCPU is the fraction of one core spent verifying them.
	ValidateCPU float64
	Entries     int
	CatalogMB   float64
	// CatalogMBWorst is the catalog full of the largest announcements the
	// validator accepts, within the byte budget.
	CatalogMBWorst float64
	// CatchUpBytes is one full catch-up (what a newcomer downloads from each
	// peer it asks); CatchUpServe is what a peer serves per second for the
	// swarm's joins (churn at Session). CatchUpWorst is what a running peer
	// downloads per second when new connections come all the time: one
	// full catch-up per CatchUpQuiet once caught up (it was CatchUpPerMin
	// a minute for as long as it ran, CatchUpChurnBefore).
	CatchUpBytes                                   float64
	CatchUpServe, CatchUpWorst, CatchUpChurnBefore float64
	// View95 is how long a newcomer takes to hold 95% of the catalog it
	// will hold: one catch-up, then gossip for the rest; Overhead is the
	// start of a peer, which the model does not cover (calibrated).
	View95 time.Duration
	// ProviderRecords is the most provider records one DHT peer holds for
	// one key that every peer provides (domain/general): each key's k
	// closest peers hold all its providers, a shard's with salting.
	ProviderRecords int
}

// Model returns what one peer pays in a swarm of n peers: with sharding
// (SplitAbove), what it pays in its shard at the width a swarm grown to n
// has, plus the DHT's provider records.
func (p Params) Model(n int, overhead time.Duration) Point {
	shards, members := p.shards(n)
	pt := p.model(members, overhead)
	pt.N, pt.Shards, pt.Members = n, shards, members
	pt.ProviderRecords = members
	return pt
}

// model is Model for one topic of n authors.
func (p Params) model(n int, overhead time.Duration) Point {
	entries := min(n-1, p.MaxEntries)
	worst := entries // of the largest announcements
	if p.CatalogBudget > 0 && p.EntryCounted > 0 {
		entries = min(entries, int(p.CatalogBudget/p.EntryCounted))
	}
	if p.CatalogBudget > 0 && p.LargestCounted > 0 {
		worst = min(worst, int(p.CatalogBudget/p.LargestCounted))
	}
	iv := experts.AdaptInterval(entries+1, p.MinInterval, p.MaxInterval, p.TargetRate)
	rate := float64(n-1) / iv.Seconds()
	pt := Point{N: n, Interval: iv, Rate: rate, Entries: entries}

	// Mesh deliveries: D-1 copies of each (fewer in a swarm smaller than
	// the mesh), beats and fulls in the ratio FullEvery-1 : 1.
	mesh := float64(min(p.D, n-1))
	copies := max(mesh-1, 1)
	s := p.Sizes
	fullShare := 1 / float64(p.FullEvery)
	avg := fullShare*float64(s.Full) + (1-fullShare)*float64(s.Beat) + float64(s.MessageOverhead)
	pt.Messages = rate * avg * copies
	if s.Full > p.IDontWantThreshold {
		// Each mesh neighbour tells this peer it has a full one.
		pt.IDontWant = rate * fullShare * mesh * float64(s.IDontWant)
	}
	// IHAVE: as many peers send it to this one as it sends to.
	topicPeers := min(n-1, p.Conns)
	eligible := max(topicPeers-int(mesh), 0)
	targets := min(max(p.Dlazy, int(p.GossipFactor*float64(eligible))), eligible)
	ids := min(rate*p.Heartbeat.Seconds()*float64(p.HistoryGossip), float64(p.MaxIHaveLength))
	if ids > 0 && targets > 0 {
		pt.IHave = float64(targets) * (ids*float64(s.IHaveID) + float64(s.IHaveOverhead)) / p.Heartbeat.Seconds()
	}
	pt.Gossip = pt.Messages + pt.IDontWant + pt.IHave
	pt.ValidateCPU = rate * (fullShare*s.OpenFull.Seconds() + (1-fullShare)*s.OpenBeat.Seconds())

	pt.CatalogMB = float64(entries) * p.EntryBytes / 1e6
	pt.CatalogMBWorst = float64(worst) * p.LargestBytes / 1e6
	handed := float64(min(entries, p.CatchUpMax))
	pt.CatchUpBytes = handed * float64(s.Full+s.Beat+2*s.CatchUpFrame)
	// Each join asks CatchUpPerMin peers in its first minute; the swarm's
	// joins (n per Session) spread over n servers.
	pt.CatchUpServe = float64(p.CatchUpPerMin) * pt.CatchUpBytes / p.Session.Seconds()
	pt.CatchUpChurnBefore = float64(p.CatchUpPerMin) * pt.CatchUpBytes / 60
	pt.CatchUpWorst = pt.CatchUpChurnBefore
	if p.CatchUpQuiet > 0 {
		pt.CatchUpWorst = pt.CatchUpBytes / p.CatchUpQuiet.Seconds()
	}

	// Time to 95% of the view: the catch-up (a round trip, the transfer,
	// verifying each), then the rest heard as they announce, evenly over an
	// interval. Catch-up hands the most recently heard first, which is
	// about the same set at every neighbour, so one catch-up is counted.
	want := math.Ceil(0.95 * float64(entries))
	t := overhead.Seconds() + 2*p.RTTMedian.Seconds() + pt.CatchUpBytes/p.Link +
		handed*(s.OpenFull+s.OpenBeat).Seconds()
	if rest := want - handed; rest > 0 {
		t += rest / (float64(n-1) - handed) * iv.Seconds()
	}
	pt.View95 = time.Duration(t * float64(time.Second))
	return pt
}

// GossipBudget is the largest distinct announcement rate a peer can
// receive within budget bytes/s of gossip, the rest of the model unchanged.
func (p Params) GossipBudget(n int, budget float64) float64 {
	lo, hi := 0.0, 1e6
	for range 60 {
		mid := (lo + hi) / 2
		if p.gossipAt(n, mid) <= budget {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// gossipAt is the gossip bytes/s in a swarm of n at a given rate.
func (p Params) gossipAt(n int, rate float64) float64 {
	// Model with an interval that yields rate, then reuse its arithmetic.
	q := p
	iv := time.Duration(float64(n-1) / rate * float64(time.Second))
	q.MinInterval, q.MaxInterval, q.SplitAbove = iv, iv, 0
	return q.Model(n, 0).Gossip
}
