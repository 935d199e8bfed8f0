package mwpeer

import (
	"sync"
	"time"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/trust"
)

// speeds is this peer's own measure of its engine, per model: the best
// time to first token and decode rate of its last trust.PerfWindow
// answers, the way a caller measures a peer (trust.Store.Perf), less the
// round trip. It announces them (experts.Model TTFTMs, TPS) so that a
// router that never asked it does not take it for a typical peer; what
// the router then measures itself replaces the claim. It is safe for
// concurrent use.
type speeds struct {
	mu sync.Mutex
	by map[string]*speed
}

type speed struct {
	ttft   [trust.PerfWindow]time.Duration
	tps    [trust.PerfWindow]float64
	nt, nr int
}

// record notes one answer the engine gave for model.
func (s *speeds) record(model string, f inference.Final) {
	if model == "" || f.TTFT <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sp := s.by[model]
	if sp == nil {
		if len(s.by) >= experts.MaxModels {
			return
		}
		if s.by == nil {
			s.by = make(map[string]*speed)
		}
		sp = &speed{}
		s.by[model] = sp
	}
	sp.ttft[sp.nt%trust.PerfWindow] = f.TTFT
	sp.nt++
	if decode := f.Duration - f.TTFT; f.CompletionTokens > 1 && decode > 0 {
		sp.tps[sp.nr%trust.PerfWindow] = float64(f.CompletionTokens-1) / decode.Seconds()
		sp.nr++
	}
}

// fill sets each model's announced speed to what was measured of it,
// within the bounds an announcement allows.
func (s *speeds) fill(models []experts.Model) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range models {
		sp := s.by[models[i].Name]
		if sp == nil {
			continue
		}
		var best time.Duration
		for _, d := range sp.ttft[:min(sp.nt, trust.PerfWindow)] {
			if best == 0 || d < best {
				best = d
			}
		}
		var tps float64
		for _, x := range sp.tps[:min(sp.nr, trust.PerfWindow)] {
			tps = max(tps, x)
		}
		models[i].TTFTMs = min(float64(best)/float64(time.Millisecond), experts.MaxTTFTMs)
		models[i].TPS = min(tps, experts.MaxTPS)
	}
}
