package inference

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// callAs starts a call named who from caller (harness.call names a call and
// its caller alike).
func (h *harness) callAs(who string, caller peer.ID) {
	res := make(chan error, 1)
	h.mu.Lock()
	h.results[who] = res
	h.mu.Unlock()
	ctx := WithCaller(context.Background(), caller)
	go func() {
		_, err := h.p.Generate(ctx, Request{Model: "m", Prompt: who}, func(Chunk) error { return nil })
		res <- err
	}()
}

// TestOnePeerHoldsAtMostItsShareOfSlots: four slots, three for remote
// callers, one each (PerPeerSlots(4)). X's second and third calls wait while
// Y is served at once; when X's first ends, its second runs.
func TestOnePeerHoldsAtMostItsShareOfSlots(t *testing.T) {
	if got := PerPeerSlots(4); got != 1 {
		t.Fatalf("PerPeerSlots(4) = %d", got)
	}
	h := newHarness(t, PriorityConfig{Capacity: 4, PerPeer: PerPeerSlots(4)})
	h.callAs("X1", "X")
	h.expectStart("X1")
	for _, who := range []string{"X2", "X3"} {
		h.callAs(who, "X")
		select {
		case <-h.queued:
		case s := <-h.g.started:
			t.Fatalf("%s started while X holds its share", s)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: not queued", who)
		}
	}
	h.callAs("Y1", "Y")
	h.expectStart("Y1")
	h.running("local")
	if got := h.p.Waiting(); got != 2 {
		t.Fatalf("%d waiting, want X's two", got)
	}
	h.done("X1")
	h.expectStart("X2")
	h.done("X2")
	h.expectStart("X3")
	for _, who := range []string{"X3", "Y1", "local"} {
		h.done(who)
	}
}

func TestPerPeerSlotsLeavesOthersRoom(t *testing.T) {
	for _, tc := range []struct{ capacity, want int }{{1, 1}, {2, 1}, {3, 1}, {5, 2}, {9, 4}, {16, 7}} {
		if got := PerPeerSlots(tc.capacity); got != tc.want {
			t.Errorf("PerPeerSlots(%d) = %d, want %d", tc.capacity, got, tc.want)
		}
	}
}

// TestSimilarityComparesBoundedPrefixes: answers that agree on their first
// SimilarityWords words agree, whatever follows; two huge answers cost no
// more than two at the bound.
func TestSimilarityComparesBoundedPrefixes(t *testing.T) {
	words := func(w string, n int) string { return strings.TrimSpace(strings.Repeat(w+" ", n)) }
	head := words("same", SimilarityWords)
	if got := Similarity(head+" "+words("x", 1000), head+" "+words("y", 5)); got != 1 {
		t.Errorf("same first %d words: %v, want 1", SimilarityWords, got)
	}
	if got := Similarity(words("a", SimilarityWords/2)+" "+words("b", 2000), words("a", SimilarityWords/2)+" "+words("c", 2000)); got != 0.5 {
		t.Errorf("half the prefix shared: %v, want 0.5", got)
	}
	// A single word of more than SimilarityBytes is cut too.
	if got := Similarity(strings.Repeat("z", 10*SimilarityBytes), strings.Repeat("z", 10*SimilarityBytes)+"q"); got != 1 {
		t.Errorf("long words: %v", got)
	}
	huge := words("w", 200_000) // 400 KB; a whole-answer comparison would take 4e10 steps
	start := time.Now()
	Similarity(huge, words("v", 200_000))
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("comparing two 200,000-word answers took %s", d)
	}
	var b strings.Builder
	for range 100 {
		keepPrefix(&b, words("k", 1000))
	}
	if b.Len() != SimilarityBytes {
		t.Errorf("kept %d bytes of a collected answer, want %d", b.Len(), SimilarityBytes)
	}
}
