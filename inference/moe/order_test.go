package moe

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/trust"
)

// Replica order, without a network: nearest first, weighed by calls in
// flight, and a host that failed recently after every healthy one.
func TestReplicaOrder(t *testing.T) {
	a, b, c := peer.ID("host-a"), peer.ID("host-b"), peer.ID("host-c")
	rtt := map[peer.ID]time.Duration{a: 10 * time.Millisecond, b: 5 * time.Millisecond, c: time.Millisecond}
	st := trust.New(trust.Config{})
	x := &Experts{Trust: st, RTT: func(p peer.ID) (time.Duration, bool) { d, ok := rtt[p]; return d, ok }}

	if got, want := x.order([]peer.ID{a, b, c}), []peer.ID{c, b, a}; !slices.Equal(got, want) {
		t.Fatalf("by RTT: %v, want %v", got, want)
	}
	// Five calls in flight to c make it cost 6 × 1.1 ms, more than b's 5.1 ms.
	for range 5 {
		x.begin(context.Background(), c)
	}
	if got, want := x.order([]peer.ID{a, b, c}), []peer.ID{b, c, a}; !slices.Equal(got, want) {
		t.Fatalf("with c loaded: %v, want %v", got, want)
	}
	for range 5 {
		x.end(c)
	}
	x.record(c, &expert.RemoteError{Status: expert.StatusFailed, Msg: "boom"})
	if got, want := x.order([]peer.ID{a, b, c}), []peer.ID{b, a, c}; !slices.Equal(got, want) {
		t.Fatalf("after c failed: %v, want %v", got, want)
	}
	if st.Score(c.String()).Failures == 0 {
		t.Fatal("the failure did not reach the trust store")
	}
	x.record(a, &expert.RemoteError{Status: expert.StatusBusy, Msg: "busy"})
	if sc := st.Score(a.String()); sc.Failures != 0 {
		t.Fatalf("busy is not a fault: %+v", sc)
	}
	// An unknown RTT counts as 50 ms.
	d := peer.ID("host-d")
	if got := x.order([]peer.ID{d, a}); got[0] != a {
		t.Fatalf("unknown RTT should rank after 10 ms: %v", got)
	}
}

// TestHostBeingSettledWithIsTriedLast: while the runner settles with a host,
// calls to it wait, so a replica that answers at once goes first.
func TestHostBeingSettledWithIsTriedLast(t *testing.T) {
	a, b := peer.ID("host-a"), peer.ID("host-b")
	rtt := map[peer.ID]time.Duration{a: 20 * time.Millisecond, b: time.Millisecond}
	x := &Experts{RTT: func(p peer.ID) (time.Duration, bool) { d, ok := rtt[p]; return d, ok }}
	resume, err := x.pause(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := x.order([]peer.ID{a, b}), []peer.ID{a, b}; !slices.Equal(got, want) {
		t.Fatalf("b paused: %v, want %v", got, want)
	}
	resume()
	if got, want := x.order([]peer.ID{a, b}), []peer.ID{b, a}; !slices.Equal(got, want) {
		t.Fatalf("b resumed: %v, want %v", got, want)
	}
}
