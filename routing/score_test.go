package routing

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

// cand is a candidate with nothing measured, two slots and no location.
func cand(peer string, domains ...string) Candidate {
	return Candidate{Peer: peer, Model: "m", Domains: domains, Capacity: 2, DistanceKm: -1}
}

func with(c Candidate, fs ...func(*Candidate)) Candidate {
	for _, f := range fs {
		f(&c)
	}
	return c
}

func rtt(d time.Duration) func(*Candidate) {
	return func(c *Candidate) { c.RTT, c.RTTKnown = d, true }
}

func TestRankOrdersPairs(t *testing.T) {
	code := Classify("fix this golang bug in main.go")
	cases := []struct {
		name    string
		domains []DomainScore
		better  Candidate
		worse   Candidate
	}{
		{"domain match beats no match", code, cand("z", Code), cand("a", Creative)},
		{"general peer beats an unrelated specialist", code, cand("z", General), cand("a", Creative)},
		{"undeclared counts as general", code, cand("z"), cand("a", Creative)},
		{"specialist beats general in its domain", code, cand("z", Code), cand("a", General)},
		{"general peer wins a general prompt", Classify("hello there"), cand("z", General), cand("a", Math)},
		{"closer RTT wins", code, with(cand("z", Code), rtt(5*time.Millisecond)), with(cand("a", Code), rtt(200*time.Millisecond))},
		{"unknown RTT loses to a fast known one", code, with(cand("z", Code), rtt(10*time.Millisecond)), cand("a", Code)},
		{"unknown RTT beats a slow known one", code, cand("z", Code), with(cand("a", Code), rtt(time.Second))},
		{"local beats an unmeasured remote", code, with(cand("z", Code), func(c *Candidate) { c.Local = true }), cand("a", Code)},
		{"shorter TTFT wins", code, with(cand("z", Code), func(c *Candidate) { c.TTFT = 100 * time.Millisecond }),
			with(cand("a", Code), func(c *Candidate) { c.TTFT = 3 * time.Second })},
		{"faster decode wins", code, with(cand("z", Code), func(c *Candidate) { c.DecodeTPS = 80 }),
			with(cand("a", Code), func(c *Candidate) { c.DecodeTPS = 5 })},
		{"unknown decode speed beats a slow one", code, cand("z", Code), with(cand("a", Code), func(c *Candidate) { c.DecodeTPS = 2 })},
		{"less loaded wins", code, with(cand("z", Code), func(c *Candidate) { c.Capacity = 4; c.Load = 1 }),
			with(cand("a", Code), func(c *Candidate) { c.Capacity = 4; c.Load = 3 })},
		{"overloaded specialist falls behind a free general peer", code, cand("z", General),
			with(cand("a", Code), func(c *Candidate) { c.Load = 2 })},
		{"overloaded fast peer falls behind a free slow one", code, with(cand("z", Code), rtt(300*time.Millisecond)),
			with(cand("a", Code), func(c *Candidate) { c.Load = 2; c.RTT, c.RTTKnown, c.DecodeTPS = time.Millisecond, true, 100 })},
		{"deeper overload falls further", code, with(cand("z", Code), func(c *Candidate) { c.Load = 2 }),
			with(cand("a", Code), func(c *Candidate) { c.Load = 6 })},
		{"nearer wins", code, with(cand("z", Code), func(c *Candidate) { c.DistanceKm = 100 }),
			with(cand("a", Code), func(c *Candidate) { c.DistanceKm = 9000 })},
		{"known near beats unknown distance", code, with(cand("z", Code), func(c *Candidate) { c.DistanceKm = 10 }), cand("a", Code)},
		{"failures fall behind", code, cand("z", Code), with(cand("a", Code), func(c *Candidate) { c.Failures = 1 })},
		{"more failures fall further", code, with(cand("z", Code), func(c *Candidate) { c.Failures = 1 }),
			with(cand("a", Code), func(c *Candidate) { c.Failures = 4 })},
		{"closer, faster, less loaded wins on all counts", code,
			with(cand("z", Code), func(c *Candidate) { c.RTT, c.RTTKnown, c.DecodeTPS, c.DistanceKm = 20*time.Millisecond, true, 40, 50 }),
			with(cand("a", Code), func(c *Candidate) {
				c.RTT, c.RTTKnown, c.DecodeTPS, c.DistanceKm, c.Load = 250*time.Millisecond, true, 10, 6000, 1
			})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, in := range [][]Candidate{{c.worse, c.better}, {c.better, c.worse}} {
				r := Rank(in, c.domains, DefaultWeights())
				if len(r) != 2 || r[0].Peer != c.better.Peer {
					t.Fatalf("got %s %.4f %+v before %s %.4f %+v", r[0].Peer, r[0].Score, r[0].Parts, r[1].Peer, r[1].Score, r[1].Parts)
				}
			}
		})
	}
}

