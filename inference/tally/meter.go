package tally

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// DefaultMaxEntries bounds what a Meter remembers: counterparts (a peer and
// a model) beyond it push out the one heard from longest ago.
const DefaultMaxEntries = 4096

// Work is an amount of work counted on one side of a pair of peers since
// their last settlement.
type Work struct {
	Calls  uint64 // expert calls answered, or shard requests served
	Rows   uint64 // rows of those expert calls
	Values uint64 // rows × row length of those expert calls (receipt.ExpertFlops turns them into flops)
	Bytes  uint64 // shard bytes
}

// Plus returns w and o added.
func (w Work) Plus(o Work) Work {
	return Work{w.Calls + o.Calls, w.Rows + o.Rows, w.Values + o.Values, w.Bytes + o.Bytes}
}

// Covers reports whether w is at least o in every field.
func (w Work) Covers(o Work) bool {
	return w.Calls >= o.Calls && w.Rows >= o.Rows && w.Values >= o.Values && w.Bytes >= o.Bytes
}

// IsZero reports whether w counts nothing.
func (w Work) IsZero() bool { return w == Work{} }

// Meter counts the work done between this peer and others, per counterpart
// and model ("" when the work has none), from the last settlement on. It is
// bounded: beyond its size it forgets the counterpart heard from longest ago
// (Evicted counts them), so a stranger cannot make it keep unbounded state.
// A Meter is safe for concurrent use.
type Meter struct {
	max int

	mu      sync.Mutex
	entries map[meterKey]*list.Element // of *entry
	lru     list.List                  // front: used most recently
	wake    chan struct{}              // closed on the next Add (nil: nobody waits)
	evicted uint64
}

type meterKey struct {
	peer  peer.ID
	model string
}

type entry struct {
	key   meterKey
	work  Work
	start time.Time // the first work since the last settlement
}

// NewMeter returns a Meter of at most max counterparts (0 or less:
// DefaultMaxEntries).
func NewMeter(max int) *Meter {
	if max <= 0 {
		max = DefaultMaxEntries
	}
	return &Meter{max: max, entries: make(map[meterKey]*list.Element)}
}

// Add counts w done with p for model.
func (m *Meter) Add(p peer.ID, model string, w Work) {
	k := meterKey{p, model}
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.entries[k]; ok {
		e := el.Value.(*entry)
		e.work = e.work.Plus(w)
		m.lru.MoveToFront(el)
	} else {
		for len(m.entries) >= m.max {
			old := m.lru.Back()
			delete(m.entries, old.Value.(*entry).key)
			m.lru.Remove(old)
			m.evicted++
		}
		m.entries[k] = m.lru.PushFront(&entry{key: k, work: w, start: time.Now()})
	}
	if m.wake != nil {
		close(m.wake)
		m.wake = nil
	}
}

// Get returns the work counted with p for model since the last settlement,
// and when the first of it was counted.
func (m *Meter) Get(p peer.ID, model string) (Work, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.entries[meterKey{p, model}]; ok {
		e := el.Value.(*entry)
		return e.work, e.start
	}
	return Work{}, time.Time{}
}

// Take returns what Get does and starts a new window: the work is
// forgotten. ok is false when nothing was counted.
func (m *Meter) Take(p peer.ID, model string) (w Work, start time.Time, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.entries[meterKey{p, model}]
	if !ok {
		return Work{}, time.Time{}, false
	}
	e := el.Value.(*entry)
	delete(m.entries, e.key)
	m.lru.Remove(el)
	return e.work, e.start, true
}

// Due returns the peers with work counted for model whose window began at
// least age ago (every one with work when age is 0 or less).
func (m *Meter) Due(model string, age time.Duration) []peer.ID {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []peer.ID
	for k, el := range m.entries {
		if k.model == model && (age <= 0 || time.Since(el.Value.(*entry).start) >= age) {
			out = append(out, k.peer)
		}
	}
	return out
}

// Wait waits until the work counted with p for model covers want, or ctx
// ends, and returns the work counted then. The other side of a call may
// see its end a moment before this side counts it; a settlement waits here
// for its own count to catch up.
func (m *Meter) Wait(ctx context.Context, p peer.ID, model string, want Work) Work {
	for {
		m.mu.Lock()
		var have Work
		if el, ok := m.entries[meterKey{p, model}]; ok {
			have = el.Value.(*entry).work
		}
		if have.Covers(want) {
			m.mu.Unlock()
			return have
		}
		if m.wake == nil {
			m.wake = make(chan struct{})
		}
		wake := m.wake
		m.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return have
		}
	}
}

// Len returns the counterparts with work counted.
func (m *Meter) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// Evicted returns how many counterparts were forgotten, unsettled, to keep
// the Meter within its size.
func (m *Meter) Evicted() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.evicted
}
