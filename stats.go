package mwpeer

import (
	"sync"
	"time"

	"github.com/mwpeer/mwpeer/geo"
)

// expertStats remembers, per (peer, model), how fast answers came and how
// often calls failed, so routing can prefer experts that performed well.
type expertStats struct {
	mu sync.Mutex
	m  map[statsKey]*expertStat
}

type statsKey struct{ peer, model string }

type expertStat struct {
	ttft     geo.EWMA
	tps      float64 // EWMA of decode tokens/s
	failures float64 // decays by half every failureHalfLife
	failedAt time.Time
	used     time.Time
}

const (
	failureHalfLife = time.Minute
	maxStats        = 4096
)

func newExpertStats() *expertStats { return &expertStats{m: make(map[statsKey]*expertStat)} }

func (s *expertStats) get(k statsKey) *expertStat {
	st, ok := s.m[k]
	if !ok {
		if len(s.m) >= maxStats { // bounded: drop the least recently used
			var victim statsKey
			var oldest time.Time
			for key, v := range s.m {
				if oldest.IsZero() || v.used.Before(oldest) {
					victim, oldest = key, v.used
				}
			}
			delete(s.m, victim)
		}
		st = &expertStat{}
		s.m[k] = st
	}
	st.used = time.Now()
	return st
}

// success records a finished call: time to first token and decode speed.
func (s *expertStats) success(peer, model string, ttft time.Duration, tokens int, total time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.get(statsKey{peer, model})
	if ttft > 0 {
		st.ttft.Add(ttft)
	}
	if decode := total - ttft; tokens > 1 && decode > 0 {
		tps := float64(tokens-1) / decode.Seconds()
		if st.tps == 0 {
			st.tps = tps
		} else {
			st.tps = geo.DefaultAlpha*tps + (1-geo.DefaultAlpha)*st.tps
		}
	}
}

// failure records a failed or stalled call.
func (s *expertStats) failure(peer, model string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.get(statsKey{peer, model})
	st.failures = st.decayed(time.Now()) + 1
	st.failedAt = time.Now()
}

func (st *expertStat) decayed(now time.Time) float64 {
	if st.failures == 0 {
		return 0
	}
	halves := now.Sub(st.failedAt).Seconds() / failureHalfLife.Seconds()
	f := st.failures
	for ; halves >= 1 && f > 0.01; halves-- {
		f /= 2
	}
	return f
}

// lookup returns the averages for (peer, model); zeros when never measured.
func (s *expertStats) lookup(peer, model string) (ttft time.Duration, tps float64, failures int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.m[statsKey{peer, model}]
	if !ok {
		return 0, 0, 0
	}
	v, _ := st.ttft.Value()
	return v, st.tps, int(st.decayed(time.Now()) + 0.5)
}
