// Package scale is a model of what one peer pays as the swarm grows from
// tens to 100,000 peers: gossip bytes (full announcements and beats at the
// adaptive interval, GossipSub's duplicate copies and IHAVE gossip),
// catalog entries and memory, catch-up bytes per join, and DHT provider
// lookups (hops and latency).
//
// It runs the real code where it can rather than copying numbers: the
// interval comes from experts.AdaptInterval with mwpeer.DefaultConfig's
// values, GossipSub's parameters from p2p.GossipSubParams, message and
// control sizes from sealing real announcements and sizing real GossipSub
// protobufs, and bytes per catalog entry from filling an experts.Catalog
// and reading runtime.MemStats. The DHT part simulates Kademlia lookups
// (k-buckets, α parallel queries) over up to 100,000 random IDs; the
// provider records of one name, the size of kad-dht's GET_PROVIDERS
// answer (its real protobuf) and the keys a lookup tries come from the
// announcement shard width experts' automatic width would reach
// (Params.AutoWidth) and the salted keys of experts.SaltedKey.
//
// It is a model, not a network: it does no I/O and starts no peers. Its
// tests check it against the swarm measured on loopback (README,
// "Measured") and say where it diverges.
package scale
