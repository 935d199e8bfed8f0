// Package mwpeer is one peer of the mwpeer inference swarm. Config says what
// it is; Start wires the libp2p host, DHT and gossip (p2p), the catalog and
// announcements (experts), RTT estimates (geo), the local backend
// (inference) and the HTTP API (api), and owns their lifecycles: Close
// undoes all of it. The mwpeer command is a thin shell around Start, and
// tests start peers exactly as it does.
//
// Prompts to an expert behind NAT follow the relay policy in relayed.go:
// wait briefly for hole punching to make the connection direct, else prefer
// another expert, else answer over the relay within its limits.
package mwpeer