func TestOverloadedIsPenalizedNotRemoved(t *testing.T) {
	code := Classify("fix this golang bug")
	over := with(cand("a", Code), func(c *Candidate) { c.Load = 5 })
	r := Rank([]Candidate{over}, code, DefaultWeights())
	if len(r) != 1 || r[0].Parts.Load >= 0 || r[0].Parts.Capacity != 0 {
		t.Fatalf("overloaded candidate: %+v", r)
	}
}

func TestUnknownRTTIsNeutral(t *testing.T) {
	unknown := Speed(cand("a"))
	atRef := Speed(with(cand("a"), rtt(refRTT)))
	if unknown != atRef || unknown != neutral {
		t.Errorf("unmeasured speed %v, at the references %v: want both %v", unknown, atRef, neutral)
	}
	if best := Speed(with(cand("a"), func(c *Candidate) { c.Local, c.TTFT, c.DecodeTPS = true, time.Millisecond, 1e6 })); best <= 0.99 || best > 1 {
		t.Errorf("an instant local peer scores %v, want nearly 1", best)
	}
}

func ttft(d time.Duration, tps float64) func(*Candidate) {
	return func(c *Candidate) { c.TTFT, c.DecodeTPS = d, tps }
}

func TestUnmeasuredCountsAsTheMedian(t *testing.T) {
	code := Classify("fix this golang bug in main.go")
	// Three measured peers 20 ms away: the server's part of their first
	// token is 80, 180 and 880 ms, their decode rates 60, 40 and 8.
	known := []Candidate{
		with(cand("k1", Code), rtt(20*time.Millisecond), ttft(100*time.Millisecond, 60)),
		with(cand("k2", Code), rtt(20*time.Millisecond), ttft(200*time.Millisecond, 40)),
		with(cand("k3", Code), rtt(20*time.Millisecond), ttft(900*time.Millisecond, 8)),
	}
	pr := PriorsOf(known)
	if pr.ServerTTFT != 180*time.Millisecond || pr.DecodeTPS != 40 || pr.RTT != 20*time.Millisecond {
		t.Fatalf("priors %+v, want the medians 180 ms, 40 tokens/s, 20 ms", pr)
	}
	// An unmeasured peer as near as they are ranks with the median one:
	// after the better, before the worse.
	near := with(cand("u", Code), rtt(20*time.Millisecond))
	r := Rank(append(slices.Clone(known), near), code, DefaultWeights())
	if got := peersOf(r); got != "k1,k2,u,k3" && got != "k1,u,k2,k3" {
		t.Errorf("ranking %s: the unmeasured peer should rank with the median", got)
	}
	// An unmeasured peer far away ranks after every near one but the slow.
	far := with(cand("f", Code), rtt(300*time.Millisecond))
	r = Rank(append(slices.Clone(known), far), code, DefaultWeights())
	if got := peersOf(r); got != "k1,k2,f,k3" {
		t.Errorf("ranking %s, want k1,k2,f,k3", got)
	}
	// With fewer than three measured, the references stand in.
	if pr := PriorsOf(known[2:]); pr != DefaultPriors() {
		t.Errorf("one measured peer gives priors %+v, want the defaults %+v", pr, DefaultPriors())
	}
}

func TestMeasuredTTFTHoldsTheRoundTrip(t *testing.T) {
	// A measured time to first token was timed here: it holds the round
	// trip, which must not count twice. 50 ms away with a 250 ms first
	// token is the same as 200 ms away with the same 250 ms.
	near := with(cand("a", Code), rtt(50*time.Millisecond), ttft(250*time.Millisecond, 30))
	far := with(cand("b", Code), rtt(200*time.Millisecond), ttft(250*time.Millisecond, 30))
	if a, b := Speed(near), Speed(far); a != b {
		t.Errorf("speed %v near, %v far: the round trip counted twice", a, b)
	}
	// A first token measured faster than the round trip (a stale
	// measurement) counts as the round trip.
	stale := with(cand("c", Code), rtt(400*time.Millisecond), ttft(100*time.Millisecond, 30))
	at := with(cand("d", Code), rtt(400*time.Millisecond), ttft(400*time.Millisecond, 30))
	if a, b := Speed(stale), Speed(at); a != b {
		t.Errorf("speed %v with a stale TTFT, %v at the RTT", a, b)
	}
}

