package geo

import (
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/serf/coordinate"
)

// Source says where an RTT value came from, in decreasing order of trust.
type Source string

const (
	SourceMeasured    Source = "measured"    // a ping round trip, averaged
	SourceCoordinates Source = "coordinates" // predicted from Vivaldi network coordinates
	SourceDistance    Source = "distance"    // guessed from great-circle distance
	SourceUnknown     Source = "unknown"     // nothing to go on
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

// Matrix merges what the swarm knows about round trips: rows of measured
// EWMA RTTs (this peer's own and those gossiped by others), network
// coordinates and locations. It is safe for concurrent use.
type Matrix struct {
	mu     sync.RWMutex
	rows   map[string]map[string]time.Duration
	coords map[string]*coordinate.Coordinate
	points map[string]Point
}

// NewMatrix returns an empty matrix.
func NewMatrix() *Matrix {
	return &Matrix{
		rows:   make(map[string]map[string]time.Duration),
		coords: make(map[string]*coordinate.Coordinate),
		points: make(map[string]Point),
	}
}

// SetRow replaces the measured row of from. The map is copied.
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

// Estimate returns the best RTT estimate between a and b: a measurement in
// either direction (their mean when both exist), else a prediction from
// network coordinates, else one from distance.
func (m *Matrix) Estimate(a, b string) RTT {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.estimateLocked(a, b)
}

func (m *Matrix) estimateLocked(a, b string) RTT {
	if a == b {
		return RTT{Source: SourceMeasured}
	}
	ab, okAB := m.rows[a][b]
	ba, okBA := m.rows[b][a]
	switch {
	case okAB && okBA:
		return RTT{Value: (ab + ba) / 2, Source: SourceMeasured}
	case okAB:
		return RTT{Value: ab, Source: SourceMeasured}
	case okBA:
		return RTT{Value: ba, Source: SourceMeasured}
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
