package trust

import (
	"slices"
	"testing"
	"time"
)

// TestSuspectIsTriedLastUntilItAnswers: a peer whose ping failed ranks after
// every peer that is not suspected, even one in backoff, keeps its score,
// and is back in line as soon as it answers.
func TestSuspectIsTriedLastUntilItAnswers(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := newStore(c, Config{})
	s.Observe("failed", Event{Kind: Failure}) // in backoff
	s.Suspect("frozen", "ping: timeout")
	c.add(time.Second)
	if got := s.Rank([]string{"frozen", "failed", "fine"}, nil); !slices.Equal(got, []string{"fine", "failed", "frozen"}) {
		t.Fatalf("rank %v", got)
	}
	sc := s.Score("frozen")
	if sc.Suspect.IsZero() || sc.Value != 1 || len(sc.Reasons) != 1 || !s.Suspected("frozen") {
		t.Fatalf("suspect's score %+v", sc)
	}
	s.Suspect("later", "stalled")
	if got := s.Suspects(0); !slices.Equal(got, []string{"frozen", "later"}) {
		t.Fatalf("suspects %v", got)
	}
	c.add(time.Hour) // a suspicion does not wear off by itself
	if !s.Suspected("frozen") {
		t.Fatal("suspicion wore off without an answer")
	}
	s.Alive("frozen")
	if s.Suspected("frozen") {
		t.Fatal("still suspected after it answered a ping")
	}
}

// TestStallMakesASuspectAndSuccessClearsIt: a stalled stream is a suspicion
// as well as a failure; a finished call clears the suspicion.
func TestStallMakesASuspectAndSuccessClearsIt(t *testing.T) {
	s := New(Config{})
	s.Observe("p", Event{Kind: Stalled})
	if !s.Suspected("p") {
		t.Fatal("a stall made no suspect")
	}
	s.Observe("p", Event{Kind: Success})
	if s.Suspected("p") {
		t.Fatal("a success did not clear the suspicion")
	}
	s.Alive("never-seen") // no record, nothing to clear
	if s.Len() != 1 {
		t.Fatalf("Alive created a record: %d peers", s.Len())
	}
}
