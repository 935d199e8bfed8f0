package lifecycle

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestCloseUnwindsInReverseOnce(t *testing.T) {
	var mu sync.Mutex
	var order []string
	note := func(s string) func() error {
		return func() error { mu.Lock(); order = append(order, s); mu.Unlock(); return nil }
	}
	var s Stack
	s.Defer("host", note("host"))
	started := make(chan struct{})
	s.Go("loop", func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		note("loop")()
		return ctx.Err()
	})
	<-started
	s.Defer("http", note("http"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"http", "loop", "host"}; !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
	// After Close, a part pushed by a start still in flight is undone at once.
	s.Defer("late", note("late"))
	if order[len(order)-1] != "late" {
		t.Fatalf("late part not closed: %v", order)
	}
}

func TestCloseReportsEveryErrorByName(t *testing.T) {
	var s Stack
	boom := errors.New("boom")
	s.Defer("a", func() error { return boom })
	s.Go("b", func(ctx context.Context) error { <-ctx.Done(); return errors.New("b failed") })
	s.Go("c", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	err := s.Close()
	if !errors.Is(err, boom) || err == nil || !strings.Contains(err.Error(), "a: boom") || !strings.Contains(err.Error(), "b: b failed") || strings.Contains(err.Error(), "c:") {
		t.Fatalf("err %v", err)
	}
}

func TestTasksCloseWaitsForEveryJob(t *testing.T) {
	var tasks Tasks
	release := make(chan struct{})
	var done sync.WaitGroup
	done.Add(2)
	for range 2 {
		tasks.Go(func() { <-release; done.Done() })
	}
	closed := make(chan struct{})
	go func() { tasks.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while jobs ran")
	default:
	}
	close(release)
	<-closed
	done.Wait()
	ran := false
	tasks.Go(func() { ran = true }) // after Close: in the caller's goroutine
	if !ran {
		t.Fatal("a job after Close did not run at once")
	}
}
