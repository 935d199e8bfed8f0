package wait

import (
	"runtime"
	"testing"
	"time"
)

// Polling starts at firstPause between tries and doubles up to maxPause: a
// condition that holds almost at once is seen almost at once, and one that
// takes seconds (a gossip round, a process starting) is not polled hundreds
// of times.
const (
	firstPause = time.Millisecond
	maxPause   = 100 * time.Millisecond
)

// For calls cond until it returns nil and returns how long that took. If
// within passes first it fails t with what and cond's last error.
func For(t testing.TB, within time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	pause := firstPause
	for {
		err := cond()
		took := time.Since(start)
		if err == nil {
			return took
		}
		if took >= within {
			t.Fatalf("%s: not within %s: %v", what, within, err)
			return took
		}
		time.Sleep(min(pause, within-took))
		pause = min(2*pause, maxPause)
	}
}

// NoLeak fails t at cleanup if goroutines started during the test are still
// running 5 s after it ended, listing every goroutine's stack.
func NoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		pause := firstPause
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines: %d before, %d after\n%s", before, n, buf)
				return
			}
			time.Sleep(pause)
			pause = min(2*pause, maxPause)
		}
	})
}
