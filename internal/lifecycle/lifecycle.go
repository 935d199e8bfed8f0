// Package lifecycle starts the parts of a peer in order and stops them in
// reverse, in one place: a failed start and Close unwind through the same
// Stack, so exactly what started is stopped, once.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// SlowStop is how long a part may take to stop before the Stack's Log hears
// of it.
const SlowStop = 500 * time.Millisecond

// Stack holds what must be undone, last started first. The zero value is
// ready to use; it is safe for concurrent use.
type Stack struct {
	// Log, when set, hears of each part that takes over SlowStop to stop.
	Log *slog.Logger

	mu     sync.Mutex
	parts  []part
	closed bool
	err    error
}

type part struct {
	name  string
	close func() error
}

// Defer pushes close, to be run by Close after every part pushed later has
// stopped. On a closed Stack it runs close at once.
func (s *Stack) Defer(name string, close func() error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = close()
		return
	}
	s.parts = append(s.parts, part{name, close})
	s.mu.Unlock()
}

// Go runs run in a goroutine until its context is cancelled, which Close
// does when it unwinds to this point, then waits for run to return. An error
// run returns other than the cancellation is reported by Close.
func (s *Stack) Go(name string, run func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	s.Defer(name, func() error {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	})
}

// Close stops every part in reverse order and returns their errors joined,
// each named. Later calls return the same result.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.err
	}
	s.closed = true
	parts := s.parts
	s.parts = nil
	s.mu.Unlock()
	var errs []error
	for i := len(parts) - 1; i >= 0; i-- {
		start := time.Now()
		if err := parts[i].close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", parts[i].name, err))
		}
		if took := time.Since(start); took > SlowStop && s.Log != nil {
			s.Log.Info("slow to stop", "part", parts[i].name, "took", took.Round(time.Millisecond).String())
		}
	}
	s.mu.Lock()
	s.err = errors.Join(errs...)
	s.mu.Unlock()
	return s.err
}

// Tasks runs short jobs that outlive the call that started them (a receipt
// exchange after its answer) and waits for them on Close. After Close a job
// runs in the caller's goroutine.
type Tasks struct {
	mu     sync.Mutex
	wg     sync.WaitGroup
	closed bool
}

// Go runs f in a goroutine that Close waits for.
func (t *Tasks) Go(f func()) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		f()
		return
	}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		f()
	}()
}

// Close waits for every job started by Go.
func (t *Tasks) Close() error {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}
