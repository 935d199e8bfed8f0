package trust

import (
	"slices"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time            { return c.t }
func (c *clock) add(d time.Duration)       { c.t = c.t.Add(d) }
func newStore(c *clock, cfg Config) *Store { cfg.Now = c.now; return New(cfg) }

func TestUnknownPeerHasACleanScore(t *testing.T) {
	s := New(Config{})
	sc := s.Score("stranger")
	if sc.Value != 1 || sc.Failures != 0 || sc.InBackoff(time.Now()) {
		t.Fatalf("unknown peer: %+v", sc)
	}
}

func TestFailuresLowerTheScoreAndDecay(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := newStore(c, Config{HalfLife: time.Minute})
	s.Observe("a", Event{Kind: Failure})
	s.Observe("a", Event{Kind: Stalled})
	sc := s.Score("a")
	if sc.Failures != 2 || sc.Value != 1.0/3 || sc.Streak != 2 {
		t.Fatalf("after two failures: %+v", sc)
	}
	c.add(time.Minute)
	if f := s.Score("a").Failures; f < 0.99 || f > 1.01 {
		t.Fatalf("after one half-life failures = %v, want 1", f)
	}
	c.add(20 * time.Minute)
	if sc := s.Score("a"); sc.Failures != 0 || sc.Value != 1 {
		t.Fatalf("long after: %+v", sc)
	}
}

func TestBadDataWeighsMoreThanAFailure(t *testing.T) {
	s := New(Config{})
	s.Observe("liar", Event{Kind: BadData})
	s.Observe("flaky", Event{Kind: Failure})
	if l, f := s.Score("liar"), s.Score("flaky"); l.Value >= f.Value {
		t.Fatalf("bad data %v should score below one failure %v", l.Value, f.Value)
	}
}

func TestRefusalsAndCancelsAreNotFaults(t *testing.T) {
	s := New(Config{})
	s.Observe("busy", Event{Kind: Refused})
	s.Observe("busy", Event{Kind: Chosen})
	if sc := s.Score("busy"); sc.Value != 1 || sc.Streak != 0 {
		t.Fatalf("refused: %+v", sc)
	}
	if n := s.Counts("busy"); n["refused"] != 1 || n["chosen"] != 1 {
		t.Fatalf("counts %v", n)
	}
}

func TestBackoffDoublesPerFailureInARowAndEndsOnSuccess(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := newStore(c, Config{Cooldown: 10 * time.Second})
	s.Observe("a", Event{Kind: Failure})
	if !s.Score("a").InBackoff(c.now()) {
		t.Fatal("not in backoff after a failure")
	}
	c.add(11 * time.Second)
	if s.Score("a").InBackoff(c.now()) {
		t.Fatal("still in backoff after the cooldown")
	}
	s.Observe("a", Event{Kind: Failure}) // second in a row: 20 s
	c.add(15 * time.Second)
	if !s.Score("a").InBackoff(c.now()) {
		t.Fatal("second failure in a row should back off for twice as long")
	}
	s.Observe("a", Event{Kind: Success})
	if sc := s.Score("a"); sc.InBackoff(c.now()) || sc.Streak != 0 {
		t.Fatalf("after a success: %+v", sc)
	}
}

func TestPerfIsPerModelAndMeasured(t *testing.T) {
	s := New(Config{})
	s.Observe("a", Event{Kind: Success, Model: "m", TTFT: 100 * time.Millisecond, Tokens: 11, Duration: 600 * time.Millisecond})
	p := s.Perf("a", "m")
	if p.TTFT != 100*time.Millisecond || p.DecodeTPS < 19.9 || p.DecodeTPS > 20.1 || p.Calls != 1 {
		t.Fatalf("perf %+v, want 100ms and 20 tok/s", p)
	}
	if p := s.Perf("a", "other"); p != (Perf{}) {
		t.Fatalf("other model: %+v", p)
	}
}

func TestRankPutsPeersInBackoffLast(t *testing.T) {
	s := New(Config{})
	s.Observe("b", Event{Kind: Failure})
	cost := map[string]float64{"a": 3, "b": 1, "c": 2}
	got := s.Rank([]string{"a", "b", "c"}, func(id string) float64 { return cost[id] })
	if want := []string{"c", "a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("rank %v, want %v", got, want)
	}
	s.Observe("c", Event{Kind: BadData})
	got = s.Rank([]string{"c", "a", "b"}, nil) // by score: a clean, b one failure, c bad data; b and c in backoff
	if want := []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("rank by score %v, want %v", got, want)
	}
}

