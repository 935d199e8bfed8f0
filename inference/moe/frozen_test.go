package moe

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/trust"
)

// TestFrozenHostCostsOneDeadline: a host that stops answering mid-generation
// (frozen: its connection stays up, its streams never answer) costs about
// one call deadline for the whole answer, not one per token: its first
// timeout makes it a suspect, and the replicas answer the rest. Backoff is
// made negligible here, so only the suspicion keeps the frozen host out.
func TestFrozenHostCostsOneDeadline(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	want, err := generate(t, m, nil, 32, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newSwarm(t, m, 3, replicated(3, c.Experts))
	x := s.experts(t)
	x.CallTimeout = 30 * time.Second // unmeasured hosts: never reached here
	x.CallFloor = 500 * time.Millisecond
	x.Trust = trust.New(trust.Config{Cooldown: time.Millisecond})
	var stuck atomic.Int64
	var frozeAt time.Time
	got, err := generate(t, m, x, 32, func(n int) {
		if n == 8 {
			frozeAt = time.Now()
			s.servers[0].Close() // its pooled streams end; new ones freeze
			s.hosts[0].SetStreamHandler(expert.ID, func(st network.Stream) {
				stuck.Add(1)
				buf := make([]byte, 1)
				for { // read until the caller resets the stream; never answer
					if _, err := st.Read(buf); err != nil {
						st.Reset()
						return
					}
				}
			})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	same(t, got, want)
	took := time.Since(frozeAt)
	if !x.Trust.Suspected(s.hosts[0].ID().String()) {
		t.Fatalf("the frozen host is no suspect: %+v", x.Trust.Score(s.hosts[0].ID().String()))
	}
	// Each of the 24 tokens left makes about 3 layers x 2 experts of calls,
	// a third of them to host 0 first: waiting a deadline for each would
	// take over 10 s even at the floor.
	if n := stuck.Load(); n == 0 || n > 6 {
		t.Fatalf("%d calls reached the frozen host, want a few at most", n)
	}
	if took > 15*time.Second {
		t.Fatalf("the rest of the answer took %v", took)
	}
	t.Logf("after the freeze: %d calls stuck, the rest of the answer took %v", stuck.Load(), took)
}
