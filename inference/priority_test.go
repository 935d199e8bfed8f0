package inference

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/internal/wait"
)

// gated is a backend whose calls run until the test opens their gate. Each
// call is named by its prompt and reports its start.
type gated struct {
	started chan string
	mu      sync.Mutex
	gates   map[string]chan struct{}
}

func newGated() *gated {
	return &gated{started: make(chan string, 16), gates: make(map[string]chan struct{})}
}

func (g *gated) gate(who string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.gates[who]
	if !ok {
		c = make(chan struct{})
		g.gates[who] = c
	}
	return c
}

// finish ends the call named who (or lets it end at once if not yet started).
func (g *gated) finish(who string) { close(g.gate(who)) }

func (g *gated) Name() string                                { return "gated" }
func (g *gated) Models(context.Context) ([]ModelInfo, error) { return nil, nil }
func (g *gated) Generate(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
	who := req.Prompt
	g.started <- who
	select {
	case <-g.gate(who):
		return Final{FinishReason: FinishStop}, nil
	case <-ctx.Done():
		return Final{}, ctx.Err()
	}
}

// byPrefix classes a caller by its name's first letter: C contributes, N is
// a newcomer, L claims to be local, anything else is Other.
func byPrefix(ctx context.Context, _ Request) Class {
	p, _ := Caller(ctx)
	switch {
	case strings.HasPrefix(string(p), "C"):
		return ClassContributor
	case strings.HasPrefix(string(p), "N"):
		return ClassNewcomer
	case strings.HasPrefix(string(p), "L"):
		return ClassLocal
	}
	return ClassOther
}

// harness runs calls on a Prioritized over a gated backend.
type harness struct {
	t       *testing.T
	p       *Prioritized
	g       *gated
	queued  chan Class
	mu      sync.Mutex
	results map[string]chan error
}

func newHarness(t *testing.T, cfg PriorityConfig) *harness {
	wait.NoLeak(t)
	if cfg.Class == nil {
		cfg.Class = byPrefix
	}
	if cfg.QueueWait == 0 {
		cfg.QueueWait = time.Minute
	}
	h := &harness{t: t, g: newGated(), queued: make(chan Class, 16), results: make(map[string]chan error)}
	h.p = NewPrioritized(h.g, cfg)
	h.p.queued = func(c Class) { h.queued <- c }
	return h
}

// call starts a call named who in its own goroutine, as a separate caller
// would. A name beginning with "local" is the local user's (no caller); any
// other is the remote caller of that ID.
func (h *harness) call(ctx context.Context, who string) {
	res := make(chan error, 1)
	h.mu.Lock()
	h.results[who] = res
	h.mu.Unlock()
	if !strings.HasPrefix(who, "local") {
		ctx = WithCaller(ctx, peer.ID(who))
	}
	go func() {
		_, err := h.p.Generate(ctx, Request{Model: "m", Prompt: who}, func(Chunk) error { return nil })
		res <- err
	}()
}

// result waits for who's call to return.
func (h *harness) result(who string) error {
	h.t.Helper()
	h.mu.Lock()
	res := h.results[who]
	h.mu.Unlock()
	select {
	case err := <-res:
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatalf("%s: call did not return", who)
		return nil
	}
}

// running starts who and waits until it generates.
func (h *harness) running(who string) {
	h.t.Helper()
	h.call(context.Background(), who)
	h.expectStart(who)
}

// waiting starts who and waits until it is queued.
func (h *harness) waiting(ctx context.Context, who string) {
	h.t.Helper()
	h.call(ctx, who)
	select {
	case <-h.queued:
	case who := <-h.g.started:
		h.t.Fatalf("%s started, want it queued", who)
	case <-time.After(10 * time.Second):
		h.t.Fatalf("%s: not queued", who)
	}
}

