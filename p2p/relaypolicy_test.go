package p2p

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// fakeLinks is a network without a network: links per call, scripted.
type fakeLinks struct {
	mu       sync.Mutex
	links    []Link
	connect  func() ([]Link, error) // what Connect makes
	dials    int
	redials  int
	polls    int
	directAt int // after this many Links calls the link turns direct (0: never)
}

func (f *fakeLinks) Links(peer.ID) []Link {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls++
	if f.directAt > 0 && f.polls >= f.directAt {
		for i := range f.links {
			f.links[i].Direct = true
		}
	}
	return append([]Link(nil), f.links...)
}

func (f *fakeLinks) Connect(context.Context, peer.ID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials++
	if f.connect == nil {
		return errors.New("no route")
	}
	ls, err := f.connect()
	f.links = ls
	return err
}

func (f *fakeLinks) Reconnect(ctx context.Context, id peer.ID) error {
	f.mu.Lock()
	f.redials++
	f.mu.Unlock()
	return nil
}

const expert = peer.ID("expert")

func TestRelayPolicyDirectGoesAtOnce(t *testing.T) {
	f := &fakeLinks{links: []Link{{Direct: true, Opened: time.Now()}}}
	rp := &RelayPolicy{Links: f, Wait: time.Hour}
	ctx, relayed, err := rp.Prepare(context.Background(), expert, false)
	if err != nil || relayed || f.dials != 0 {
		t.Fatalf("err %v relayed %v dials %d", err, relayed, f.dials)
	}
	if ok, _ := network.GetAllowLimitedConn(ctx); ok {
		t.Fatal("a direct peer must not get a context that allows limited connections")
	}
}

func TestRelayPolicyDialsWhenNotConnected(t *testing.T) {
	f := &fakeLinks{connect: func() ([]Link, error) { return []Link{{Direct: true, Opened: time.Now()}}, nil }}
	rp := &RelayPolicy{Links: f, Wait: time.Hour}
	if _, _, err := rp.Prepare(context.Background(), expert, false); err != nil || f.dials != 1 {
		t.Fatalf("err %v dials %d", err, f.dials)
	}
	f = &fakeLinks{}
	rp = &RelayPolicy{Links: f, Wait: time.Hour}
	if _, _, err := rp.Prepare(context.Background(), expert, true); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("failed dial: err %v, want ErrUnreachable", err)
	}
}

func TestRelayPolicyOldRelayedConnectionStepsAsideWithoutWaiting(t *testing.T) {
	// Opened two hours ago with an hour to wait: DCUtR had its chance, so the
	// answer must come at once (a wait would hang this test for an hour).
	f := &fakeLinks{links: []Link{{Opened: time.Now().Add(-2 * time.Hour)}}}
	rp := &RelayPolicy{Links: f, Wait: time.Hour}
	if _, _, err := rp.Prepare(context.Background(), expert, false); !errors.Is(err, ErrRelayOnly) {
		t.Fatalf("err %v, want ErrRelayOnly", err)
	}
}

func TestRelayPolicyOnlyPeerUsesTheRelay(t *testing.T) {
	f := &fakeLinks{links: []Link{{Opened: time.Now().Add(-2 * time.Hour)}}}
	rp := &RelayPolicy{Links: f, Wait: time.Hour}
	ctx, relayed, err := rp.Prepare(context.Background(), expert, true)
	if err != nil || !relayed {
		t.Fatalf("err %v relayed %v", err, relayed)
	}
	if ok, _ := network.GetAllowLimitedConn(ctx); !ok {
		t.Fatal("the only peer's context must allow the limited (relayed) connection")
	}
}

func TestRelayPolicyWaitsForHolePunching(t *testing.T) {
	// A fresh relayed connection turns direct on the third look.
	f := &fakeLinks{links: []Link{{Opened: time.Now()}}, directAt: 3}
	rp := &RelayPolicy{Links: f, Wait: time.Hour, Poll: time.Millisecond}
	ctx, relayed, err := rp.Prepare(context.Background(), expert, false)
	if err != nil || relayed {
		t.Fatalf("err %v relayed %v", err, relayed)
	}
	if ok, _ := network.GetAllowLimitedConn(ctx); ok {
		t.Fatal("went direct: no limited connection needed")
	}
}

func TestRelayPolicyWaitEndsWithTheCaller(t *testing.T) {
	f := &fakeLinks{links: []Link{{Opened: time.Now()}}}
	rp := &RelayPolicy{Links: f, Wait: time.Hour, Poll: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			f.mu.Lock()
			n := f.polls
			f.mu.Unlock()
			if n >= 2 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if _, _, err := rp.Prepare(ctx, expert, true); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

func TestRelayPolicyReconnectsOnceWhenHolePunchingIsLate(t *testing.T) {
	// A fresh relayed connection that never turns direct: half way through
	// the wait the policy replaces it once, so the other side punches again.
	f := &fakeLinks{links: []Link{{Opened: time.Now()}}}
	rp := &RelayPolicy{Links: f, Wait: 40 * time.Millisecond, Poll: time.Millisecond}
	if _, _, err := rp.Prepare(context.Background(), expert, false); !errors.Is(err, ErrRelayOnly) {
		t.Fatalf("err %v, want ErrRelayOnly", err)
	}
	if f.redials != 1 {
		t.Fatalf("%d reconnects, want 1", f.redials)
	}
	// The peer had its second chance: work for it now neither waits nor
	// reconnects again, though its relayed connection is young.
	f.links = []Link{{Opened: time.Now()}}
	rp.Wait = time.Hour
	if _, _, err := rp.Prepare(context.Background(), expert, false); !errors.Is(err, ErrRelayOnly) || f.redials != 1 {
		t.Fatalf("after the second chance: err %v, %d reconnects", err, f.redials)
	}
}
