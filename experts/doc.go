// Package experts owns what the swarm serves and how peers tell each other:
// the signed announcement a peer gossips about itself, the validation every
// received announcement goes through, the catalog (the swarm as this peer
// sees it), the catch-up protocol that hands a newcomer the catalog at once,
// and the DHT content keys that make a domain or model findable beyond the
// gossip horizon.
//
// It carries no prompts: inference traffic never travels over gossip.
package experts
