package swarm

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"

	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// TestEarlySamplingExploresAndAnnouncesDrift: a new peer (error estimate
// above geo.EarlyError) connected to one other dials and measures a peer
// it only heard of, and asks to announce its coordinate once it drifted
// geo.CoordinateDrift from the one it announced; its regular rounds (a
// minute apart here) would do neither within the test.
func TestEarlySamplingExploresAndAnnouncesDrift(t *testing.T) {
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	var hosts []host.Host
	for range 3 {
		h, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		ping.NewPingService(h)
		hosts = append(hosts, h)
	}
	mn.SetLinkDefaults(mocknet.LinkOptions{Latency: 15 * time.Millisecond})
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	a, b, c := hosts[0], hosts[1], hosts[2]
	if _, err := mn.ConnectPeers(a.ID(), b.ID()); err != nil {
		t.Fatal(err)
	}
	// The others' coordinates are the untrained origin, as a new swarm's.
	origin := coordinate.NewCoordinate(coordinate.DefaultConfig())
	lat := NewLatency(a, time.Minute, nil, func(string) *coordinate.Coordinate { return origin }, slog.New(slog.DiscardHandler))
	var drifts atomic.Int32
	lat.OnDrift(func() { drifts.Add(1) }, func() time.Duration { return 0 })
	lat.Own(0) // the first announcement
	e := entry(c.ID(), "m")
	for _, addr := range c.Addrs() {
		e.Addrs = append(e.Addrs, fmt.Sprintf("%s/p2p/%s", addr, c.ID()))
	}
	lat.Heard(e)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = lat.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	wait.For(t, 20*time.Second, "the peer only heard of is measured", func() error {
		if !lat.Measured(c.ID()) {
			return fmt.Errorf("not measured; connectedness %v", a.Network().Connectedness(c.ID()))
		}
		return nil
	})
	wait.For(t, 20*time.Second, "the drifted coordinate is announced", func() error {
		if drifts.Load() == 0 {
			return fmt.Errorf("no drift reported; coordinate %+v", lat.vivaldi.GetCoordinate())
		}
		return nil
	})
	if lat.vivaldi.GetCoordinate().Error <= geo.EarlyError {
		t.Logf("error estimate %.2f: early sampling over", lat.vivaldi.GetCoordinate().Error)
	}
	if a.Network().Connectedness(c.ID()) != network.Connected {
		t.Errorf("the explored peer's connection did not stay: %v", a.Network().Connectedness(c.ID()))
	}
}
