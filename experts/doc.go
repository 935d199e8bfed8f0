// Package experts owns what the swarm serves and how peers tell each other:
// the signed announcement a peer gossips about itself, the validation every
// received announcement goes through, the catalog (the swarm as this peer
// sees it), catch-up that hands a newcomer the catalog at once (whom to ask
// and whom to answer, and what to accept; the /mwpeer/catalog/1.0.0 wire
// exchange is package catchup's), and the DHT content keys that make a
// domain or model findable beyond the gossip horizon.
//
// Keys cost nothing, so what a stranger can make this peer hold or forward
// is bounded by what is harder to fake: the catalog keeps peers this one is
// connected to or has measured over any it only heard of, and a network
// prefix's strangers up to a cap; the validator rate-limits each author,
// leaves included, and forgets authors quickly; catch-up is limited per
// requester and per prefix; and the announce topic's GossipSub score
// parameters (score.go) make forwarding rejected announcements cost a
// neighbour its standing.
//
// It carries no prompts: inference traffic never travels over gossip.
package experts
