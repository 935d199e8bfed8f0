//go:build !race

package worldtest

const raceEnabled = false
