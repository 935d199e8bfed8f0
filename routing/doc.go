// Package routing decides which experts answer a prompt. It classifies the
// prompt's domains, scores candidates from a snapshot of what the swarm
// serves (domain relevance, predicted RTT, measured speed, free capacity,
// distance, recent failures) and picks K of them. It is pure: no I/O, no
// clocks, and nothing of libp2p; callers turn catalog entries into
// Candidates.
package routing
