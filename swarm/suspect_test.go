package swarm

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/trust"
)

// frozenRemote is remote, but the peer frozen never answers: its call
// blocks until it is cancelled (as an infer stream reset is).
type frozenRemote struct {
	*remote
	frozen peer.ID
}

func (r frozenRemote) Call(ctx context.Context, id peer.ID, addrs []ma.Multiaddr, only bool, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	if id == r.frozen {
		<-ctx.Done()
		return inference.Final{}, ctx.Err()
	}
	return r.remote.Call(ctx, id, addrs, only, req, emit)
}

// TestSuspectIsRoutedAround: the routing choice of a suspect (its ping
// failed) is not asked while another expert can answer.
func TestSuspectIsRoutedAround(t *testing.T) {
	self, a, b := newID(t), newID(t), newID(t)
	rem := &remote{answer: map[peer.ID]func(func(inference.Chunk) error) (inference.Final, error){a: tokens(2), b: tokens(2)}}
	st := trust.New(trust.Config{})
	eb := entry(b, "m")
	eb.Load = 2 // a is the first choice
	r := New(Config{Self: self, Catalog: catalog{entry(a, "m"), eb}, Remote: rem, Trust: st, MaxK: 1})
	st.Suspect(a.String(), "ping failed")
	ans, err := r.Complete(context.Background(), query("m"), func(string, inference.Chunk) error { return nil })
	if err != nil || len(ans.Experts) != 1 || ans.Experts[0] != b.String() {
		t.Fatalf("answer %+v, %v: want b's", ans, err)
	}
	if len(rem.calls) != 1 {
		t.Fatalf("%d calls, want 1 (b only)", len(rem.calls))
	}
}

// TestLateExpertBecomesASuspect: an expert measured fast that sends nothing
// is hedged, the spare answers, and the late one is a suspect in the trust
// store, so the next prompt goes around it without waiting.
func TestLateExpertBecomesASuspect(t *testing.T) {
	self, a, b := newID(t), newID(t), newID(t)
	rem := frozenRemote{&remote{answer: map[peer.ID]func(func(inference.Chunk) error) (inference.Final, error){b: tokens(3)}}, a}
	st := trust.New(trust.Config{})
	st.Observe(a.String(), trust.Event{Kind: trust.Success, Model: "m", TTFT: 10 * time.Millisecond, Tokens: 10, Duration: 100 * time.Millisecond})
	eb := entry(b, "m")
	eb.Load = 2
	d := inference.DefaultDispatchConfig()
	d.HedgeFloor = 50 * time.Millisecond
	r := New(Config{Self: self, Catalog: catalog{entry(a, "m"), eb}, Remote: rem, Trust: st, MaxK: 1, Dispatch: d})
	start := time.Now()
	ans, err := r.Complete(context.Background(), query("m"), func(string, inference.Chunk) error { return nil })
	if err != nil || len(ans.Experts) != 1 || ans.Experts[0] != b.String() {
		t.Fatalf("answer %+v, %v: want b's", ans, err)
	}
	if took := time.Since(start); took > 4*time.Second { // the first-token floor is 5 s
		t.Fatalf("answer took %v", took)
	}
	if !st.Suspected(a.String()) {
		t.Fatalf("a is no suspect: %+v", st.Score(a.String()))
	}
	if p := r.pace(a.String(), "m"); p.TTFT != 10*time.Millisecond || p.Gap != 10*time.Millisecond {
		t.Fatalf("a's pace %+v", p)
	}
}
