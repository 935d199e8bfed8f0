// Package geo owns distances and round-trip times between peers: great-circle
// distance from coordinates given by the operator, an EWMA of measured round
// trips, Vivaldi network coordinates (through hashicorp/serf's coordinate
// package) and the RTT matrix that merges them. Every RTT it returns says where
// it came from: measured by this peer, reported by another, predicted from
// coordinates, or guessed from distance. Nobody's report is believed about a
// pair with this peer at one end.
//
// geo imports nothing else of mwpeer and does no I/O: there is no online
// geolocation service behind it.
package geo
