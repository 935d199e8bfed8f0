package moe

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama"
)

// ErrNoHost is wrapped when no peer could run an expert: none hosts it, or
// every host failed. It wraps inference.ErrNoExpert, so the API answers 503.
var ErrNoHost = fmt.Errorf("no live host for an expert: %w", inference.ErrNoExpert)

// Experts runs the experts of one model for a forward pass (it implements
// llama.Experts): in this process when Local holds the expert, otherwise on
// the best remote host, failing over to the next on error or timeout.
type Experts struct {
	Model  ModelKey
	Local  *Server // this peer's hosted experts (may be nil)
	Client *Client
	// Hosts returns the remote peers believed to host (layer, expert).
	Hosts func(layer, expert int) []peer.ID
	// RTT estimates the round trip to a peer (ok false: unknown). Hosts are
	// tried nearest first, each weighed by the calls this model already has
	// in flight to it, so replicas share the load.
	RTT func(peer.ID) (time.Duration, bool)
	// CallTimeout bounds one call to one host (0: 5 s).
	CallTimeout time.Duration
	// Cooldown is how long a host that failed is tried only after the others
	// (0: 15 s); it doubles with each failure in a row, up to 16 times.
	Cooldown time.Duration

	mu       sync.Mutex
	failed   map[peer.ID]failure
	inflight map[peer.ID]int

	// LocalCalls, RemoteCalls and Failovers count Apply's work.
	LocalCalls, RemoteCalls, Failovers atomic.Uint64
}

var _ llama.Experts = (*Experts)(nil)

// Apply runs expert (layer, expert) on in, into out.
func (x *Experts) Apply(ctx context.Context, layer, expert int, in, out [][]float32) error {
	if x.Local != nil {
		if e := x.Local.Get(x.Model, layer, expert); e != nil {
			x.LocalCalls.Add(1)
			return e.Apply(in, out)
		}
	}
	var hosts []peer.ID
	if x.Hosts != nil {
		hosts = x.order(x.Hosts(layer, expert))
	}
	if len(hosts) == 0 {
		return fmt.Errorf("%w (layer %d expert %d: no peer hosts it)", ErrNoHost, layer, expert)
	}
	timeout := x.CallTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	var errs []error
	for i, p := range hosts {
		if i > 0 {
			x.Failovers.Add(1)
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		x.begin(p)
		err := x.Client.Call(cctx, p, x.Model, layer, expert, in, out)
		cancel()
		if ctx.Err() != nil { // the caller gave up: not the host's fault
			x.end(p, nil)
			return ctx.Err()
		}
		x.end(p, err)
		if err == nil {
			x.RemoteCalls.Add(1)
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", p.ShortString(), err))
	}
	return fmt.Errorf("%w (layer %d expert %d: %d hosts failed: %w)", ErrNoHost, layer, expert, len(hosts), errors.Join(errs...))
}

// order sorts hosts: healthy before recently failed, then by RTT weighed by
// calls in flight; unknown RTTs count as 50 ms.
func (x *Experts) order(hosts []peer.ID) []peer.ID {
	cool := x.Cooldown
	if cool <= 0 {
		cool = 15 * time.Second
	}
	type ranked struct {
		p      peer.ID
		failed bool
		cost   float64
	}
	now := time.Now()
	rs := make([]ranked, 0, len(hosts))
	x.mu.Lock()
	for _, p := range hosts {
		rtt := 50 * time.Millisecond
		if x.RTT != nil {
			if d, ok := x.RTT(p); ok {
				rtt = d
			}
		}
		f, bad := x.failed[p]
		bad = bad && now.Sub(f.at) < cool<<min(f.n-1, 4)
		rs = append(rs, ranked{p, bad, float64(rtt+100*time.Microsecond) * float64(1+x.inflight[p])})
	}
	x.mu.Unlock()
	slices.SortStableFunc(rs, func(a, b ranked) int {
		if a.failed != b.failed {
			if a.failed {
				return 1
			}
			return -1
		}
		switch {
		case a.cost < b.cost:
			return -1
		case a.cost > b.cost:
			return 1
		}
		return 0
	})
	out := hosts[:0:0]
	for _, r := range rs {
		out = append(out, r.p)
	}
	return out
}

func (x *Experts) begin(p peer.ID) {
	x.mu.Lock()
	if x.inflight == nil {
		x.inflight = make(map[peer.ID]int)
	}
	x.inflight[p]++
	x.mu.Unlock()
}

func (x *Experts) end(p peer.ID, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.inflight[p]--; x.inflight[p] <= 0 {
		delete(x.inflight, p)
	}
	if err == nil {
		delete(x.failed, p)
		return
	}
	if x.failed == nil {
		x.failed = make(map[peer.ID]failure)
	}
	f := x.failed[p]
	x.failed[p] = failure{at: time.Now(), n: f.n + 1}
}

// failure is a host's latest failure and how many came in a row.
type failure struct {
	at time.Time
	n  int
}
