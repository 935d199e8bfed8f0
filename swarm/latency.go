package swarm

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/p2p"
	"github.com/mwpeer/mwpeer/trust"
)

// Latency is what this peer knows of round trips: its own pings (EWMA per
// connected peer), its Vivaldi coordinate trained on them, and the matrix
// that merges its row with the rows and coordinates other peers announce.
// Estimate, from this peer, is its own measurement, then coordinates, then
// distance: rows others announce are reported, and only predict pairs this
// peer is not part of.
type Latency struct {
	Matrix *geo.Matrix

	self    string
	vivaldi *coordinate.Client
	pinger  *p2p.Pinger
	coordOf func(id string) *coordinate.Coordinate
	log     *slog.Logger
	probes  prober
	// set by Watch, before Run
	trust *trust.Store
	known func(id string) bool
	// set by OnDrift, before Run
	drifted    func()
	driftEvery func() time.Duration

	h  host.Host
	mu sync.Mutex
	// announced is the coordinate Own last handed out; lastDrift when
	// drifted was last called.
	announced *coordinate.Coordinate
	lastDrift time.Time
	// addrs are the addresses each peer announces (Heard), to dial it
	// for early sampling; explored counts the peers dialed for it.
	addrs    map[string][]ma.Multiaddr
	explored int
}

// NewLatency measures round trips from h, pinging every interval (0: the
// pinger's default). coordOf gives the coordinate another peer announced
// (nil when none), which a ping to it trains this peer's coordinate against.
func NewLatency(h host.Host, interval time.Duration, location *geo.Point, coordOf func(id string) *coordinate.Coordinate, log *slog.Logger) *Latency {
	l := &Latency{Matrix: geo.NewMatrix(h.ID().String()), self: h.ID().String(), vivaldi: geo.NewCoordinateClient(), coordOf: coordOf, log: log,
		h: h, addrs: make(map[string][]ma.Multiaddr)}
	l.Matrix.SetLocation(l.self, location)
	l.pinger = p2p.NewPinger(h, p2p.PingerConfig{Interval: interval, OnSample: l.onSample, OnFailure: l.onFailure, Probe: l.probe})
	return l
}

// Watch makes pings evidence in store: a peer whose ping fails is a
// suspect at once (trust.Store.Suspect), one that answers is not, and
// every round probes the suspects that known still lists (the catalog), so
// a peer that was frozen and resumed, or came back, is cleared even after
// its connections were closed. Call it before Run.
func (l *Latency) Watch(store *trust.Store, known func(id string) bool) {
	l.trust, l.known = store, known
}

func (l *Latency) onFailure(id peer.ID, err error) {
	if l.trust != nil {
		l.trust.Suspect(id.String(), "ping failed: "+err.Error())
	}
}

// probe lists the suspects to ping without a connection.
func (l *Latency) probe() []peer.ID {
	if l.trust == nil {
		return nil
	}
	var out []peer.ID
	for _, s := range l.trust.Suspects(0) {
		if l.known != nil && !l.known(s) {
			continue
		}
		if id, err := peer.Decode(s); err == nil {
			out = append(out, id)
			if len(out) == p2p.MaxProbes {
				break
			}
		}
	}
	return out
}

// OnDrift asks for changed to be called when this peer's coordinate has
// moved geo.CoordinateDrift or more from the one Own last handed out, at
// most once every every() (the announcement interval): the peer then
// announces it in full (see geo.CoordinateDrift), as the peers that train
// against it otherwise use a stale one. Call it before Run.
func (l *Latency) OnDrift(changed func(), every func() time.Duration) {
	l.drifted, l.driftEvery = changed, every
}

// Run pings connected peers, and the peers Probe asks for, until ctx ends;
// while this peer's coordinate is untrained it samples more (see
// geo.EarlyError).
func (l *Latency) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.runProbes(ctx) }()
	go func() { defer wg.Done(); l.runEarly(ctx) }()
	l.pinger.Run(ctx)
	wg.Wait()
	return nil
}

// runEarly is the early sampling of geo.EarlyError: every geo.EarlyEvery
// while this peer's error estimate is above geo.EarlyError, a ping to
// geo.EarlyPeers random connected peers and a probe of one known peer it
// is not connected to (at most geo.MaxExplore in all; Probe dials it, and
// the pinger's rounds keep measuring the connection).
func (l *Latency) runEarly(ctx context.Context) {
	t := time.NewTicker(geo.EarlyEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l.vivaldi.GetCoordinate().Error <= geo.EarlyError {
			continue
		}
		conns := l.h.Network().Peers()
		rand.Shuffle(len(conns), func(i, j int) { conns[i], conns[j] = conns[j], conns[i] })
		for _, id := range conns[:min(len(conns), geo.EarlyPeers)] {
			if err := l.pinger.Measure(ctx, id); err != nil {
				l.log.Debug("early ping", "peer", id.ShortString(), "err", err)
			}
		}
		if ai, ok := l.stranger(); ok {
			l.Probe([]peer.AddrInfo{ai})
		}
	}
}

