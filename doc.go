// Package mwpeer is one peer of the mwpeer inference swarm, and only the
// composition root: Config says what the peer is; Start builds its parts in
// order (identity and libp2p host from p2p, the catalog and gossip from
// experts, round trips and the router from swarm, the backend from inference,
// shard hosting from inference/sharding, the infer service, the HTTP API from
// api) and Close, or a failed Start, stops them in reverse through one
// lifecycle stack. The mwpeer command is a thin shell around Start, and tests
// start peers exactly as it does.
//
// Behaviour lives in the packages: routing decisions in swarm and routing,
// the relay policy in p2p, what other peers did in trust.
package mwpeer
