package swarm

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/routing"
)

// Probing. The pinger measures the peers this peer is connected to; a
// server it never talked to is ranked by a prediction (network coordinates,
// then distance), and a prediction can be far off for one pair even when
// the coordinates are good on the whole, or come from a lying location.
// So every routing decision asks Latency.Probe to measure the best-ranked
// candidates that are not measured yet: a dial and a ping in the
// background, at most probeWorkers at a time, each peer at most once per
// probeAgain. The prompt that asked is not delayed; the next one ranks
// those peers by a measurement, and the connections stay pinged.
const (
	// ProbeTop is how many of the best-ranked unmeasured candidates a
	// decision asks to measure.
	ProbeTop     = 4
	probeWorkers = 4
	probeQueue   = 64
	probeAgain   = time.Minute
	// probeMemory bounds the peers remembered as recently probed.
	probeMemory = 4096
)

// prober is Latency's queue of peers to measure. Its zero value is ready.
type prober struct {
	once sync.Once
	want chan peer.AddrInfo
	mu   sync.Mutex
	last map[peer.ID]time.Time // when each was last queued
}

func (p *prober) queue() chan peer.AddrInfo {
	p.once.Do(func() {
		p.want = make(chan peer.AddrInfo, probeQueue)
		p.last = make(map[peer.ID]time.Time)
	})
	return p.want
}

// Probe asks to measure the round trip to each of peers (dialing the
// addresses given, or those known) that this peer has not measured and did
// not probe within the last minute. It does not block: the probes run in
// Run's goroutines, and a full queue drops the rest.
func (l *Latency) Probe(peers []peer.AddrInfo) {
	q := l.probes.queue()
	now := time.Now()
	for _, ai := range peers {
		id := ai.ID
		if id == "" || id.String() == l.self {
			continue
		}
		if _, ok := l.pinger.RTT(id); ok {
			continue
		}
		l.probes.mu.Lock()
		if t, ok := l.probes.last[id]; ok && now.Sub(t) < probeAgain {
			l.probes.mu.Unlock()
			continue
		}
		if len(l.probes.last) >= probeMemory {
			for k, t := range l.probes.last {
				if now.Sub(t) >= probeAgain {
					delete(l.probes.last, k)
				}
			}
		}
		if len(l.probes.last) >= probeMemory {
			l.probes.mu.Unlock()
			return
		}
		l.probes.last[id] = now
		l.probes.mu.Unlock()
		select {
		case q <- ai:
		default:
			return
		}
	}
}

// runProbes measures the queued peers until ctx ends.
func (l *Latency) runProbes(ctx context.Context) {
	q := l.probes.queue()
	sem := make(chan struct{}, probeWorkers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var ai peer.AddrInfo
		select {
		case <-ctx.Done():
			return
		case ai = <-q:
		}
		select {
		case <-ctx.Done():
			return
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := l.pinger.Measure(ctx, ai.ID, ai.Addrs...); err != nil && ctx.Err() == nil {
				l.log.Debug("probe", "peer", ai.ID.ShortString(), "err", err)
			}
		}()
	}
}

// unmeasured lists up to n of ranked (best first) that are remote and
// ranked by a predicted or unknown round trip, with the addresses cands
// give them: the n-1 best-ranked, and the nearest by the location it
// announces, else the n-th best-ranked. A coordinate can be far off for
// one pair (in the latency-shaped world, a server 10 ms away predicted at
// 153 ms ranked fourth and was never probed); its location, a claim but
// one a ping checks, catches it.
func unmeasured(ranked []routing.Scored, cands []Candidate, n int) []peer.AddrInfo {
	if n <= 0 {
		return nil
	}
	var picked []int
	nearest := -1
	for i, s := range ranked {
		if s.Local || s.Sources.RTT == routing.SourceMeasured {
			continue
		}
		if len(picked) < n-1 {
			picked = append(picked, i)
		} else if s.DistanceKm >= 0 && (nearest < 0 || s.DistanceKm < ranked[nearest].DistanceKm) {
			nearest = i
		}
	}
	if nearest < 0 {
		// Nobody left announces a location: the next best-ranked.
		for i, s := range ranked {
			if len(picked) > 0 && i <= picked[len(picked)-1] || s.Local || s.Sources.RTT == routing.SourceMeasured {
				continue
			}
			nearest = i
			break
		}
	}
	if nearest >= 0 {
		picked = append(picked, nearest)
	}
	var out []peer.AddrInfo
	for _, i := range picked {
		id, err := peer.Decode(ranked[i].Peer)
		if err != nil {
			continue
		}
		ai := peer.AddrInfo{ID: id}
		for _, c := range cands {
			if c.Peer == ranked[i].Peer {
				ai.Addrs = c.Addrs
				break
			}
		}
		out = append(out, ai)
	}
	return out
}
