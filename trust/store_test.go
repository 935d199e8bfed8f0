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