func (h *harness) expectStart(want string) {
	h.t.Helper()
	select {
	case got := <-h.g.started:
		if got != want {
			h.t.Fatalf("%s started, want %s", got, want)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatalf("%s did not start", want)
	}
}

// done finishes who and checks that its call succeeded.
func (h *harness) done(who string) {
	h.t.Helper()
	h.g.finish(who)
	if err := h.result(who); err != nil {
		h.t.Fatalf("%s: %v", who, err)
	}
}

func TestLocalThenContributorThenOther(t *testing.T) {
	h := newHarness(t, PriorityConfig{Capacity: 1})
	h.running("C0")
	// Arrival order is the reverse of the service order.
	h.waiting(context.Background(), "B")
	h.waiting(context.Background(), "C")
	h.waiting(context.Background(), "local")
	// Each call that ends hands its slot to the next in class order.
	prev := "C0"
	for _, next := range []string{"local", "C", "B"} {
		h.g.finish(prev)
		h.expectStart(next)
		prev = next
	}
	h.done("B")
	for _, who := range []string{"C0", "local", "C"} {
		if err := h.result(who); err != nil {
			t.Errorf("%s: %v", who, err)
		}
	}
}

func TestOtherIsServedWhenIdle(t *testing.T) {
	for _, capacity := range []int{1, 2} {
		h := newHarness(t, PriorityConfig{Capacity: capacity, QueueWait: -1})
		h.running("B") // QueueWait < 0: it would have failed had it queued
		if got := h.p.Active(); got != 1 {
			t.Errorf("capacity %d: %d active, want 1", capacity, got)
		}
		h.done("B")
	}
}

func TestAgingLiftsOtherPastLaterContributors(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	h := newHarness(t, PriorityConfig{Capacity: 1, Aging: 10 * time.Second, Now: clock})
	h.running("C0")
	h.waiting(context.Background(), "B")
	h.waiting(context.Background(), "C1")
	h.g.finish("C0")
	h.expectStart("C1") // B is Other, C1 a Contributor

	h.waiting(context.Background(), "C2")
	advance(10 * time.Second) // B ranks as a newcomer now: still behind C2
	h.g.finish("C1")
	h.expectStart("C2")

	h.waiting(context.Background(), "C3")
	advance(10 * time.Second) // B ranks as a contributor and came before C3
	h.g.finish("C2")
	h.expectStart("B")

	h.g.finish("B")
	h.expectStart("C3")
	h.done("C3")
	for _, who := range []string{"C0", "C1", "C2", "B"} {
		if err := h.result(who); err != nil {
			t.Errorf("%s: %v", who, err)
		}
	}
}

func TestAgingNeverPassesTheLocalUser(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }

	h := newHarness(t, PriorityConfig{Capacity: 1, Aging: time.Second, Now: clock})
	h.running("C0")
	h.waiting(context.Background(), "B")
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	h.waiting(context.Background(), "local")
	h.g.finish("C0")
	h.expectStart("local")
	h.g.finish("local")
	h.expectStart("B")
	h.done("B")
}

func TestLocalSlotIsReserved(t *testing.T) {
	h := newHarness(t, PriorityConfig{Capacity: 2})
	h.running("C0")
	// One slot is free, but it is the local user's: remote callers wait,
	// even one whose Class hook claims it is local.
	h.waiting(context.Background(), "C1")
	h.waiting(context.Background(), "Lx")
	h.running("local1")
	// The local user may hold both slots, and is first in line for one.
	h.waiting(context.Background(), "local2")
	h.g.finish("C0")
	h.expectStart("local2")
	if got, want := h.p.Waiting(), 2; got != want {
		t.Fatalf("%d waiting, want %d (C1 and Lx)", got, want)
	}
	h.g.finish("local1")
	h.expectStart("C1")
	h.done("local2")
	if got, want := h.p.Waiting(), 1; got != want {
		t.Fatalf("%d waiting with a slot free, want %d: Lx must not take the local slot", got, want)
	}
	h.g.finish("C1")
	h.expectStart("Lx")
	h.done("Lx")
	for _, who := range []string{"C0", "local1", "C1"} {
		if err := h.result(who); err != nil {
			t.Errorf("%s: %v", who, err)
		}
	}
}

