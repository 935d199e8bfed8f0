// Package worldtest runs the real protocol stack of many peers in one
// process over go-libp2p's mock network, whose links carry the latencies of
// a world: peers sit in real cities and every link's delay is what fibre
// between them would take. It holds the city table and the link model; the
// tests build peers from the packages (experts, swarm, inference/infer) the
// way the module root wires them, and check routing against an oracle that
// knows the true latencies.
//
// It is a test-support package: only tests import it.
package worldtest
