package inference

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Class ranks a call to a serving peer that is at capacity: a lower class is
// served first. It is BitTorrent's tit-for-tat for inference: the peer's own
// user, then peers that gave more than they took, then newcomers within a
// free allowance, then everyone else.
type Class int

// The classes, in the order they are served.
const (
	// ClassLocal is the peer's own user: a call without a remote caller (see
	// Caller). It alone may use the slot Prioritized reserves.
	ClassLocal Class = iota
	// ClassContributor is a peer with a positive balance with us.
	ClassContributor
	// ClassNewcomer is a peer in debt or unknown, but within its free
	// allowance for the day, so that a new swarm can start.
	ClassNewcomer
	// ClassOther is everyone else: served only when nothing else waits.
	ClassOther
)

func (c Class) String() string {
	switch c {
	case ClassLocal:
		return "local"
	case ClassContributor:
		return "contributor"
	case ClassNewcomer:
		return "newcomer"
	case ClassOther:
		return "other"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// ClassOf is the class of a remote peer from what our ledger says of it:
// balance is the credits it earned from us minus those it spent with us
// (positive: it gave more than it took), servedToday the tokens we served it
// today and allowance the tokens a day we give any peer for free.
//
// A positive balance makes a Contributor, whatever it was served today;
// otherwise a peer that was served fewer than allowance tokens today is a
// Newcomer, and any other peer is Other. An allowance of 0 gives nothing for
// free. ClassOf never answers ClassLocal: that is decided by the absence of a
// remote caller, not by a ledger.
func ClassOf(balance, servedToday, allowance int64) Class {
	switch {
	case balance > 0:
		return ClassContributor
	case servedToday < allowance:
		return ClassNewcomer
	}
	return ClassOther
}

// PriorityConfig configures NewPrioritized.
type PriorityConfig struct {
	// Capacity is the number of calls generated at once; 0 means no limit
	// (and no queue). From 2 up, one slot is reserved for the local user:
	// remote callers together hold at most Capacity-1. With Capacity 1 the
	// local user is not reserved a slot but is first in the queue.
	Capacity int
	// QueueWait bounds how long a call waits for a slot; one that finds none
	// in time gets ErrBusy (dispatch then asks another expert). 0: a call
	// that finds no free slot gets ErrBusy at once.
	QueueWait time.Duration
	// Aging lifts a waiting remote call one class for every Aging it has
	// waited, up to ClassContributor (never above: the local user stays
	// first), so that nobody starves while better-ranked calls keep coming.
	// Within a class, calls are served in arrival order, so an Other that has
	// waited 2×Aging is served before Contributors that came after it. Keep
	// 2×Aging well below QueueWait or an Other gives up before it catches up.
	// 0: no aging.
	Aging time.Duration
	// Class ranks a call from another peer (inference.Caller(ctx) is set).
	// It is not asked about calls without a caller: those are ClassLocal.
	// An answer of ClassLocal for a remote caller counts as ClassContributor
	// (a stranger never gets the reserved slot), and one out of range as
	// ClassOther. nil ranks every remote call ClassOther.
	Class func(ctx context.Context, req Request) Class
	// PerPeer is the most slots one remote caller holds at once; its
	// further calls wait (within QueueWait) while others are served. 0: no
	// limit but the remote share of Capacity. See PerPeerSlots.
	PerPeer int
	// Now is the clock aging reads (nil: time.Now).
	Now func() time.Time
}

// PerPeerSlots is the PerPeer a peer with capacity slots gives each remote
// caller: half the slots remote callers share (Capacity-1), at least one,
// so that one stranger never holds them all while another waits.
func PerPeerSlots(capacity int) int {
	return max(1, (capacity-1)/2)
}

// DefaultPriorityConfig is two slots (one of them the local user's), a
// 30 s queue wait and a class step every 5 s of waiting: an Other waiter
// ranks with Contributors after 10 s.
func DefaultPriorityConfig() PriorityConfig {
	return PriorityConfig{Capacity: 2, QueueWait: 30 * time.Second, Aging: 5 * time.Second}
}

// Prioritized is a Backend in front of another that bounds concurrent calls
// and, when they are all taken, serves waiting calls by Class rather than by
// arrival: the local user first, then contributors, newcomers and the rest,
// arrival order within a class, with aging (see PriorityConfig). A waiting
// call costs no goroutine but its caller's, and nothing polls: a slot that
// frees hands itself to the next waiter.
//
// The backend behind it should not queue on its own (give it no capacity
// limit, or a larger one): its queue would be first come, first served.
type Prioritized struct {
	b   Backend
	cfg PriorityConfig

	mu     sync.Mutex
	limit  int             // slots: cfg.Capacity until SetCapacity
	busy   int             // slots in use
	remote int             // of busy, held by remote callers
	held   map[peer.ID]int // of remote, by caller (with PerPeer)
	queue  []*waiter       // in arrival order

	// queued, when set (by tests), is called after a call joins the queue.
	queued func(Class)
}

// waiter is a call waiting for a slot.
type waiter struct {
	class   Class
	caller  peer.ID // "" for the local user
	since   time.Time
	ready   chan struct{} // closed when granted
	granted bool
}

var _ Backend = (*Prioritized)(nil)

// NewPrioritized returns b behind cfg's slots and queue.
func NewPrioritized(b Backend, cfg PriorityConfig) *Prioritized {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Prioritized{b: b, cfg: cfg, limit: cfg.Capacity, held: make(map[peer.ID]int)}
}

// Name is the name of the backend behind p.
func (p *Prioritized) Name() string { return p.b.Name() }

// Models lists the models of the backend behind p.
func (p *Prioritized) Models(ctx context.Context) ([]ModelInfo, error) { return p.b.Models(ctx) }

// Unwrap returns the backend behind p.
func (p *Prioritized) Unwrap() Backend { return p.b }

// SetCapacity changes the number of slots (at least 1) and the PerPeer share
// with it (PerPeerSlots), handing new slots to waiters at once. A
// Prioritized made without a limit (Capacity 0) keeps none.
func (p *Prioritized) SetCapacity(n int) {
	if p.cfg.Capacity <= 0 || n < 1 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limit = n
	if p.cfg.PerPeer > 0 {
		p.cfg.PerPeer = PerPeerSlots(n)
	}
	p.grantLocked()
}

// Capacity is the number of slots now.
func (p *Prioritized) Capacity() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.limit
}

// Active returns the number of calls generating now.
func (p *Prioritized) Active() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.busy
}

