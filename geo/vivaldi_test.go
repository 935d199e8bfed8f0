package geo_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/serf/coordinate"

	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/internal/worldtest"
)

// sampling is how the swarm feeds Vivaldi, as internal/worldtest runs it
// (and as a real peer does, at other paces): every peer opens connections
// to its ring neighbour and links random others, and pings each connected
// peer once a round, every ping interval jittered by ±20% (p2p.Pinger); a
// new connection is pinged at once. What a ping hands Vivaldi is the least
// of the peer's last p2p.RTTWindow samples, and the other's coordinate is
// the one it last announced, every announce interval.
type sampling struct {
	n             int
	links         int           // random connections each peer opens
	pingEvery     time.Duration // between a peer's rounds
	announceEvery time.Duration // between a peer's announcements
	// fullEvery is how many announcements pass between two that carry the
	// coordinate (experts.FullEvery: the others are beats).
	fullEvery int
	// drift, when set, makes a peer announce its coordinate at its next
	// announcement once it has moved this far from the one it announced
	// last (see swarm.Latency.Drifted).
	drift time.Duration
	// early, when set, is the pace of extra pings while the peer's own
	// error estimate is above earlyError (swarm.Latency's early
	// sampling): every early, earlyPeers random connected peers, and
	// explore peers it has no connection to, which it dials and which
	// stay connected (pinged every round from then on).
	early      time.Duration
	earlyError float64
	earlyPeers int
	explore    int
	// noise is the mean of the exponential delay added to a ping (a busy
	// end, a queue), as a fraction of the true RTT.
	noise float64
	seed  uint64
}

// worldSampling is the world test's pattern for n peers (newWorld): 5
// random links, pings every 2 s up to 30 peers and n/15 s above, and
// announcements every 5 s up to 30 peers and n/6 s above.
func worldSampling(n int) sampling {
	return sampling{n: n, links: 5, pingEvery: time.Duration(max(n, 30)) * 2 * time.Second / 30,
		announceEvery: time.Duration(max(n, 30)) * time.Second / 6, fullEvery: 6, noise: 0.03, seed: 19}
}

// vivaldiPoint is the median relative error of every pair's predicted RTT
// after a time; an untrained pair (geo.CoordinateRTT refuses it) counts as
// an infinite error, as in the world test.
type vivaldiPoint struct {
	at       time.Duration
	median   float64
	explored float64 // peers each dialed to explore, on average
}

// simulateVivaldi runs geo's Vivaldi (geo.NewCoordinateClient trained by
// geo.UpdateCoordinate, as swarm.Latency does) over the world's true RTTs
// (worldtest.Cities and worldtest.OneWay, access delays of 0.5-2 ms) with
// the sampling pattern s, in simulated time, and reports the median
// relative error at each of at.
func simulateVivaldi(s sampling, at []time.Duration) []vivaldiPoint {
	rng := rand.New(rand.NewPCG(s.seed, 1))
	n := s.n
	// Past the table's 84 cities, peers share cities (the world's RTT
	// between them is both access delays, 1-4 ms).
	cities := make([]worldtest.City, n)
	for i := range cities {
		cities[i] = worldtest.Cities[i%len(worldtest.Cities)]
	}
	access := make([]time.Duration, n)
	for i := range access {
		access[i] = time.Duration(500+rng.IntN(1500)) * time.Microsecond
	}
	rtt := make([][]time.Duration, n)
	for i := range rtt {
		rtt[i] = make([]time.Duration, n)
	}
	for i := range n {
		for j := i + 1; j < n; j++ {
			d := 2 * worldtest.OneWay(cities[i], cities[j], access[i], access[j], rng)
			rtt[i][j], rtt[j][i] = d, d
		}
	}
	neighbours := make([][]int, n)
	link := func(i, j int) {
		if i != j && !slices.Contains(neighbours[i], j) {
			neighbours[i] = append(neighbours[i], j)
			neighbours[j] = append(neighbours[j], i)
		}
	}
	for i := range n {
		link(i, (i+1)%n)
		for k := 0; k < s.links; {
			if j := rng.IntN(n); j != i && !slices.Contains(neighbours[i], j) {
				link(i, j)
				k++
			}
		}
	}
	clients := make([]*coordinate.Client, n)
	announced := make([]*coordinate.Coordinate, n)
	window := make([]map[int][]time.Duration, n)
	nextPing := make([]time.Duration, n)
	nextAnnounce := make([]time.Duration, n)
	beats := make([]int, n)
	nextEarly := make([]time.Duration, n)
	explored := 0
	for i := range n {
		clients[i] = geo.NewCoordinateClient()
		// Every client starts at the origin, and serf pushes two
		// coincident coordinates apart in a direction drawn from
		// math/rand's global source; a start a few microseconds off the
		// origin, drawn from rng, keeps the run deterministic and changes
		// nothing a millisecond-scale RTT can see.
		start := clients[i].GetCoordinate()
		for k := range start.Vec {
			start.Vec[k] = (rng.Float64() - 0.5) * 20e-6
		}
		if err := clients[i].SetCoordinate(start); err != nil {
			panic(err)
		}
		announced[i] = clients[i].GetCoordinate()
		window[i] = map[int][]time.Duration{}
		nextAnnounce[i] = time.Duration(rng.Int64N(int64(s.announceEvery)))
	}
	jitter := func(d time.Duration) time.Duration {
		return d + time.Duration((rng.Float64()*0.4-0.2)*float64(d))
	}
	ping := func(i, j int) {
		sample := rtt[i][j] + time.Duration(rng.ExpFloat64()*s.noise*float64(rtt[i][j]))
		w := append(window[i][j], sample)
		if len(w) > 5 { // p2p.RTTWindow
			w = w[1:]
		}
		window[i][j] = w
		_, _ = geo.UpdateCoordinate(clients[i], fmt.Sprint(j), announced[j], slices.Min(w))
	}
	const step = 50 * time.Millisecond
	shifted := func(a, b *coordinate.Coordinate) time.Duration {
		d, _ := geo.CoordinateShift(a, b)
		return d
	}
	var out []vivaldiPoint
	for now := time.Duration(0); len(out) < len(at); now += step {
		for i := range n {
			if now >= nextAnnounce[i] {
				c := clients[i].GetCoordinate()
				beats[i]++
				if beats[i] >= max(s.fullEvery, 1) || (s.drift > 0 && shifted(announced[i], c) > s.drift) {
					announced[i], beats[i] = c, 0
				}
				nextAnnounce[i] = now + jitter(s.announceEvery)/2 + s.announceEvery/2
			}
			if now >= nextPing[i] {
				for _, j := range neighbours[i] {
					ping(i, j)
				}
				nextPing[i] = now + jitter(s.pingEvery)
			}
			if s.early > 0 && now >= nextEarly[i] {
				nextEarly[i] = now + s.early
				if clients[i].GetCoordinate().Error > s.earlyError {
					for range s.earlyPeers {
						ping(i, neighbours[i][rng.IntN(len(neighbours[i]))])
					}
					for range s.explore {
						if j := rng.IntN(n); j != i && !slices.Contains(neighbours[i], j) {
							link(i, j)
							ping(i, j)
							explored++
						}
					}
				}
			}
		}
		if now >= at[len(out)] {
			out = append(out, vivaldiPoint{at: now, median: medianError(clients, rtt), explored: float64(explored) / float64(n)})
		}
	}
	return out
}

