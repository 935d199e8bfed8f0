//go:build !race

package mwpeer

const raceEnabled = false
