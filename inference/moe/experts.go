package moe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/tally"
	"github.com/mwpeer/mwpeer/trust"
)

// ErrNoHost is wrapped when no peer could run an expert: none hosts it, or
// every host failed. It wraps inference.ErrNoExpert, so the API answers 503.
var ErrNoHost = fmt.Errorf("no live host for an expert: %w", inference.ErrNoExpert)

// Experts runs the experts of one model for a forward pass (it implements
// llama.Experts): in this process when Local holds the expert, otherwise on
// the best remote host, failing over to the next on error or timeout.
type Experts struct {
	Model  expert.ModelKey
	Local  *expert.Server // this peer's hosted experts (may be nil)
	Client *expert.Client
	// Hosts returns the remote peers believed to host (layer, expert).
	Hosts func(layer, expert int) []peer.ID
	// RTT estimates the round trip to a peer (ok false: unknown). Hosts are
	// tried nearest first, each weighed by the calls this model already has
	// in flight to it, so replicas share the load.
	RTT func(peer.ID) (time.Duration, bool)
	// CallTimeout bounds one call to one host (0: 5 s). A host whose calls
	// were timed gets less: CallFactor times its usual call (an EWMA of its
	// answers' round trips), at least CallFloor (0: 1 s), at most
	// CallTimeout, so a frozen host costs about a second. A host that times
	// out is a suspect in the trust store (trust.Store.Suspect), tried after
	// every other replica until it answers a ping or a call: for the rest
	// of an answer, not once per token.
	CallTimeout time.Duration
	CallFloor   time.Duration
	// Trust is the peer's memory of other peers: every call's outcome is
	// recorded there, and a host that failed recently is tried only after
	// the others (its backoff doubles with each failure in a row). Nil: a
	// store private to this Experts.
	Trust *trust.Store
	// FeedForward is the hidden size of the model's experts; it turns the
	// values Client.Meter counted into a tally's flops.
	FeedForward int
	// Payer settles this model's calls with each host (Settle). Nil: they
	// are counted in Client.Meter and never settled.
	Payer *tally.Payer
	// Verify is the share of remote calls that are spot-checked (0: none;
	// the swarm's default is DefaultVerify): see checked.
	Verify float64
	// Kernels names the kernel set a host computes its experts with, as it
	// announces it (llama.Kernels: "avx2", "neon", "generic"; "" for a
	// peer that predates the field). A spot-check compares only hosts of
	// one set, whose honest answers agree bit for bit (see checked). Nil:
	// every host computes with the same set.
	Kernels func(peer.ID) string
	// OnBadHost, if set, hears of each host caught answering wrongly, once
	// per offence (trust.Store.Convict), with the reason in words. The
	// audit chain plugs in here.
	OnBadHost func(host peer.ID, model, reason string)
	// Log hears of hosts caught answering wrongly (nil: slog.Default).
	Log *slog.Logger

	mu       sync.Mutex
	usual    map[peer.ID]*geo.EWMA // round trips of answered calls
	inflight map[peer.ID]int
	paused   map[peer.ID]chan struct{} // hosts being settled with: closed when done
	idle     map[peer.ID]chan struct{} // closed when a paused host's last call ends

	// LocalCalls, RemoteCalls and Failovers count Apply's work.
	LocalCalls, RemoteCalls, Failovers atomic.Uint64
	// Checks counts spot-checks made (two replicas answered and were
	// compared), Caught the hosts convicted of a wrong answer (outvoted or
	// not finite), Undecided the spot-checks where no two replicas agreed,
	// Unpaired the calls sampled for a check that went unchecked because
	// no other replica announces the first one's kernel set.
	Checks, Caught, Undecided, Unpaired atomic.Uint64
}

var _ llama.Experts = (*Experts)(nil)

// pausedCost is added to the cost of a host while this model settles with
// it: a call to it waits for the settlement (a round trip, at most the
// Payer's timeout), so a replica that answers at once is worth more unless
// it is that much farther.
const pausedCost = time.Second

// Apply runs expert (layer, expert) on in, into out. A share Verify of the
// remote calls is spot-checked (checked); the others go to the first host
// in replica order, failing over to the next.
func (x *Experts) Apply(ctx context.Context, layer, expert int, in, out [][]float32) error {
	if x.Local != nil {
		if e := x.Local.Get(x.Model, layer, expert); e != nil {
			x.LocalCalls.Add(1)
			return e.Apply(in, out)
		}
	}
	var hosts []peer.ID
	excluded := 0
	if x.Hosts != nil {
		all := x.Hosts(layer, expert)
		hosts = x.order(all)
		excluded = len(all) - len(hosts)
	}
	if len(hosts) == 0 {
		if excluded > 0 {
			return fmt.Errorf("%w (layer %d expert %d: its %d hosts are excluded for wrong answers)", ErrNoHost, layer, expert, excluded)
		}
		return fmt.Errorf("%w (layer %d expert %d: no peer hosts it)", ErrNoHost, layer, expert)
	}
	if len(hosts) >= 2 && x.Verify > 0 && rand.Float64() < x.Verify {
		if peers := x.sameKernels(hosts); len(peers) >= 2 {
			return x.checked(ctx, layer, expert, hosts, peers, in, out)
		}
		x.Unpaired.Add(1)
	}
	return x.first(ctx, layer, expert, hosts, in, out, nil)
}

// sameKernels returns the hosts (in replica order) that announce the
// kernel set of hosts[0], hosts[0] first.
func (x *Experts) sameKernels(hosts []peer.ID) []peer.ID {
	if x.Kernels == nil {
		return hosts
	}
	k := x.Kernels(hosts[0])
	var same []peer.ID
	for _, p := range hosts {
		if x.Kernels(p) == k {
			same = append(same, p)
		}
	}
	return same
}

