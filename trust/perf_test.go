package trust

import (
	"testing"
	"time"
)

// TestPerfIsTheBestRecentCall: a call slowed by a busy moment does not
// make a peer slow; a peer that really got slower is followed once
// PerfWindow calls say so.
func TestPerfIsTheBestRecentCall(t *testing.T) {
	s := New(Config{})
	call := func(ttftMs, tokens, ms int) {
		s.Observe("a", Event{Kind: Success, Model: "m", TTFT: time.Duration(ttftMs) * time.Millisecond, Tokens: tokens,
			Duration: time.Duration(ms) * time.Millisecond})
	}
	call(100, 11, 600)  // 20 tokens/s
	call(900, 11, 2900) // 5 tokens/s: a busy moment
	if p := s.Perf("a", "m"); p.TTFT != 100*time.Millisecond || p.DecodeTPS < 19.9 || p.DecodeTPS > 20.1 || p.Calls != 2 {
		t.Fatalf("perf %+v, want the best call: 100ms, 20 tokens/s", p)
	}
	for range PerfWindow {
		call(400, 11, 2400)
	}
	if p := s.Perf("a", "m"); p.TTFT != 400*time.Millisecond || p.DecodeTPS < 4.9 || p.DecodeTPS > 5.1 {
		t.Fatalf("after %d slower calls, perf %+v, want 400ms, 5 tokens/s", PerfWindow, p)
	}
}
