package geo

import (
	"math"
	"testing"
	"time"

	"github.com/hashicorp/serf/coordinate"
)

func TestHaversine(t *testing.T) {
	cases := []struct {
		name   string
		a, b   Point
		wantKm float64
		tolKm  float64
	}{
		{"same point", Point{48.85, 2.35}, Point{48.85, 2.35}, 0, 1e-9},
		{"Paris-London", Point{48.8566, 2.3522}, Point{51.5074, -0.1278}, 343.5, 2},
		{"New York-Los Angeles", Point{40.7128, -74.0060}, Point{34.0522, -118.2437}, 3936, 10},
		{"antipodes", Point{0, 0}, Point{0, 180}, math.Pi * EarthRadiusKm, 1},
		{"poles", Point{90, 0}, Point{-90, 0}, math.Pi * EarthRadiusKm, 1},
		{"across the date line", Point{0, 179.5}, Point{0, -179.5}, 111.2, 0.5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Haversine(c.a, c.b)
			if math.Abs(got-c.wantKm) > c.tolKm {
				t.Fatalf("Haversine = %.2f km, want %.2f ± %.2f", got, c.wantKm, c.tolKm)
			}
			if back := Haversine(c.b, c.a); math.Abs(back-got) > 1e-9 {
				t.Fatalf("not symmetric: %v vs %v", got, back)
			}
		})
	}
}

func TestPointValidate(t *testing.T) {
	for _, p := range []Point{{91, 0}, {-91, 0}, {0, 181}, {0, -180.5}, {math.NaN(), 0}} {
		if p.Validate() == nil {
			t.Errorf("%v accepted", p)
		}
	}
	if err := (Point{-33.9, 151.2}).Validate(); err != nil {
		t.Errorf("Sydney rejected: %v", err)
	}
}

func TestDistanceRTTGrowsWithDistance(t *testing.T) {
	near, far := DistanceRTT(10), DistanceRTT(10000)
	if near <= 0 || far <= near {
		t.Fatalf("DistanceRTT(10)=%v DistanceRTT(10000)=%v", near, far)
	}
	// 10,000 km at 2/3 c inflated by 1.5 is 150 ms there and back, plus 2 ms.
	if far < 140*time.Millisecond || far > 160*time.Millisecond {
		t.Fatalf("DistanceRTT(10000) = %v, want about 152ms", far)
	}
	if DistanceRTT(-1) != 0 {
		t.Fatal("negative distance must give 0")
	}
}

func TestEWMA(t *testing.T) {
	var e EWMA
	if _, ok := e.Value(); ok {
		t.Fatal("empty EWMA has a value")
	}
	e.Add(100 * time.Millisecond)
	if v, _ := e.Value(); v != 100*time.Millisecond {
		t.Fatalf("first sample sets the value, got %v", v)
	}
	e.Add(200 * time.Millisecond) // 0.2*200 + 0.8*100 = 120
	if v, _ := e.Value(); v != 120*time.Millisecond {
		t.Fatalf("after second sample got %v, want 120ms", v)
	}
	for i := 0; i < 100; i++ {
		e.Add(50 * time.Millisecond)
	}
	if v, _ := e.Value(); v < 49*time.Millisecond || v > 51*time.Millisecond {
		t.Fatalf("EWMA did not converge to 50ms: %v", v)
	}
	if e.Samples() != 102 {
		t.Fatalf("Samples = %d", e.Samples())
	}
	f := EWMA{Alpha: 1}
	f.Add(time.Second)
	f.Add(time.Millisecond)
	if v, _ := f.Value(); v != time.Millisecond {
		t.Fatalf("alpha 1 keeps only the last sample, got %v", v)
	}
}

