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
	// token expects it as soon as 200 ms away with the same 250 ms, and
	// ranks first only by RTTExtra of the 150 ms between them (see Speed),
	// not as if the far one's first token came 150 ms later.
	near := with(cand("a", Code), rtt(50*time.Millisecond), ttft(250*time.Millisecond, 30))
	far := with(cand("b", Code), rtt(200*time.Millisecond), ttft(250*time.Millisecond, 30))
	twice := with(cand("b", Code), rtt(200*time.Millisecond), ttft(400*time.Millisecond, 30))
	p := DefaultPriors()
	if a, b := FirstToken(near, p), FirstToken(far, p); a != b || a != 250*time.Millisecond {
		t.Errorf("first token %v near, %v far: want 250ms both", a, b)
	}
	if a, b, c := Speed(near), Speed(far), Speed(twice); !(a > b && b > c) {
		t.Errorf("speed %v near, %v far, %v far with the round trip counted twice: want them in that order", a, b, c)
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
	// Its RTT is known, so its distance does not count.
	if p.Relevance <= 0 || p.Speed <= 0 || p.Capacity <= 0 || p.Load != 0 || p.Distance != 0 || p.Failures >= 0 {
		t.Errorf("parts have the wrong signs: %+v", p)
	}
	c.RTTKnown = false
	if d := Score(c, nil, DefaultWeights()).Parts.Distance; d >= 0 {
		t.Errorf("with the RTT unknown, 700 km away costs %v, want < 0", d)
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

func reported(d time.Duration, tps float64) func(*Candidate) {
	return func(c *Candidate) { c.ReportedTTFT, c.DecodeTPS = d, tps }
}

func slots(capacity, load int) func(*Candidate) {
	return func(c *Candidate) { c.Capacity, c.Load = capacity, load }
}

func measured(d time.Duration, tps float64, calls int) func(*Candidate) {
	return func(c *Candidate) { c.TTFT, c.DecodeTPS, c.Calls = d, tps, calls }
}

// TestNearTies are the cases the latency-shaped world (internal/worldtest)
// found routers getting wrong: free capacity must break ties between
// candidates about as quick, not outweigh a round trip several times as
// long, and one unlucky call must not put a peer out of reach for good; of
// two candidates whose first tokens come about as soon the nearer wins,
// and a decode rate above reading pace does not outweigh either.
func TestNearTies(t *testing.T) {
	code := Classify("fix this golang bug in main.go")
	// Three known peers 80 ms away whose servers take 100 ms: the median.
	typical := func(name string) Candidate {
		return with(cand(name, Code), rtt(80*time.Millisecond), measured(180*time.Millisecond, 40, 5), slots(4, 0))
	}
	known := []Candidate{typical("k1"), typical("k2"), typical("k3")}
	cases := []struct {
		name   string
		better Candidate
		worse  Candidate
		others []Candidate
	}{
		{"a quarter of the slots in use does not outweigh a round trip 3x longer",
			with(cand("z", Code), rtt(30*time.Millisecond), reported(100*time.Millisecond, 40), slots(4, 1)),
			with(cand("a", Code), rtt(90*time.Millisecond), reported(100*time.Millisecond, 40), slots(4, 0)), nil},
		{"half the slots in use do not outweigh 200 ms more",
			with(cand("z", Code), rtt(100*time.Millisecond), reported(100*time.Millisecond, 40), slots(2, 1)),
			with(cand("a", Code), rtt(300*time.Millisecond), reported(100*time.Millisecond, 40), slots(2, 0)), nil},
		{"free slots break a tie of equal expected times",
			with(cand("z", Code), rtt(50*time.Millisecond), reported(100*time.Millisecond, 40), slots(4, 0)),
			with(cand("a", Code), rtt(50*time.Millisecond), reported(100*time.Millisecond, 40), slots(4, 1)), nil},
		{"a claim of 256 slots does not outweigh 60 ms",
			with(cand("z", Code), rtt(40*time.Millisecond), reported(100*time.Millisecond, 40), slots(2, 1)),
			with(cand("a", Code), rtt(100*time.Millisecond), reported(100*time.Millisecond, 40), slots(1<<30, 0)), nil},
		{"one slow call does not put a near peer out of reach",
			with(cand("z", Code), rtt(30*time.Millisecond), measured(400*time.Millisecond, 40, 1), reported(70*time.Millisecond, 40)),
			with(cand("a", Code), rtt(90*time.Millisecond), measured(190*time.Millisecond, 40, 5)), known},
		{"three slow calls do",
			with(cand("z", Code), rtt(90*time.Millisecond), measured(190*time.Millisecond, 40, 5)),
			with(cand("a", Code), rtt(30*time.Millisecond), measured(400*time.Millisecond, 40, 3)), known},
		{"one slow call of a peer that says it is slow is believed",
			with(cand("z", Code), rtt(90*time.Millisecond), measured(190*time.Millisecond, 40, 5)),
			with(cand("a", Code), rtt(30*time.Millisecond), measured(950*time.Millisecond, 8, 1), reported(900*time.Millisecond, 8)), known},
		{"one slow call does not make a peer better than the measured",
			with(cand("z", Code), rtt(30*time.Millisecond), measured(60*time.Millisecond, 40, 5)),
			with(cand("a", Code), rtt(30*time.Millisecond), measured(400*time.Millisecond, 40, 1)), known},
		// The 60-peer world: first tokens within 1% (188 and 190 ms), the
		// nearer decoding slower; the round trip is the surer figure.
		{"Stockholm: Madrid, 40 ms away and 148 ms to serve, over Seoul, 121 ms away and 69 ms to serve",
			with(cand("z", Code), rtt(40*time.Millisecond), reported(148*time.Millisecond, 33), slots(4, 0)),
			with(cand("a", Code), rtt(121*time.Millisecond), reported(69*time.Millisecond, 50), slots(4, 0)), nil},
		{"Stockholm again, Madrid measured at 48 ms, decoding 38 tokens/s with half its slots in use, Seoul 67 with all free",
			with(cand("z", Code), rtt(48*time.Millisecond), reported(147*time.Millisecond, 38), slots(4, 2)),
			with(cand("a", Code), rtt(121*time.Millisecond), reported(68*time.Millisecond, 67), slots(4, 0)), nil},
		{"a first token 5% later from a peer at half the round trip",
			with(cand("z", Code), rtt(28*time.Millisecond), reported(88*time.Millisecond, 40), slots(4, 0)),
			with(cand("a", Code), rtt(45*time.Millisecond), reported(65*time.Millisecond, 40), slots(4, 0)), nil},
		{"a decoder faster than anyone reads does not outweigh a sooner first token",
			with(cand("z", Code), rtt(31*time.Millisecond), measured(178*time.Millisecond, 33, 3)),
			with(cand("a", Code), rtt(118*time.Millisecond), measured(186*time.Millisecond, 49, 3)), known},
		{"nor a round trip twice as long",
			with(cand("z", Code), rtt(32*time.Millisecond), reported(150*time.Millisecond, 44), slots(4, 0)),
			with(cand("a", Code), rtt(70*time.Millisecond), reported(114*time.Millisecond, 64), slots(4, 0)), nil},
		{"a nearer peer whose first token is later by more than half the round trips' difference does not win",
			with(cand("z", Code), rtt(100*time.Millisecond), reported(60*time.Millisecond, 40), slots(4, 0)),
			with(cand("a", Code), rtt(20*time.Millisecond), reported(190*time.Millisecond, 40), slots(4, 0)), nil},
		{"a reader's pace still counts: 2 tokens/s loses to 30 at an equal first token",
			with(cand("z", Code), rtt(60*time.Millisecond), reported(100*time.Millisecond, 30), slots(4, 0)),
			with(cand("a", Code), rtt(50*time.Millisecond), reported(110*time.Millisecond, 2), slots(4, 0)), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, in := range [][]Candidate{{c.worse, c.better}, {c.better, c.worse}} {
				r := Rank(append(slices.Clone(c.others), in...), code, DefaultWeights())
				zi := slices.IndexFunc(r, func(s Scored) bool { return s.Peer == c.better.Peer })
				ai := slices.IndexFunc(r, func(s Scored) bool { return s.Peer == c.worse.Peer })
				if zi > ai {
					t.Fatalf("%s %.4f %+v (first token %s) ranks before %s %.4f %+v (first token %s)",
						r[ai].Peer, r[ai].Score, r[ai].Parts, r[ai].FirstToken, r[zi].Peer, r[zi].Score, r[zi].Parts, r[zi].FirstToken)
				}
			}
		})
	}
}

// TestDistanceOnlyStandsInForAnUnknownRTT: once the round trip is measured
// or predicted, a location (the peer's own claim) moves nothing.
func TestDistanceOnlyStandsInForAnUnknownRTT(t *testing.T) {
	near := with(cand("a", Code), rtt(200*time.Millisecond), func(c *Candidate) { c.DistanceKm = 50 })
	far := with(cand("b", Code), rtt(200*time.Millisecond), func(c *Candidate) { c.DistanceKm = 15000 })
	if a, b := Score(near, nil, Weights{}), Score(far, nil, Weights{}); a.Score != b.Score || a.Parts.Distance != 0 {
		t.Errorf("claimed 50 km %+v, 15,000 km %+v: with the RTT known they should score the same", a, b)
	}
}

func TestFirstToken(t *testing.T) {
	p := Priors{ServerTTFT: 150 * time.Millisecond, DecodeTPS: 20, RTT: 120 * time.Millisecond}
	ms := time.Millisecond
	cases := []struct {
		name string
		c    Candidate
		want time.Duration
	}{
		{"nothing known: the priors", cand("a"), 270 * ms},
		{"local: no round trip", with(cand("a"), func(c *Candidate) { c.Local = true }), 150 * ms},
		{"reported server time", with(cand("a"), rtt(40*ms), reported(60*ms, 0)), 100 * ms},
		{"measured holds the round trip", with(cand("a"), rtt(40*ms), measured(90*ms, 0, 4)), 90 * ms},
		{"stale measurement below the round trip", with(cand("a"), rtt(40*ms), measured(10*ms, 0, 4)), 40 * ms},
		{"one slow call counts as the median", with(cand("a"), rtt(40*ms), measured(500*ms, 0, 1)), 190 * ms},
		{"two slow calls count as the report", with(cand("a"), rtt(40*ms), measured(500*ms, 0, 2), reported(70*ms, 0)), 110 * ms},
		{"three are the measurement", with(cand("a"), rtt(40*ms), measured(500*ms, 0, 3), reported(70*ms, 0)), 500 * ms},
		{"uncounted calls are established", with(cand("a"), rtt(40*ms), measured(500*ms, 0, 0)), 500 * ms},
		{"load below capacity adds nothing", with(cand("a"), rtt(40*ms), reported(60*ms, 0), slots(4, 3)), 100 * ms},
	}
	for _, c := range cases {
		if got := FirstToken(c.c, p); got != c.want {
			t.Errorf("%s: FirstToken = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestFewCallsDecodeAsReported: a decode rate measured over one or two
// calls counts as at least what the peer reports; from three, as measured.
func TestFewCallsDecodeAsReported(t *testing.T) {
	p := DefaultPriors()
	base := with(cand("a"), rtt(40*time.Millisecond), func(c *Candidate) { c.TTFT, c.DecodeTPS, c.ReportedTPS = 200*time.Millisecond, 10, 50 })
	one := with(base, func(c *Candidate) { c.Calls = 1 })
	three := with(base, func(c *Candidate) { c.Calls = 3 })
	reportedOnly := with(base, func(c *Candidate) { c.DecodeTPS, c.Calls = 50, 3 })
	if a, b := speed(one, p), speed(reportedOnly, p); a != b {
		t.Errorf("one call at 10 tokens/s scores %v, want as 50 reported (%v)", a, b)
	}
	if a, b := speed(three, p), speed(reportedOnly, p); a >= b {
		t.Errorf("three calls at 10 tokens/s score %v, not below 50 (%v)", a, b)
	}
}
