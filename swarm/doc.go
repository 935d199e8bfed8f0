// Package swarm routes this peer's prompts across the swarm: it lists the
// candidates for a request (this peer, catalog entries serving the model, DHT
// providers beyond the gossip horizon), lets package routing score them and
// pick K, turns the choice into dispatch targets that obey the relay policy,
// and feeds what each expert did into the trust store, which routing reads
// back on the next prompt.
//
// It depends on narrow interfaces (a catalog reader, an RTT estimate, a
// provider lookup, a remote caller), so it is tested without a network; the
// libp2p implementations of those live next to them (HostRemote here, the
// catalog in experts, the matrix in geo). It knows nothing of HTTP: package
// api calls it through the Query and Answer types defined here.
package swarm