// stranger picks a random peer the catalog announced whose address is
// known and that this peer is neither connected to nor has measured, and
// counts it as explored; false once geo.MaxExplore were.
func (l *Latency) stranger() (peer.AddrInfo, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.explored >= geo.MaxExplore {
		return peer.AddrInfo{}, false
	}
	var pick peer.AddrInfo
	seen := 0
	for s, addrs := range l.addrs {
		id, err := peer.Decode(s)
		if err != nil || len(addrs) == 0 || l.h.Network().Connectedness(id) == network.Connected {
			continue
		}
		if _, ok := l.pinger.RTT(id); ok {
			continue
		}
		// Reservoir sampling: each eligible peer is picked with equal odds.
		if seen++; rand.IntN(seen) == 0 {
			pick = peer.AddrInfo{ID: id, Addrs: addrs}
		}
	}
	if seen == 0 {
		return peer.AddrInfo{}, false
	}
	l.explored++
	return pick, true
}

// onSample clears a suspicion of the peer that answered (see Watch) and
// trains this peer's network coordinate on a ping result; the other's
// claimed error counts as at least geo.MinPeerCoordinateError.
func (l *Latency) onSample(id peer.ID, rtt time.Duration) {
	if l.trust != nil {
		l.trust.Alive(id.String())
	}
	c := l.coordOf(id.String())
	if c == nil {
		return
	}
	now, err := geo.UpdateCoordinate(l.vivaldi, id.String(), c, rtt)
	if err != nil {
		l.log.Debug("coordinate update", "other", id.ShortString(), "err", err)
		return
	}
	l.checkDrift(now)
}

// checkDrift calls the OnDrift callback when now has moved
// geo.CoordinateDrift from the coordinate last announced, at most once
// every driftEvery.
func (l *Latency) checkDrift(now *coordinate.Coordinate) {
	if l.drifted == nil {
		return
	}
	l.mu.Lock()
	shift, ok := geo.CoordinateShift(l.announced, now)
	due := ok && shift >= geo.CoordinateDrift && time.Since(l.lastDrift) >= l.driftEvery()
	if due {
		l.lastDrift = time.Now()
	}
	l.mu.Unlock()
	if due {
		l.drifted()
	}
}

// Own is what this peer announces of its round trips: its row of up to max
// measured RTTs in milliseconds and its coordinate, both also put in the
// matrix. The coordinate is shared even untrained, so others can train
// against it; the matrix trusts a coordinate only once its error estimate
// has come down.
func (l *Latency) Own(max int) (map[string]float64, *coordinate.Coordinate) {
	row := l.pinger.Row(max)
	ms := make(map[string]float64, len(row))
	mrow := make(map[string]time.Duration, len(row))
	for id, d := range row {
		ms[id.String()] = float64(d.Microseconds()) / 1000
		mrow[id.String()] = d
	}
	l.Matrix.SetRow(l.self, mrow)
	coord := l.vivaldi.GetCoordinate()
	l.Matrix.SetCoordinate(l.self, coord)
	l.mu.Lock()
	l.announced = coord.Clone()
	l.mu.Unlock()
	return ms, coord
}

// Heard puts what a catalog entry announces (its RTT row, coordinate and
// location) in the matrix, as reported. An entry in this peer's own name is
// ignored.
func (l *Latency) Heard(e experts.Entry) {
	if e.Peer == l.self {
		return
	}
	row := make(map[string]time.Duration, len(e.RTT))
	for id, ms := range e.RTT {
		row[id] = time.Duration(ms * float64(time.Millisecond))
	}
	l.Matrix.SetRow(e.Peer, row)
	l.Matrix.SetCoordinate(e.Peer, e.Coord)
	l.Matrix.SetLocation(e.Peer, e.Location)
	if addrs := parseAddrs(e.Addrs); len(addrs) > 0 {
		l.mu.Lock()
		l.addrs[e.Peer] = addrs
		l.mu.Unlock()
	}
}

// Forget drops a peer that left the catalog.
func (l *Latency) Forget(id string) {
	l.Matrix.Forget(id)
	l.mu.Lock()
	delete(l.addrs, id)
	l.mu.Unlock()
}

// Estimate is the best RTT estimate from this peer to id: its own latest
// average when it has pinged id, even before that row reaches the matrix
// (at the next announcement, seconds later), else the matrix's prediction.
// The latency-shaped world test (internal/worldtest) found routers ranking
// a peer they had just measured by a prediction from its claimed location.
func (l *Latency) Estimate(id string) geo.RTT {
	if pid, err := peer.Decode(id); err == nil {
		if d, ok := l.pinger.RTT(pid); ok {
			return geo.RTT{Value: d, Source: geo.SourceMeasured}
		}
	}
	return l.Matrix.Estimate(l.self, id)
}

// Measured reports whether this peer has pinged id itself: an RTT that
// id, or anyone, claims in an announcement does not count.
func (l *Latency) Measured(id peer.ID) bool {
	_, ok := l.pinger.RTT(id)
	return ok
}

// To is Estimate for a peer ID, as moe and sharding take it.
func (l *Latency) To(id peer.ID) (time.Duration, bool) {
	r := l.Estimate(id.String())
	return r.Value, r.Known()
}
