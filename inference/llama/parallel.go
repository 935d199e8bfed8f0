package llama

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// job is work over the indices [0, n) that may be split into ranges run
// concurrently; worker (0 for the caller, 1... for helpers) tells a range
// which per-worker scratch it may use.
type job interface {
	run(lo, hi, worker int)
}

// team runs the parallel loops of one computation on the caller and a few
// helper goroutines. Its owner starts the helpers before the computation and
// stops them after it (State.Forward does so around every call), so no
// goroutine outlives the call that needed it. Starting and running a team
// does not allocate.
type team struct {
	helpers int
	orders  chan int // a worker index to run the current job, or -1 to exit
	loop    func()   // t.work, made once so that starting a helper does not allocate

	cur      job
	n, chunk int
	next     atomic.Int64
	done     sync.WaitGroup // ranges of the current job
	exited   sync.WaitGroup // helpers
	started  bool
}

// newTeam returns a team of the caller and workers-1 helpers.
func newTeam(workers int) *team {
	t := &team{helpers: max(0, workers-1)}
	t.orders = make(chan int, t.helpers)
	t.loop = t.work
	return t
}

// defaultWorkers is the number of goroutines a team splits work over.
func defaultWorkers() int { return runtime.GOMAXPROCS(0) }

// start starts the helpers.
func (t *team) start() {
	if t.started {
		return
	}
	t.started = true
	t.exited.Add(t.helpers)
	for range t.helpers {
		go t.loop()
	}
}

// stop stops the helpers and waits for them to exit.
func (t *team) stop() {
	if !t.started {
		return
	}
	for range t.helpers {
		t.orders <- -1
	}
	t.exited.Wait()
	t.started = false
}

func (t *team) work() {
	defer t.exited.Done()
	for w := range t.orders {
		if w < 0 {
			return
		}
		t.drain(w)
		t.done.Done()
	}
}

// drain runs chunks of the current job until none is left.
func (t *team) drain(worker int) {
	for {
		lo := int(t.next.Add(1)-1) * t.chunk
		if lo >= t.n {
			return
		}
		t.cur.run(lo, min(lo+t.chunk, t.n), worker)
	}
}

// parallel runs j over [0, n) in chunks of chunk indices, on the caller and
// the helpers. A nil or unstarted team, or work of one chunk, runs on the
// caller alone. Which goroutine runs which chunk must not change results:
// jobs compute every index the same way whatever range it falls in.
func (t *team) parallel(j job, n, chunk int) {
	chunk = max(chunk, 1)
	if t == nil || !t.started || t.helpers == 0 || n <= chunk {
		j.run(0, n, 0)
		return
	}
	t.cur, t.n, t.chunk = j, n, chunk
	t.next.Store(0)
	helpers := min(t.helpers, (n+chunk-1)/chunk-1)
	t.done.Add(helpers)
	for w := 1; w <= helpers; w++ {
		t.orders <- w
	}
	t.drain(0)
	t.done.Wait()
	t.cur = nil
}

// workers returns the number of workers whose scratch a job may use.
func (t *team) workers() int {
	if t == nil {
		return 1
	}
	return t.helpers + 1
}