func TestCancelledWaiterLeavesTheQueue(t *testing.T) {
	h := newHarness(t, PriorityConfig{Capacity: 1})
	h.running("C0")
	ctx, cancel := context.WithCancel(context.Background())
	h.waiting(ctx, "C1")
	h.waiting(context.Background(), "B")
	cancel()
	if err := h.result("C1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v, want context.Canceled", err)
	}
	if got := h.p.Waiting(); got != 1 {
		t.Fatalf("%d waiting after the cancel returned, want 1", got)
	}
	h.g.finish("C0")
	h.expectStart("B") // the cancelled contributor took no slot
	h.done("B")
	if err := h.result("C0"); err != nil {
		t.Fatal(err)
	}
}

func TestBusyAfterQueueWait(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait time.Duration
	}{{"no queue", -1}, {"queue", time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, PriorityConfig{Capacity: 1, QueueWait: tc.wait})
			h.running("C0")
			h.call(context.Background(), "C1")
			if err := h.result("C1"); !errors.Is(err, ErrBusy) {
				t.Fatalf("waiter: %v, want ErrBusy", err)
			}
			if got := h.p.Waiting(); got != 0 {
				t.Fatalf("%d waiting, want 0", got)
			}
			h.done("C0")
			// The slot is free again.
			h.running("C2")
			h.done("C2")
		})
	}
}

func TestClassifyTrustsOnlyTheChannel(t *testing.T) {
	p := NewPrioritized(newGated(), PriorityConfig{Capacity: 1, Class: byPrefix})
	noHook := NewPrioritized(newGated(), PriorityConfig{Capacity: 1})
	outOfRange := NewPrioritized(newGated(), PriorityConfig{Capacity: 1, Class: func(context.Context, Request) Class { return 9 }})
	remote := func(id string) context.Context { return WithCaller(context.Background(), peer.ID(id)) }
	for _, tc := range []struct {
		name string
		p    *Prioritized
		ctx  context.Context
		want Class
	}{
		{"no caller is local", p, context.Background(), ClassLocal},
		{"contributor", p, remote("C"), ClassContributor},
		{"newcomer", p, remote("N"), ClassNewcomer},
		{"other", p, remote("B"), ClassOther},
		{"a remote claiming local is a contributor", p, remote("L"), ClassContributor},
		{"no hook: remote is other", noHook, remote("C"), ClassOther},
		{"no hook: local is local", noHook, context.Background(), ClassLocal},
		{"out of range is other", outOfRange, remote("C"), ClassOther},
	} {
		if got := tc.p.classify(tc.ctx, Request{}); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestClassOf(t *testing.T) {
	for _, tc := range []struct {
		balance, served, allowance int64
		want                       Class
	}{
		{balance: 1, served: 1 << 40, allowance: 0, want: ClassContributor},
		{balance: 0, served: 0, allowance: 1000, want: ClassNewcomer},
		{balance: -50, served: 999, allowance: 1000, want: ClassNewcomer},
		{balance: -50, served: 1000, allowance: 1000, want: ClassOther},
		{balance: 0, served: 0, allowance: 0, want: ClassOther},
	} {
		if got := ClassOf(tc.balance, tc.served, tc.allowance); got != tc.want {
			t.Errorf("ClassOf(%d, %d, %d) = %v, want %v", tc.balance, tc.served, tc.allowance, got, tc.want)
		}
	}
}

func TestUnlimitedPassesThrough(t *testing.T) {
	h := newHarness(t, PriorityConfig{Capacity: 0})
	h.running("B1")
	h.running("B2")
	h.done("B1")
	h.done("B2")
}
