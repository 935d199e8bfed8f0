// Package api is the HTTP face of a peer: mwpeer's own JSON API under /api
// (status, peers, the RTT matrix), the OpenAI-compatible API under /v1,
// Prometheus metrics and the web dashboard. Every peer serves it; it holds no
// swarm logic of its own and asks a Node for everything it shows. Its Guard
// keeps web pages of other origins, and DNS-rebound names, from using it.
package api
