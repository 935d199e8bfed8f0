package geo

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/serf/coordinate"
)

// Source says where an RTT value came from, in decreasing order of trust.
type Source string

const (
	// SourceMeasured: this peer's own pings, averaged. Only a pair with this
	// peer at one end can be measured.
	SourceMeasured Source = "measured"
	// SourceReported: a row another peer announced, the average of both
	// directions when both announced one. Used only for pairs without this
	// peer: nobody's claim about its own distance to us is believed.
	SourceReported Source = "reported"
	// SourceCoordinates: predicted from Vivaldi network coordinates.
	SourceCoordinates Source = "coordinates"
	// SourceDistance: guessed from great-circle distance.
	SourceDistance Source = "distance"
	// SourceUnknown: nothing to go on.
	SourceUnknown Source = "unknown"
)

// RTT is a round-trip time and its provenance.
type RTT struct {
	Value  time.Duration
	Source Source
}

// Known reports whether r carries a value.
func (r RTT) Known() bool { return r.Source != SourceUnknown && r.Source != "" }

// Millis returns the value in (fractional) milliseconds.
func (r RTT) Millis() float64 { return float64(r.Value) / float64(time.Millisecond) }

// Predicted reports whether s is a prediction (coordinates or distance)
// rather than a round trip somebody timed.
func (s Source) Predicted() bool { return s == SourceCoordinates || s == SourceDistance }

// NewCoordinateClient returns a Vivaldi client with serf's defaults, which
// were tuned on real WAN latencies.
func NewCoordinateClient() *coordinate.Client {
	c, err := coordinate.NewClient(coordinate.DefaultConfig())
	if err != nil { // only on an invalid config, and the default is valid
		panic(err)
	}
	return c
}

// MaxCoordinateError is the Vivaldi error estimate above which a coordinate
// is not trusted for prediction. A new coordinate starts at serf's 1.5 and
// the estimate falls as it is trained against measured RTTs.
const MaxCoordinateError = 1.0

// How a peer trains its coordinate, beyond its regular pings (swarm.Latency
// follows it; TestVivaldiConvergesOnTheWorld measures it on the world
// test's RTTs, sampled as the swarm samples them):
//
//   - EarlySampling: while its error estimate is above EarlyError, every
//     EarlyEvery a peer pings EarlyPeers of its connected peers besides its
//     rounds, and dials and pings one peer it has no connection to (at
//     most MaxExplore in all), which then stays among the peers it pings.
//     Vivaldi learns the space from many directions: a peer with a dozen
//     connections, pinged every few seconds, gets too few samples from
//     too few peers (Dabek et al. mix random neighbours in for the same
//     reason), and the extra pings end once its error estimate says it
//     has learned (0.5: a coordinate is used from MaxCoordinateError, and
//     settles at 0.1-0.3).
//   - CoordinateDrift: a peer whose coordinate moved this far from the one
//     it last announced announces it again (a full announcement) rather
//     than at its next full one, up to six heartbeats later: everybody
//     else trains against the coordinate it announced, and one a minute
//     stale (60 peers announce every 10 s, in full every sixth time) held
//     the world's median error at 0.6 after a minute of pings.
const (
	EarlyError      = 0.5
	EarlyEvery      = time.Second
	EarlyPeers      = 2
	MaxExplore      = 16
	CoordinateDrift = 5 * time.Millisecond
)

// MinPeerCoordinateError is the least error estimate this peer believes of
// another peer's coordinate when it trains its own against it (see
// UpdateCoordinate).
//
// Vivaldi weighs each sample by ours/(ours+theirs): a peer that claims an
// error of 0 gets a weight of 1 and drags our coordinate as far as one
// sample can, and our own error estimate towards whatever that sample
// says. Vivaldi on real Internet latencies settles at relative errors of
// about 10 to 30 % (Dabek et al., "Vivaldi", SIGCOMM 2004; serf's estimates
// hover around 0.1 to 0.3 on a settled WAN), so a claim below 0.2 is a claim
// no honest node can back. At the floor a well-trained peer (error 0.2)
// weighs a stranger's sample at most 1/2, a new one (1.5) at most 0.88.
const MinPeerCoordinateError = 0.2

// UpdateCoordinate trains c on one measured rtt to node, whose claimed
// coordinate is other, with other's error estimate raised to
// MinPeerCoordinateError. other is not modified.
func UpdateCoordinate(c *coordinate.Client, node string, other *coordinate.Coordinate, rtt time.Duration) (*coordinate.Coordinate, error) {
	if other == nil {
		return nil, fmt.Errorf("no coordinate for %s", node)
	}
	o := other.Clone()
	if !(o.Error >= MinPeerCoordinateError) { // NaN too
		o.Error = MinPeerCoordinateError
	}
	return c.Update(node, o, rtt)
}

// CoordinateRTT predicts the RTT between two coordinates. It reports false
// when either is missing, invalid, untrained (error above
// MaxCoordinateError) or from an incompatible configuration.
func CoordinateRTT(a, b *coordinate.Coordinate) (time.Duration, bool) {
	if a == nil || b == nil || !a.IsValid() || !b.IsValid() || !a.IsCompatibleWith(b) ||
		a.Error > MaxCoordinateError || b.Error > MaxCoordinateError {
		return 0, false
	}
	// DistanceTo is the one-way distance in the model; serf's coordinates are
	// fitted to RTTs, so it is already a round trip.
	return a.DistanceTo(b), true
}

