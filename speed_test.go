package mwpeer

import (
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
)

// TestOwnSpeedIsAnnounced: a peer announces, per model, the best time to
// first token and decode rate of its engine's recent answers.
func TestOwnSpeedIsAnnounced(t *testing.T) {
	var s speeds
	s.record("m", inference.Final{TTFT: 300 * time.Millisecond, CompletionTokens: 11, Duration: 800 * time.Millisecond})  // 20 tokens/s
	s.record("m", inference.Final{TTFT: 120 * time.Millisecond, CompletionTokens: 11, Duration: 1120 * time.Millisecond}) // 10 tokens/s
	s.record("n", inference.Final{})                                                                                      // nothing timed
	models := []experts.Model{{Name: "m"}, {Name: "n"}, {Name: "o"}}
	s.fill(models)
	if m := models[0]; m.TTFTMs != 120 || m.TPS < 19.9 || m.TPS > 20.1 {
		t.Errorf("m announces %v ms, %v tokens/s; want the best: 120 ms, 20 tokens/s", m.TTFTMs, m.TPS)
	}
	for _, m := range models[1:] {
		if m.TTFTMs != 0 || m.TPS != 0 {
			t.Errorf("%s announces a speed it never measured: %+v", m.Name, m)
		}
	}
}