// Waiting returns the number of calls waiting for a slot.
func (p *Prioritized) Waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// Generate waits for a slot as its class allows, then generates on the
// backend behind p. It returns ErrBusy if no slot came within QueueWait and
// ctx's error if ctx ended first; either way the call has left the queue.
func (p *Prioritized) Generate(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
	if p.cfg.Capacity <= 0 {
		return p.b.Generate(ctx, req, emit)
	}
	// Whether a slot fits a call depends only on it being local or remote,
	// so the Class hook (a ledger lookup) is asked only when the call must
	// wait.
	c := ClassLocal
	caller, remote := Caller(ctx)
	if remote {
		c = ClassOther
	}
	if !p.tryTake(ctx, c, caller) {
		c = p.classify(ctx, req)
		if err := p.acquire(ctx, c, caller); err != nil {
			return Final{}, err
		}
	}
	defer p.release(c, caller)
	return p.b.Generate(ctx, req, emit)
}

// tryTake takes a slot for a call of class c if one fits now.
func (p *Prioritized) tryTake(ctx context.Context, c Class, caller peer.ID) bool {
	if ctx.Err() != nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fits(c, caller) {
		p.take(c, caller)
		return true
	}
	return false
}

// classify decides the class of a call: local without a caller, else what
// the Class hook says, kept within the remote classes.
func (p *Prioritized) classify(ctx context.Context, req Request) Class {
	if _, remote := Caller(ctx); !remote {
		return ClassLocal
	}
	if p.cfg.Class == nil {
		return ClassOther
	}
	switch c := p.cfg.Class(ctx, req); {
	case c <= ClassLocal:
		return ClassContributor
	case c > ClassOther:
		return ClassOther
	default:
		return c
	}
}