// medianError is the median relative error over every pair of the RTT the
// clients' current coordinates predict.
func medianError(clients []*coordinate.Client, rtt [][]time.Duration) float64 {
	coords := make([]*coordinate.Coordinate, len(clients))
	for i, c := range clients {
		coords[i] = c.GetCoordinate()
	}
	var errs []float64
	for i := range coords {
		for j := i + 1; j < len(coords); j++ {
			pred, ok := geo.CoordinateRTT(coords[i], coords[j])
			if !ok {
				errs = append(errs, math.Inf(1))
				continue
			}
			errs = append(errs, math.Abs(float64(pred-rtt[i][j]))/float64(rtt[i][j]))
		}
	}
	slices.Sort(errs)
	return errs[(len(errs)-1)/2]
}

func formatPoints(ps []vivaldiPoint) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, " %s:%.3f", p.at.Round(time.Second), p.median)
		if p.explored > 0 {
			fmt.Fprintf(&b, "(x%.1f)", p.explored)
		}
	}
	return b.String()
}

var checkpoints = []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 60 * time.Second,
	90 * time.Second, 120 * time.Second, 180 * time.Second, 300 * time.Second}

// trained is s with the training geo prescribes beyond the regular pings
// (swarm.Latency follows it): early sampling while a peer's error estimate
// is above geo.EarlyError, and a full announcement once its coordinate
// drifted geo.CoordinateDrift from the one it announced.
func trained(s sampling) sampling {
	s.early, s.earlyError, s.earlyPeers, s.explore = geo.EarlyEvery, geo.EarlyError, geo.EarlyPeers, 1
	s.drift = geo.CoordinateDrift
	return s
}

// TestVivaldiConvergesOnTheWorld: on the world test's true RTTs, sampled
// as the swarm samples them, the median relative error of the coordinates
// is below 0.2 within a minute at 30, 60, 84 and 100 peers, and below 0.1
// within three. Without early sampling and drift announcements (the
// coordinate announced in full only every sixth heartbeat) 60 peers were
// still at 0.6 after a minute and 0.25 after two.
func TestVivaldiConvergesOnTheWorld(t *testing.T) {
	for _, n := range []int{30, 60, len(worldtest.Cities), 100} {
		s := worldSampling(n)
		before := simulateVivaldi(s, checkpoints)
		now := simulateVivaldi(trained(s), checkpoints)
		t.Logf("%d peers, pings every %s, announcements every %s (in full every %d), median error at", n, s.pingEvery.Round(100*time.Millisecond), s.announceEvery.Round(100*time.Millisecond), s.fullEvery)
		t.Logf("  regular pings only:%s", formatPoints(before))
		t.Logf("  early sampling and drift announcements (x: peers dialed to explore):%s", formatPoints(now))
		for _, p := range now {
			if p.at >= time.Minute && p.median >= 0.2 || p.at >= 3*time.Minute && p.median >= 0.1 {
				t.Errorf("%d peers: median relative error %.3f after %s", n, p.median, p.at)
			}
		}
		if last := now[len(now)-1]; last.explored > geo.MaxExplore {
			t.Errorf("%d peers: each dialed %.1f peers to explore, cap %d", n, last.explored, geo.MaxExplore)
		}
	}
}