func TestScorePartsAddUp(t *testing.T) {
	c := with(cand("a", Code, Math), func(c *Candidate) {
		c.RTT, c.RTTKnown, c.TTFT, c.DecodeTPS, c.Load, c.DistanceKm, c.Failures = 80*time.Millisecond, true, time.Second, 30, 1, 700, 2
	})
	s := Score(c, Classify("Write a Python function to compute the integral"), DefaultWeights())
	p := s.Parts
	sum := p.Relevance + p.Speed + p.Capacity + p.Load + p.Distance + p.Failures
	if math.Abs(sum-s.Score) > 1e-9 {
		t.Errorf("parts %+v sum to %v, score %v", p, sum, s.Score)
	}
	if p.Relevance <= 0 || p.Speed <= 0 || p.Capacity <= 0 || p.Load != 0 || p.Distance >= 0 || p.Failures >= 0 {
		t.Errorf("parts have the wrong signs: %+v", p)
	}
	if s.Score > 1 {
		t.Errorf("score %v above 1", s.Score)
	}
}

func TestRelevance(t *testing.T) {
	mixed := []DomainScore{{Code, 0.8}, {Math, 0.6}, {General, 0.2}}
	cases := []struct {
		name string
		c    Candidate
		want float64
	}{
		{"both domains", cand("a", Code, Math), (0.8 + 0.6 + 0.5*0.2) / 1.6},
		{"one domain", cand("a", Code), (0.8 + 0.5*0.2) / 1.6},
		{"general", cand("a", General), (0.3*0.8 + 0.3*0.6 + 0.2) / 1.6},
		{"none declared", cand("a"), (0.3*0.8 + 0.3*0.6 + 0.2) / 1.6},
		{"unrelated", cand("a", Creative), 0.5 * 0.2 / 1.6},
		{"case-insensitive", cand("a", "CODE", "Math"), (0.8 + 0.6 + 0.5*0.2) / 1.6},
	}
	for _, c := range cases {
		if got := Relevance(c.c, mixed); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: Relevance = %v, want %v", c.name, got, c.want)
		}
	}
	if got := Relevance(cand("a", Code), nil); got != neutral {
		t.Errorf("no domains: Relevance = %v, want %v", got, neutral)
	}
}

func TestRankTiesByPeerID(t *testing.T) {
	ds := Classify("hello")
	in := []Candidate{cand("c", General), cand("a", General), cand("b", General), with(cand("a", General), func(c *Candidate) { c.Model = "l" })}
	r := Rank(in, ds, DefaultWeights())
	got := ""
	for _, s := range r {
		got += s.Peer + "/" + s.Model + " "
	}
	if want := "a/l a/m b/m c/m "; got != want {
		t.Errorf("order %q, want %q", got, want)
	}
}

func TestZeroWeightsMeanDefaults(t *testing.T) {
	c := with(cand("a", Code), rtt(30*time.Millisecond))
	ds := Classify("fix the bug")
	if a, b := Score(c, ds, Weights{}), Score(c, ds, DefaultWeights()); a.Score != b.Score || a.Parts != b.Parts {
		t.Errorf("zero weights %+v, defaults %+v", a, b)
	}
}

func TestScoreSurvivesOddInput(t *testing.T) {
	odd := []Candidate{
		{Peer: "a", Capacity: 0, Load: -3, RTT: -time.Second, RTTKnown: true, DistanceKm: math.Inf(1), DecodeTPS: math.Inf(1)},
		{Peer: "b", Capacity: -1, Load: 1 << 30, Failures: -2, TTFT: -time.Second, DecodeTPS: -5},
	}
	for _, s := range Rank(odd, nil, DefaultWeights()) {
		if math.IsNaN(s.Score) || math.IsInf(s.Score, 0) {
			t.Errorf("%s: score %v, parts %+v", s.Peer, s.Score, s.Parts)
		}
	}
}

func BenchmarkRank(b *testing.B) {
	domains := []string{General, Code, Math, Creative, Science, Reasoning}
	cands := make([]Candidate, 100)
	for i := range cands {
		c := cand(fmt.Sprintf("12D3KooWpeer%03d", i), domains[i%len(domains)], domains[(i/6)%len(domains)])
		c.RTT, c.RTTKnown = time.Duration(i)*time.Millisecond, i%3 != 0
		c.TTFT = time.Duration(i%7) * 100 * time.Millisecond
		c.DecodeTPS = float64(i % 40)
		c.Capacity, c.Load = 4, i%5
		c.DistanceKm = float64(i * 37 % 12000)
		c.Failures = i % 4 / 3
		cands[i] = c
	}
	ds := Classify("Write a Python function to compute the integral of a polynomial")
	w := DefaultWeights()
	b.ReportAllocs()
	for b.Loop() {
		Rank(cands, ds, w)
	}
}