// TestCoordinatesPredictRTT trains Vivaldi clients on a synthetic
// three-site topology and checks that a pair never measured directly is
// predicted close to its true RTT.
func TestCoordinatesPredictRTT(t *testing.T) {
	// True RTTs between sites: nodes within a site are 1 ms apart.
	site := map[string]int{"a1": 0, "a2": 0, "b1": 1, "b2": 1, "c1": 2, "c2": 2}
	between := [3][3]time.Duration{
		{1 * time.Millisecond, 40 * time.Millisecond, 90 * time.Millisecond},
		{40 * time.Millisecond, 1 * time.Millisecond, 60 * time.Millisecond},
		{90 * time.Millisecond, 60 * time.Millisecond, 1 * time.Millisecond},
	}
	clients := map[string]*coordinate.Client{}
	for id := range site {
		clients[id] = NewCoordinateClient()
	}
	ids := []string{"a1", "a2", "b1", "b2", "c1", "c2"}
	for round := 0; round < 300; round++ {
		for _, x := range ids {
			for _, y := range ids {
				if x == y || (x == "a1" && y == "c2") || (x == "c2" && y == "a1") {
					continue // the pair under test is never measured
				}
				rtt := between[site[x]][site[y]]
				if _, err := clients[x].Update(y, clients[y].GetCoordinate(), rtt); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	m := NewMatrix("")
	for id, c := range clients {
		m.SetCoordinate(id, c.GetCoordinate())
	}
	got := m.Estimate("a1", "c2")
	if got.Source != SourceCoordinates {
		t.Fatalf("source = %s, want coordinates", got.Source)
	}
	if got.Value < 70*time.Millisecond || got.Value > 110*time.Millisecond {
		t.Fatalf("predicted a1-c2 = %v, true 90ms", got.Value)
	}
}

func TestMatrixTrustOrder(t *testing.T) {
	m := NewMatrix("a")
	if r := m.Estimate("a", "b"); r.Known() {
		t.Fatalf("empty matrix knows %v", r)
	}
	m.SetLocation("a", &Point{48.8566, 2.3522})
	m.SetLocation("b", &Point{51.5074, -0.1278})
	if r := m.Estimate("a", "b"); r.Source != SourceDistance || r.Value <= baseRTT {
		t.Fatalf("with locations only: %+v", r)
	}
	ca, cb := coordinate.NewCoordinate(coordinate.DefaultConfig()), coordinate.NewCoordinate(coordinate.DefaultConfig())
	cb.Vec[0] = 0.025 // 25 ms away in the model
	m.SetCoordinate("a", ca)
	m.SetCoordinate("b", cb)
	if r := m.Estimate("a", "b"); r.Source != SourceDistance {
		t.Fatalf("untrained coordinates must not be trusted: %+v", r)
	}
	ca.Error, cb.Error = 0.2, 0.2
	m.SetCoordinate("a", ca)
	m.SetCoordinate("b", cb)
	if r := m.Estimate("a", "b"); r.Source != SourceCoordinates || r.Value < 20*time.Millisecond || r.Value > 30*time.Millisecond {
		t.Fatalf("with coordinates: %+v", r)
	}
	m.SetRow("b", map[string]time.Duration{"a": 12 * time.Millisecond})
	if r := m.Estimate("a", "b"); r.Source != SourceCoordinates {
		t.Fatalf("b's row about a (self) must not count: %+v", r)
	}
	m.SetRow("a", map[string]time.Duration{"b": 8 * time.Millisecond})
	if r := m.Estimate("a", "b"); r.Source != SourceMeasured || r.Value != 8*time.Millisecond {
		t.Fatalf("with a's own measurement: %+v", r)
	}
	full := m.Full(nil)
	if full["a"]["b"].Source != SourceMeasured || len(full) != 2 {
		t.Fatalf("Full = %+v", full)
	}
	m.Forget("b")
	if r := m.Estimate("a", "b"); r.Known() {
		t.Fatalf("forgotten peer still estimated: %+v", r)
	}
}

func TestReportedRowsNeverEstimateSelf(t *testing.T) {
	m := NewMatrix("self")
	// The liar says it is 1 µs from everyone, us included.
	m.SetRow("liar", map[string]time.Duration{"self": time.Microsecond, "x": time.Microsecond})
	m.SetRow("x", map[string]time.Duration{"self": time.Microsecond})
	for _, pair := range [][2]string{{"self", "liar"}, {"liar", "self"}, {"self", "x"}} {
		if r := m.Estimate(pair[0], pair[1]); r.Known() {
			t.Fatalf("%s-%s from reported rows: %+v", pair[0], pair[1], r)
		}
	}
	// Between others, a row is all there is: used, and labelled reported.
	if r := m.Estimate("liar", "x"); r.Source != SourceReported || r.Value != time.Microsecond {
		t.Fatalf("liar-x = %+v, want reported", r)
	}
	m.SetRow("x", map[string]time.Duration{"liar": 3 * time.Microsecond})
	if r := m.Estimate("x", "liar"); r.Source != SourceReported || r.Value != 2*time.Microsecond {
		t.Fatalf("both reports average: %+v", r)
	}
	// Our own measurement is the one that counts.
	m.SetRow("self", map[string]time.Duration{"liar": 150 * time.Millisecond})
	if r := m.Estimate("liar", "self"); r.Source != SourceMeasured || r.Value != 150*time.Millisecond {
		t.Fatalf("own measurement: %+v", r)
	}
	// Full labels the same way.
	full := m.Full([]string{"self", "liar", "x"})
	if full["self"]["liar"].Source != SourceMeasured || full["liar"]["x"].Source != SourceReported {
		t.Fatalf("Full = %+v", full)
	}
	if _, ok := full["x"]["self"]; ok {
		t.Fatalf("x-self known only from x's report: %+v", full["x"]["self"])
	}
}

func TestCoordinateErrorFloor(t *testing.T) {
	cfg := coordinate.DefaultConfig()
	far := coordinate.NewCoordinate(cfg)
	far.Vec[0] = 0.5 // 500 ms away in the model
	far.Error = 0    // and perfectly sure of it
	// pull is how far one sample against the liar moves a peer's coordinate,
	// after it trained against an honest peer at the origin.
	pull := func(update func(c *coordinate.Client) error) time.Duration {
		c := NewCoordinateClient()
		honest := coordinate.NewCoordinate(cfg)
		honest.Error = 0.5
		for i := 0; i < 20; i++ {
			if _, err := c.Update("honest", honest, 20*time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		before := c.GetCoordinate()
		if err := update(c); err != nil {
			t.Fatal(err)
		}
		return c.GetCoordinate().DistanceTo(before)
	}
	raw := pull(func(c *coordinate.Client) error {
		_, err := c.Update("liar", far.Clone(), 10*time.Millisecond)
		return err
	})
	floored := pull(func(c *coordinate.Client) error {
		_, err := UpdateCoordinate(c, "liar", far, 10*time.Millisecond)
		return err
	})
	if !(floored < raw) || floored <= 0 {
		t.Fatalf("a perfect claim moved us %v raw, %v floored: the floor must weigh it less", raw, floored)
	}
	if far.Error != 0 {
		t.Fatalf("UpdateCoordinate changed the caller's coordinate: %v", far.Error)
	}
	// Above the floor a claim is taken as given.
	honest := coordinate.NewCoordinate(cfg)
	honest.Error = 0.7
	a, b := NewCoordinateClient(), NewCoordinateClient()
	ca, _ := UpdateCoordinate(a, "h", honest, 20*time.Millisecond)
	cb, _ := b.Update("h", honest, 20*time.Millisecond)
	if ca.Error != cb.Error || ca.Height != cb.Height {
		t.Fatalf("a claim above the floor was changed: %+v vs %+v", ca, cb)
	}
	if _, err := UpdateCoordinate(a, "nobody", nil, time.Millisecond); err == nil {
		t.Fatal("nil coordinate accepted")
	}
}

// TestCoordinateShift: a coordinate has not moved from itself (DistanceTo
// would count its height twice), and a move counts its vector, height and
// adjustment.
func TestCoordinateShift(t *testing.T) {
	a := coordinate.NewCoordinate(coordinate.DefaultConfig())
	a.Vec[0], a.Height, a.Adjustment = 0.010, 0.004, 0.001
	if d, ok := CoordinateShift(a, a.Clone()); !ok || d != 0 {
		t.Errorf("shift from itself = %v, %v; want 0, true", d, ok)
	}
	b := a.Clone()
	b.Vec[0], b.Vec[1], b.Height, b.Adjustment = 0.013, 0.004, 0.005, 0.0005
	want := 6500 * time.Microsecond // 5 ms + 1 ms + 0.5 ms
	if d, ok := CoordinateShift(a, b); !ok || (d-want).Abs() > time.Microsecond {
		t.Errorf("shift = %v, %v; want %v", d, ok, want)
	}
	if _, ok := CoordinateShift(nil, b); ok {
		t.Error("shift from nil reported")
	}
}