func TestStoreIsBounded(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := newStore(c, Config{MaxPeers: 3})
	for _, id := range []string{"a", "b", "c", "d"} {
		c.add(time.Second)
		s.Observe(id, Event{Kind: Failure})
	}
	if s.Len() != 3 {
		t.Fatalf("len %d, want 3", s.Len())
	}
	if sc := s.Score("a"); sc.Failures != 0 {
		t.Fatalf("the least recently observed peer should be forgotten: %+v", sc)
	}
}

func TestConvictionExcludesAndExpires(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := newStore(c, Config{Exclusion: 10 * time.Minute})
	if !s.Convict("liar", "m", "layer 1 expert 2: NaN in row 0") {
		t.Fatal("a first conviction is a new offence")
	}
	sc := s.Score("liar")
	if !sc.IsExcluded(c.now()) || !s.Excluded("liar") || sc.Wrong != 1 || sc.Failures != 20 {
		t.Fatalf("after a conviction: %+v", sc)
	}
	if !slices.Contains(sc.Reasons, "1 wrong") || !slices.Contains(sc.Reasons, "last: layer 1 expert 2: NaN in row 0") {
		t.Fatalf("reasons %q", sc.Reasons)
	}
	// Calls in flight caught at the same moment are the same offence.
	if s.Convict("liar", "m", "again") {
		t.Fatal("a conviction while excluded is a new offence")
	}
	if got := s.Score("liar").Excluded; !got.Equal(c.now().Add(10 * time.Minute)) {
		t.Fatalf("exclusion lengthened to %v", got)
	}
	c.add(10*time.Minute + time.Second)
	if s.Excluded("liar") {
		t.Fatal("still excluded after the exclusion")
	}
	// A second offence while the first is remembered: four times as long.
	if !s.Convict("liar", "m", "outvoted") {
		t.Fatal("a conviction after the exclusion is a new offence")
	}
	if got, want := s.Score("liar").Excluded.Sub(c.now()), 40*time.Minute; got != want {
		t.Fatalf("second exclusion %v, want %v", got, want)
	}
	c.add(41 * time.Minute)
	s.Convict("liar", "m", "outvoted")
	if got, want := s.Score("liar").Excluded.Sub(c.now()), 160*time.Minute; got != want {
		t.Fatalf("third exclusion %v, want %v", got, want)
	}
}

func TestExclusionIsCappedAndForgiven(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := newStore(c, Config{Exclusion: 10 * time.Minute, MaxExclusion: time.Hour, Forgiveness: 24 * time.Hour})
	for range 5 {
		s.Convict("liar", "m", "")
		c.add(2 * time.Hour)
	}
	if got := s.Score("liar").Excluded; !got.IsZero() {
		t.Fatalf("excluded until %v after the capped exclusions", got)
	}
	s.Convict("liar", "m", "")
	if got := s.Score("liar").Excluded.Sub(c.now()); got != time.Hour {
		t.Fatalf("exclusion %v, want the cap", got)
	}
	// Forgiveness: the weight halves every day, so after a week the peer
	// is near a clean record and a new offence is a first one again.
	c.add(7 * 24 * time.Hour)
	if sc := s.Score("liar"); sc.Value < 0.5 || sc.Wrong > 0.1 {
		t.Fatalf("a week later: %+v", sc)
	}
	s.Convict("liar", "m", "")
	if got := s.Score("liar").Excluded.Sub(c.now()); got != 10*time.Minute {
		t.Fatalf("exclusion after a week of good behaviour %v, want the first one's", got)
	}
}

func TestRankPutsExcludedPeersAfterBackoff(t *testing.T) {
	s := New(Config{})
	s.Observe("flaky", Event{Kind: Failure})
	s.Convict("liar", "m", "")
	got := s.Rank([]string{"liar", "flaky", "fine"}, func(string) float64 { return 0 })
	if want := []string{"fine", "flaky", "liar"}; !slices.Equal(got, want) {
		t.Fatalf("rank %v, want %v", got, want)
	}
}
