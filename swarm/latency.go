package swarm

import (
	"context"
	"log/slog"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

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
}

// NewLatency measures round trips from h, pinging every interval (0: the
// pinger's default). coordOf gives the coordinate another peer announced
// (nil when none), which a ping to it trains this peer's coordinate against.
func NewLatency(h host.Host, interval time.Duration, location *geo.Point, coordOf func(id string) *coordinate.Coordinate, log *slog.Logger) *Latency {
	l := &Latency{Matrix: geo.NewMatrix(h.ID().String()), self: h.ID().String(), vivaldi: geo.NewCoordinateClient(), coordOf: coordOf, log: log}
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

// Run pings connected peers, and the peers Probe asks for, until ctx ends.
func (l *Latency) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() { defer close(done); l.runProbes(ctx) }()
	l.pinger.Run(ctx)
	<-done
	return nil
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
	if _, err := geo.UpdateCoordinate(l.vivaldi, id.String(), c, rtt); err != nil {
		l.log.Debug("coordinate update", "other", id.ShortString(), "err", err)
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
}

// Forget drops a peer that left the catalog.
func (l *Latency) Forget(id string) { l.Matrix.Forget(id) }

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
