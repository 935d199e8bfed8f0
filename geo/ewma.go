package geo

import "time"

// DefaultAlpha is the weight a new sample gets in an EWMA: high enough to
// follow a route change within a few pings, low enough to ride out one
// delayed packet.
const DefaultAlpha = 0.2

// EWMA is an exponentially weighted moving average of round-trip times. The
// zero value is empty; it is not safe for concurrent use.
type EWMA struct {
	Alpha   float64 // weight of a new sample, in (0,1]; DefaultAlpha when zero
	value   float64 // nanoseconds
	samples int
}

// Add folds one sample in. The first sample sets the average.
func (e *EWMA) Add(sample time.Duration) {
	a := e.Alpha
	if a <= 0 || a > 1 {
		a = DefaultAlpha
	}
	if e.samples == 0 {
		e.value = float64(sample)
	} else {
		e.value = a*float64(sample) + (1-a)*e.value
	}
	e.samples++
}

// Value returns the average, and false when no sample was added.
func (e *EWMA) Value() (time.Duration, bool) {
	return time.Duration(e.value), e.samples > 0
}

// Samples returns how many samples were folded in.
func (e *EWMA) Samples() int { return e.samples }
