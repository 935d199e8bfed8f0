//go:build race

package worldtest

const raceEnabled = true
