package wait

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// recorder is a testing.TB that records Fatalf instead of stopping.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestForReturnsOnceTheConditionHolds(t *testing.T) {
	ready := time.Now().Add(50 * time.Millisecond)
	calls := 0
	r := &recorder{TB: t}
	took := For(r, 5*time.Second, "ready", func() error {
		calls++
		if time.Now().Before(ready) {
			return errors.New("not yet")
		}
		return nil
	})
	if r.failed != "" {
		t.Fatalf("failed: %s", r.failed)
	}
	if took < 50*time.Millisecond || took > 2*time.Second {
		t.Errorf("took %s, want a little over 50ms", took)
	}
	if calls < 2 || calls > 20 {
		t.Errorf("%d calls in %s", calls, took)
	}
}

func TestForFailsWithWhatAndTheLastError(t *testing.T) {
	n := 0
	r := &recorder{TB: t}
	took := For(r, 30*time.Millisecond, "the answer", func() error {
		n++
		return fmt.Errorf("try %d", n)
	})
	if took < 30*time.Millisecond {
		t.Errorf("gave up after %s, want at least 30ms", took)
	}
	want := fmt.Sprintf("the answer: not within 30ms: try %d", n)
	if r.failed != want {
		t.Errorf("failure %q, want %q", r.failed, want)
	}
	if n < 2 {
		t.Errorf("%d tries in %s", n, took)
	}
}
