package p2p

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestRTTIsTheLeastRecentSample: a delayed ping (a busy CPU, a queue) does
// not move a peer's round trip; a path that really got slower is followed
// once RTTWindow samples say so.
func TestRTTIsTheLeastRecentSample(t *testing.T) {
	p := NewPinger(nil, PingerConfig{})
	id := peer.ID("a")
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, s := range []int{100, 300, 90, 500} {
		p.Record(id, ms(s))
	}
	if got, ok := p.RTT(id); !ok || got != ms(90) {
		t.Fatalf("RTT %v %v, want 90ms", got, ok)
	}
	for range RTTWindow {
		p.Record(id, ms(200))
	}
	if got, _ := p.RTT(id); got != ms(200) {
		t.Fatalf("after %d samples of 200ms, RTT %v", RTTWindow, got)
	}
	if row := p.Row(0); row[id] != ms(200) {
		t.Fatalf("row %v", row)
	}
}
