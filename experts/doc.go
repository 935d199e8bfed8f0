// Package experts owns what the swarm serves and how peers tell each other:
// the signed announcement a peer gossips about itself, the validation every
// received announcement goes through, the catalog (the swarm as this peer
// sees it), catch-up that hands a newcomer the catalog at once (whom to ask
// and whom to answer, and what to accept; the /mwpeer/catalog/1.0.0 wire
// exchange is package catchup's), and the DHT content keys that make a
// domain or model findable beyond the gossip horizon.
//
// It carries no prompts: inference traffic never travels over gossip.
package experts