// CoordinateShift is how far a coordinate moved from an earlier one of the
// same client: the distance between their vectors plus the changes of
// height and adjustment, the most any RTT it predicts can have changed
// (DistanceTo from a coordinate to its own earlier self counts both
// heights, and is never near 0). It reports false when either is missing,
// invalid or of another dimension.
func CoordinateShift(from, to *coordinate.Coordinate) (time.Duration, bool) {
	if from == nil || to == nil || !from.IsValid() || !to.IsValid() || !from.IsCompatibleWith(to) {
		return 0, false
	}
	var sq float64
	for i := range from.Vec {
		d := to.Vec[i] - from.Vec[i]
		sq += d * d
	}
	s := math.Sqrt(sq) + math.Abs(to.Height-from.Height) + math.Abs(to.Adjustment-from.Adjustment)
	return time.Duration(s * float64(time.Second)), true
}

// Matrix merges what the swarm knows about round trips: the row of EWMA RTTs
// its owner (self) measured, rows other peers announce, network coordinates
// and locations. Only self's row is a measurement; every other row is what
// its author says, and is labelled SourceReported. It is safe for concurrent
// use.
type Matrix struct {
	self   string
	mu     sync.RWMutex
	rows   map[string]map[string]time.Duration
	coords map[string]*coordinate.Coordinate
	points map[string]Point
}

// NewMatrix returns an empty matrix kept by the peer self.
func NewMatrix(self string) *Matrix {
	return &Matrix{
		self:   self,
		rows:   make(map[string]map[string]time.Duration),
		coords: make(map[string]*coordinate.Coordinate),
		points: make(map[string]Point),
	}
}

// SetRow replaces the row of from: self's own measurements when from is
// self, else what from reports. The map is copied.
func (m *Matrix) SetRow(from string, row map[string]time.Duration) {
	cp := make(map[string]time.Duration, len(row))
	for k, v := range row {
		if v > 0 && k != from {
			cp[k] = v
		}
	}
	m.mu.Lock()
	m.rows[from] = cp
	m.mu.Unlock()
}

// SetCoordinate records id's network coordinate; nil forgets it.
func (m *Matrix) SetCoordinate(id string, c *coordinate.Coordinate) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c == nil || !c.IsValid() {
		delete(m.coords, id)
		return
	}
	m.coords[id] = c.Clone()
}

// SetLocation records id's geographic position; nil forgets it.
func (m *Matrix) SetLocation(id string, p *Point) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p == nil || p.Validate() != nil {
		delete(m.points, id)
		return
	}
	m.points[id] = *p
}

// Forget drops everything known about id, including measurements others
// made to it.
func (m *Matrix) Forget(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.rows, id)
	delete(m.coords, id)
	delete(m.points, id)
	for _, row := range m.rows {
		delete(row, id)
	}
}

// Estimate returns the best RTT estimate between a and b.
//
// When self is one of them, it is self's own measurement, else a prediction
// from network coordinates, else one from distance: never a row the other
// peer (or anyone) announced, which would let a peer place itself next to
// us by saying so.
//
// For any other pair, it is what a and b report of each other (the mean
// when both do), else a prediction from coordinates, else from distance.
func (m *Matrix) Estimate(a, b string) RTT {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.estimateLocked(a, b)
}

func (m *Matrix) estimateLocked(a, b string) RTT {
	if a == b {
		return RTT{Source: SourceMeasured}
	}
	if b == m.self {
		a, b = b, a
	}
	if a == m.self {
		if d, ok := m.rows[a][b]; ok {
			return RTT{Value: d, Source: SourceMeasured}
		}
	} else {
		ab, okAB := m.rows[a][b]
		ba, okBA := m.rows[b][a]
		switch {
		case okAB && okBA:
			return RTT{Value: (ab + ba) / 2, Source: SourceReported}
		case okAB:
			return RTT{Value: ab, Source: SourceReported}
		case okBA:
			return RTT{Value: ba, Source: SourceReported}
		}
	}
	if d, ok := CoordinateRTT(m.coords[a], m.coords[b]); ok {
		return RTT{Value: d, Source: SourceCoordinates}
	}
	pa, okA := m.points[a]
	pb, okB := m.points[b]
	if okA && okB {
		return RTT{Value: DistanceRTT(Haversine(pa, pb)), Source: SourceDistance}
	}
	return RTT{Source: SourceUnknown}
}

// Peers returns every id the matrix knows anything about, sorted.
func (m *Matrix) Peers() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	set := make(map[string]struct{})
	for from, row := range m.rows {
		set[from] = struct{}{}
		for to := range row {
			set[to] = struct{}{}
		}
	}
	for id := range m.coords {
		set[id] = struct{}{}
	}
	for id := range m.points {
		set[id] = struct{}{}
	}
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Full returns the estimate for every ordered pair among ids (a nil slice
// means every known peer), skipping unknown pairs.
func (m *Matrix) Full(ids []string) map[string]map[string]RTT {
	if ids == nil {
		ids = m.Peers()
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[string]map[string]RTT, len(ids))
	for _, a := range ids {
		row := make(map[string]RTT)
		for _, b := range ids {
			if a == b {
				continue
			}
			if r := m.estimateLocked(a, b); r.Known() {
				row[b] = r
			}
		}
		out[a] = row
	}
	return out
}
