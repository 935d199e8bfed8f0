package catchup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/internal/p2ptest"
)

// source hands out n numbered envelopes, or those of the peers asked for.
type source struct{ n int }

func (s source) Envelopes(max int) [][]byte {
	var out [][]byte
	for i := range min(s.n, max) {
		out = append(out, []byte(fmt.Sprintf("env-%d", i)))
	}
	return out
}

func (s source) EnvelopesOf(ids []string) [][]byte {
	var out [][]byte
	for _, id := range ids {
		out = append(out, []byte("env-of-"+id))
	}
	return out
}

func strs(envs [][]byte) []string {
	out := make([]string, len(envs))
	for i, e := range envs {
		out[i] = string(e)
	}
	return out
}

// TestFetchGetsWhatTheSourceGives: a request for everything gets the
// source's envelopes, a targeted one those of the peers named, and Admit
// hears who asked for what before anything is sent.
func TestFetchGetsWhatTheSourceGives(t *testing.T) {
	srv, cl := p2ptest.NewHost(t), p2ptest.NewHost(t)
	p2ptest.Connect(t, cl, srv)
	var mu sync.Mutex
	var asked [][]string
	svc := NewService(srv, source{n: 3}, ServiceConfig{Admit: func(caller peer.ID, wanted []string) error {
		if caller != cl.ID() {
			t.Errorf("admit for %s, want %s", caller, cl.ID())
		}
		mu.Lock()
		asked = append(asked, wanted)
		mu.Unlock()
		return nil
	}})
	t.Cleanup(func() { svc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	envs, err := Fetch(ctx, cl, srv.ID(), nil, 0)
	if err != nil || !slices.Equal(strs(envs), []string{"env-0", "env-1", "env-2"}) {
		t.Fatalf("everything: %q (%v)", strs(envs), err)
	}
	envs, err = Fetch(ctx, cl, srv.ID(), []string{"a", "b"}, 0)
	if err != nil || !slices.Equal(strs(envs), []string{"env-of-a", "env-of-b"}) {
		t.Fatalf("targeted: %q (%v)", strs(envs), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 || asked[0] != nil || !slices.Equal(asked[1], []string{"a", "b"}) {
		t.Fatalf("admit asked %q", asked)
	}
}

// TestFetchKeepsItsBounds: a responder that sends more than a full and a
// beat per peer of max, and its own, is cut off; a request naming more than
// MaxWanted peers never leaves; a refused requester gets an error.
func TestFetchKeepsItsBounds(t *testing.T) {
	srv, cl := p2ptest.NewHost(t), p2ptest.NewHost(t)
	p2ptest.Connect(t, cl, srv)
	var refuse atomic.Bool
	svc := NewService(srv, source{n: 100}, ServiceConfig{Admit: func(peer.ID, []string) error {
		if refuse.Load() {
			return errors.New("too soon")
		}
		return nil
	}})
	t.Cleanup(func() { svc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	envs, err := Fetch(ctx, cl, srv.ID(), nil, 3)
	if err != nil || len(envs) != 2*3+2 {
		t.Fatalf("max 3: %d envelopes (%v), want %d", len(envs), err, 2*3+2)
	}
	if _, err := Fetch(ctx, cl, srv.ID(), make([]string, MaxWanted+1), 0); err == nil {
		t.Fatal("a request for too many peers was sent")
	}
	refuse.Store(true)
	if envs, err := Fetch(ctx, cl, srv.ID(), nil, 0); err == nil || len(envs) != 0 {
		t.Fatalf("refused: %d envelopes (%v), want an error", len(envs), err)
	}
}