// first asks hosts in turn until one answers; errs are the failures met
// before.
func (x *Experts) first(ctx context.Context, layer, expert int, hosts []peer.ID, in, out [][]float32, errs []error) error {
	for _, p := range hosts {
		if len(errs) > 0 {
			x.Failovers.Add(1)
		}
		err := x.call(ctx, p, layer, expert, in, out)
		if ctx.Err() != nil { // the caller gave up: not the host's fault
			return ctx.Err()
		}
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", p.ShortString(), err))
	}
	return fmt.Errorf("%w (layer %d expert %d: %d hosts failed: %w)", ErrNoHost, layer, expert, len(errs), errors.Join(errs...))
}

// CallFactor is how many times its usual call a host may take before the
// call times out (see Experts.CallTimeout).
const CallFactor = 10

// timeout is how long a call to p may take.
func (x *Experts) timeout(p peer.ID) time.Duration {
	limit := x.CallTimeout
	if limit <= 0 {
		limit = 5 * time.Second
	}
	floor := x.CallFloor
	if floor <= 0 {
		floor = time.Second
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if u, ok := x.usual[p]; ok {
		if d, ok := u.Value(); ok {
			return min(max(CallFactor*d, floor), limit)
		}
	}
	return limit
}

// call makes one call to p and records its outcome (not when ctx ended).
func (x *Experts) call(ctx context.Context, p peer.ID, layer, e int, in, out [][]float32) error {
	timeout := x.timeout(p)
	if err := x.begin(ctx, p); err != nil {
		return err
	}
	asked := time.Now()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err := x.Client.Call(cctx, p, x.Model, layer, e, in, out)
	// The stream's own deadline may fire a moment before the context's.
	timedOut := cctx.Err() == context.DeadlineExceeded || time.Since(asked) >= timeout
	cancel()
	x.end(p)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, expert.ErrNotFinite) {
		x.convict(p, layer, e, err.Error())
		return err
	}
	if err != nil && timedOut {
		// Frozen, maybe: go around it until it answers again.
		x.trust().Observe(p.String(), trust.Event{Kind: trust.Stalled})
		x.trust().Suspect(p.String(), fmt.Sprintf("expert call: no answer within %s", timeout.Round(time.Millisecond)))
		return fmt.Errorf("no answer within %s: %w", timeout.Round(time.Millisecond), err)
	}
	x.record(p, err)
	if err == nil {
		x.RemoteCalls.Add(1)
		x.timed(p, time.Since(asked))
	}
	return err
}

// timed folds the round trip of an answered call to p into its usual one.
func (x *Experts) timed(p peer.ID, d time.Duration) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.usual == nil {
		x.usual = make(map[peer.ID]*geo.EWMA)
	}
	u, ok := x.usual[p]
	if !ok {
		if len(x.usual) >= maxTimedHosts {
			return
		}
		u = &geo.EWMA{}
		x.usual[p] = u
	}
	u.Add(d)
}

// maxTimedHosts bounds the hosts whose calls are timed.
const maxTimedHosts = 4096

// order sorts hosts: those not in backoff in the trust store first, then by
// RTT weighed by calls in flight; unknown RTTs count as 50 ms, and a host
// this model is settling with counts pausedCost more. Hosts the trust store
// excludes (caught answering wrongly) are left out.
func (x *Experts) order(hosts []peer.ID) []peer.ID {
	st := x.trust()
	hosts = slices.DeleteFunc(slices.Clone(hosts), func(p peer.ID) bool { return st.Excluded(p.String()) })
	x.mu.Lock()
	cost := make(map[peer.ID]float64, len(hosts))
	for _, p := range hosts {
		rtt := 50 * time.Millisecond
		if x.RTT != nil {
			if d, ok := x.RTT(p); ok {
				rtt = d
			}
		}
		cost[p] = float64(rtt+100*time.Microsecond) * float64(1+x.inflight[p])
		if x.paused[p] != nil {
			cost[p] += float64(pausedCost) // its calls wait for a settlement: try others first
		}
	}
	x.mu.Unlock()
	return trust.RankBy(st, hosts, peer.ID.String, func(p peer.ID) float64 { return cost[p] })
}

func (x *Experts) trust() *trust.Store {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.Trust == nil {
		x.Trust = trust.New(trust.Config{})
	}
	return x.Trust
}

// begin counts a call to p in flight. While this model settles with p it
// waits for the settlement to end (at most the Payer's timeout), so that
// both sides' counts hold still.
func (x *Experts) begin(ctx context.Context, p peer.ID) error {
	for {
		x.mu.Lock()
		wait := x.paused[p]
		if wait == nil {
			if x.inflight == nil {
				x.inflight = make(map[peer.ID]int)
			}
			x.inflight[p]++
			x.mu.Unlock()
			return nil
		}
		x.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (x *Experts) end(p peer.ID) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.inflight[p]--; x.inflight[p] <= 0 {
		delete(x.inflight, p)
		if idle := x.idle[p]; idle != nil {
			close(idle)
			delete(x.idle, p)
		}
	}
}

// record puts the outcome of a call to p in the trust store: busy and
// refused are refusals, not faults.
func (x *Experts) record(p peer.ID, err error) {
	switch {
	case err == nil:
		x.trust().Observe(p.String(), trust.Event{Kind: trust.Success})
	case errors.Is(err, inference.ErrBusy) || errors.Is(err, inference.ErrRefused):
		x.trust().Observe(p.String(), trust.Event{Kind: trust.Refused})
	default:
		x.trust().Observe(p.String(), trust.Event{Kind: trust.Failure})
	}
}
