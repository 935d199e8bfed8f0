// Package p2p owns mwpeer's libp2p host: the persistent identity, the
// transports (TCP and QUIC with Noise or TLS), the resource manager and
// connection manager, the Kademlia DHT under mwpeer's own protocol prefix,
// GossipSub, NAT traversal (AutoNAT, circuit relay v2, DCUtR), reconnecting to
// bootstrap peers, RTT measurement by ping, and the relay policy that work
// sent to another peer obeys. Frames, remote errors and resource scopes of
// mwpeer's own protocols come from internal/wire.
//
// It knows nothing of HTTP, models or routing: packages above it give meaning
// to the bytes it carries.
package p2p
