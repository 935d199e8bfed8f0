package swarm

import (
	"math"
	"sync"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/p2p"
	"github.com/mwpeer/mwpeer/routing"
)

// Measured beats reported: what a candidate announces of itself (capacity,
// load, domains, location, addresses) is a claim; what this peer measured
// (pings, the timings of its own calls, failures, busy answers) is not.
// claims.go turns both into routing inputs, each labelled with its source.

// BusyMemory is how long a peer that answered busy loses the benefit of the
// free capacity it announces: its load counts as its capacity (no free slot,
// and the overload penalty), whatever it says, until BusyMemory after its
// last busy answer. A minute is a few announcement intervals: long enough
// that a peer announcing free slots it does not have is not asked first
// again on the next prompt, short enough that one busy moment is forgotten.
const BusyMemory = time.Minute

// maxBusy bounds the busy answers remembered.
const maxBusy = 4096

// busyLog remembers when peers last answered busy. It is safe for
// concurrent use.
type busyLog struct {
	mu  sync.Mutex
	at  map[string]time.Time
	now func() time.Time
}

func newBusyLog(now func() time.Time) *busyLog {
	if now == nil {
		now = time.Now
	}
	return &busyLog{at: make(map[string]time.Time), now: now}
}

// mark records that peer answered busy now.
func (b *busyLog) mark(peer string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if _, ok := b.at[peer]; !ok && len(b.at) >= maxBusy {
		var oldest string
		for id, t := range b.at {
			if now.Sub(t) > BusyMemory {
				delete(b.at, id)
			} else if oldest == "" || t.Before(b.at[oldest]) {
				oldest = id
			}
		}
		if len(b.at) >= maxBusy {
			delete(b.at, oldest)
		}
	}
	b.at[peer] = now
}

// recent reports whether peer answered busy within BusyMemory.
func (b *busyLog) recent(peer string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.at[peer]
	return ok && b.now().Sub(t) <= BusyMemory
}

// reportedSpeed fills in, where this peer measured nothing, the speed the
// candidate announces of its own engine serving m, labelled reported: a
// peer that says it is slow is not taken for a typical one before it was
// tried, and one that says it is fast is tried, then judged by what this
// peer measures. The reported time to a first token and decode rate are
// kept next to measured ones (routing counts them only against a
// measurement of fewer than three calls).
func reportedSpeed(c *routing.Candidate, m experts.Model) {
	if m.TTFTMs > 0 {
		c.ReportedTTFT = time.Duration(m.TTFTMs * float64(time.Millisecond))
		if c.TTFT == 0 {
			c.Sources.TTFT = routing.SourceReported
		}
	}
	if m.TPS > 0 && !math.IsInf(m.TPS, 0) {
		c.ReportedTPS = m.TPS
	}
	if c.DecodeTPS == 0 && m.TPS > 0 {
		c.DecodeTPS = m.TPS
		c.Sources.DecodeTPS = routing.SourceReported
	}
}

// vet finishes a candidate built from what it claims and what the trust
// store measured: it caps the claims, replaces a free-capacity claim that a
// recent busy answer belies, names the network prefix it is reached in, and
// labels every input with its source.
func (r *Router) vet(c *routing.Candidate, addrs []ma.Multiaddr) {
	c.Sources.TTFT, c.Sources.DecodeTPS = measuredIf(c.TTFT > 0), measuredIf(c.DecodeTPS > 0)
	c.Sources.Failures = routing.SourceMeasured
	if c.Local {
		c.Sources.RTT, c.Sources.Capacity, c.Sources.Load = routing.SourceLocal, routing.SourceLocal, routing.SourceLocal
		c.Sources.Domains, c.Sources.Distance = routing.SourceLocal, routing.SourceLocal
		return
	}
	if !c.RTTKnown {
		c.Sources.RTT = routing.SourceUnknown
	}
	c.Capacity = min(max(c.Capacity, 1), routing.MaxCapacity)
	c.Load = min(max(c.Load, 0), routing.MaxLoad)
	c.Sources.Capacity, c.Sources.Load, c.Sources.Domains = routing.SourceReported, routing.SourceReported, routing.SourceReported
	if r.busy.recent(c.Peer) && c.Load < c.Capacity {
		c.Load, c.Sources.Load = c.Capacity, routing.SourceMeasured
	}
	c.Sources.Distance = routing.SourceUnknown
	if c.DistanceKm >= 0 {
		c.Sources.Distance = routing.SourceReported // from the location it announces
	}
	c.Prefix = r.prefix(c.Peer, addrs)
}

func measuredIf(ok bool) string {
	if ok {
		return routing.SourceMeasured
	}
	return routing.SourceUnknown
}

// prefix is the network prefix peer is reached in (see p2p.Prefix): that of
// a live connection to it (Config.ConnPrefix), which it cannot fake, else
// that of the first public address it announces, else of the first
// address with a prefix at all; "" when none has one.
func (r *Router) prefix(peer string, addrs []ma.Multiaddr) string {
	if r.cfg.ConnPrefix != nil {
		if p := r.cfg.ConnPrefix(peer); p != "" {
			return p
		}
	}
	first := ""
	for _, a := range addrs {
		p := p2p.Prefix(a)
		if p == "" {
			continue
		}
		if !p2p.IsLocal(a) && !p2p.IsRelayed(a) {
			return p
		}
		if first == "" {
			first = p
		}
	}
	return first
}