// fits says whether a call of class c from caller may take a slot now.
// Called with mu held.
func (p *Prioritized) fits(c Class, caller peer.ID) bool {
	if p.busy >= p.limit {
		return false
	}
	if c == ClassLocal {
		return true
	}
	if p.cfg.PerPeer > 0 && p.held[caller] >= p.cfg.PerPeer {
		return false
	}
	return p.limit < 2 || p.remote < p.limit-1
}

// take gives a call of class c from caller a slot. Called with mu held.
func (p *Prioritized) take(c Class, caller peer.ID) {
	p.busy++
	if c != ClassLocal {
		p.remote++
		if p.cfg.PerPeer > 0 {
			p.held[caller]++
		}
	}
}

// rank is w's class after aging at now. Called with mu held.
func (p *Prioritized) rank(w *waiter, now time.Time) Class {
	if w.class == ClassLocal || p.cfg.Aging <= 0 {
		return w.class
	}
	steps := now.Sub(w.since) / p.cfg.Aging
	if steps >= time.Duration(w.class-ClassContributor) {
		return ClassContributor
	}
	return w.class - Class(max(steps, 0))
}

func (p *Prioritized) acquire(ctx context.Context, c Class, caller peer.ID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	// Waiters exist only while no slot fits them (every release hands free
	// slots on), and a slot that fits this call would fit any waiter of the
	// same kind from a caller under its PerPeer: so a fitting slot is this
	// call's without jumping the queue.
	if p.fits(c, caller) {
		p.take(c, caller)
		p.mu.Unlock()
		return nil
	}
	if p.cfg.QueueWait <= 0 {
		p.mu.Unlock()
		return fmt.Errorf("%d of %d slots taken: %w", p.limit, p.limit, ErrBusy)
	}
	w := &waiter{class: c, caller: caller, since: p.cfg.Now(), ready: make(chan struct{})}
	p.queue = append(p.queue, w)
	queued := p.queued
	p.mu.Unlock()
	if queued != nil {
		queued(c)
	}

	t := time.NewTimer(p.cfg.QueueWait)
	defer t.Stop()
	var err error
	select {
	case <-w.ready:
		return nil
	case <-t.C:
		err = fmt.Errorf("no slot within %s: %w", p.cfg.QueueWait, ErrBusy)
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.granted {
		// A slot came just as the wait ended. A call that timed out can
		// still use it; a cancelled one passes it on.
		if ctx.Err() == nil {
			return nil
		}
		p.releaseLocked(c, caller)
		return err
	}
	for i, q := range p.queue {
		if q == w {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
			break
		}
	}
	return err
}

func (p *Prioritized) release(c Class, caller peer.ID) {
	p.mu.Lock()
	p.releaseLocked(c, caller)
	p.mu.Unlock()
}

// releaseLocked frees a slot of class c and hands free slots to the best
// waiters that fit them: lowest rank after aging, earliest arrival among
// equals. Called with mu held.
func (p *Prioritized) releaseLocked(c Class, caller peer.ID) {
	p.busy--
	if c != ClassLocal {
		p.remote--
		if p.cfg.PerPeer > 0 {
			if p.held[caller]--; p.held[caller] <= 0 {
				delete(p.held, caller)
			}
		}
	}
	p.grantLocked()
}

// grantLocked hands free slots to the best waiters that fit them. Called
// with mu held.
func (p *Prioritized) grantLocked() {
	now := p.cfg.Now()
	for {
		best, bestRank := -1, Class(0)
		for i, w := range p.queue {
			if !p.fits(w.class, w.caller) {
				continue
			}
			if r := p.rank(w, now); best < 0 || r < bestRank {
				best, bestRank = i, r
			}
		}
		if best < 0 {
			return
		}
		w := p.queue[best]
		p.queue = append(p.queue[:best], p.queue[best+1:]...)
		p.take(w.class, w.caller)
		w.granted = true
		close(w.ready)
	}
}
