package mwpeer

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/experts/catchup"
)

// These benchmarks measure the swarm itself (the synthetic engine, real
// libp2p hosts on loopback, one process). Run them with
//
//	go test -run '^$' -bench Swarm -benchtime 1x .
//
// and read the reported metrics.

// BenchmarkSwarmJoin is the time a new peer takes to see 95% of a 50-peer swarm.
func BenchmarkSwarmJoin(b *testing.B) {
	const n = 50
	peers := startSwarm(b, n, defaultIntervals)
	waitConverged(b, peers, 90*time.Second)
	b.ResetTimer()
	var total time.Duration
	var worst time.Duration
	for i := 0; i < b.N; i++ {
		cfg := testConfig(b)
		defaultIntervals(0, &cfg)
		cfg.Bootstrap = []string{peers[i%n].Addrs()[0].String()}
		start := time.Now()
		p, err := Start(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		for p.Catalog.Len() < n*95/100 {
			if time.Since(start) > 30*time.Second {
				b.Fatalf("new peer saw only %d of %d after 30s", p.Catalog.Len(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(start)
		total += took
		worst = max(worst, took)
		b.StopTimer()
		p.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-95%")
	b.ReportMetric(float64(worst.Milliseconds()), "worst-ms")
}

// BenchmarkSwarmForget is the time for a crashed peer to leave every
// catalog of a 50-peer swarm, with the default 5 s announce interval.
func BenchmarkSwarmForget(b *testing.B) {
	const n = 50
	peers := startSwarm(b, n, defaultIntervals)
	waitConverged(b, peers, 90*time.Second)
	b.ResetTimer()
	var total, worst time.Duration
	for i := 0; i < b.N && i < n-1; i++ {
		victim := peers[n-1-i]
		start := time.Now()
		victim.crash()
		gone := map[string]bool{victim.ID().String(): true}
		for absentEverywhere(peers[:n-1-i], gone) != nil {
			if time.Since(start) > time.Minute {
				b.Fatal("dead peer still listed after a minute")
			}
			time.Sleep(20 * time.Millisecond)
		}
		took := time.Since(start)
		total += took
		worst = max(worst, took)
	}
	b.ReportMetric(total.Seconds()/float64(min(b.N, n-1)), "s-to-forget")
	b.ReportMetric(worst.Seconds(), "worst-s")
}

// BenchmarkSwarmGossipBytes measures the GossipSub bytes each peer receives
// per second in a steady swarm of 10, 50 and 100 peers, default intervals.
func BenchmarkSwarmGossipBytes(b *testing.B) {
	for _, n := range []int{10, 50, 100} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			peers := startSwarm(b, n, defaultIntervals)
			waitConverged(b, peers, 150*time.Second)
			time.Sleep(5 * time.Second) // let join-time traffic pass
			window := 20 * time.Second
			before := gossipIn(peers)
			time.Sleep(window)
			after := gossipIn(peers)
			var rates []float64
			for i := range peers {
				rates = append(rates, float64(after[i]-before[i])/window.Seconds())
			}
			sort.Float64s(rates)
			var sum float64
			for _, r := range rates {
				sum += r
			}
			b.ReportMetric(sum/float64(n), "B/s/peer")
			b.ReportMetric(rates[len(rates)/2], "p50-B/s")
			b.ReportMetric(rates[len(rates)-1], "max-B/s")
			b.ReportMetric(peers[1].Gossip.Interval().Seconds(), "interval-s")
		})
	}
}

// defaultIntervals sets the production announce and ping intervals (testConfig
// slows them under the race detector).
func defaultIntervals(_ int, c *Config) {
	d := DefaultConfig()
	c.AnnounceMin, c.Ping = d.AnnounceMin, d.Ping
}

func gossipIn(peers []*Peer) []int64 {
	out := make([]int64, len(peers))
	for i, p := range peers {
		for proto, st := range p.Host.Bandwidth.GetBandwidthByProtocol() {
			if strings.HasPrefix(string(proto), "/meshsub/") || proto == catchup.ID {
				out[i] += st.TotalIn
			}
		}
	}
	return out
}

func waitConverged(b *testing.B, peers []*Peer, within time.Duration) {
	b.Helper()
	start := time.Now()
	for {
		err := catalogsHoldAll(peers, nil)
		if err == nil {
			return
		}
		if time.Since(start) > within {
			b.Fatalf("swarm of %d did not converge in %s: %v", len(peers), within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
