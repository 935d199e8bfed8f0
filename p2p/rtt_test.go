package p2p

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/internal/wait"
)

func loopbackHost(t *testing.T, opts ...libp2p.Option) host.Host {
	t.Helper()
	h, err := libp2p.New(append([]libp2p.Option{libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), muxer()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestPeerThatFailsPingsIsCutOff: a connected peer that answers no ping (a
// frozen one answers nothing; this one lacks the ping protocol) is reported
// at each failure, and its connection is closed after CloseAfter of them.
func TestPeerThatFailsPingsIsCutOff(t *testing.T) {
	a := loopbackHost(t)
	mute := loopbackHost(t, libp2p.Ping(false))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: mute.ID(), Addrs: mute.Addrs()}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	failed := 0
	p := NewPinger(a, PingerConfig{Timeout: 2 * time.Second, CloseAfter: 2, OnFailure: func(id peer.ID, err error) {
		mu.Lock()
		defer mu.Unlock()
		if id == mute.ID() {
			failed++
		}
	}})
	p.Round(ctx)
	if a.Network().Connectedness(mute.ID()) != network.Connected {
		t.Fatal("closed after one failed ping")
	}
	p.Round(ctx)
	wait.For(t, 5*time.Second, "the connection is closed", func() error {
		if a.Network().Connectedness(mute.ID()) == network.Connected {
			return context.DeadlineExceeded
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if failed != 2 {
		t.Fatalf("%d failures reported, want 2", failed)
	}
}

// TestSuspectsAreProbedWithoutAConnection: a peer listed by Probe is dialed
// and pinged even though it is not connected, so a peer that comes back is
// heard of.
func TestSuspectsAreProbedWithoutAConnection(t *testing.T) {
	a, b := loopbackHost(t), loopbackHost(t)
	a.Peerstore().AddAddrs(b.ID(), b.Addrs(), time.Minute)
	p := NewPinger(a, PingerConfig{Probe: func() []peer.ID { return []peer.ID{b.ID(), a.ID()} }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.Round(ctx)
	if _, ok := p.RTT(b.ID()); !ok {
		t.Fatal("the probed peer was not measured")
	}
}
