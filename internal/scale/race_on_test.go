//go:build race

package scale

// raceOn: the race detector slows the CPU timings the model measures ten-fold.
const raceOn = true
