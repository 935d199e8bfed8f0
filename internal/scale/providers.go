package scale

import (
	"math"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/mwpeer/mwpeer/experts"
)

// What go-libp2p-kad-dht v0.36.0 does with the providers of one key
// (records/providers_manager.go, handlers.go, routing.go):
//   - a provider record is stored, per key and provider, on each of the k
//     (20) DHT peers closest to the key, for 48 hours; nothing caps the
//     providers of one key, so they are every peer that provides it;
//   - handleGetProviders answers with all the records it holds for the key
//     (and its 20 closest peers) in one message, whatever the asker's
//     count; FindProvidersAsync's count only stops the lookup early;
//   - a message is read with a limit of network.MessageSizeMax (4 MiB,
//     msgio.NewVarintReaderSize): a larger answer fails as a whole, so the
//     asker gets none of its providers from that holder.
//
// ProviderPoint is what that costs for one name at one size.
type ProviderPoint struct {
	N    int
	Bits int // the announcement shard width (0: unsalted keys)
	// Keys is the DHT keys one name is provided under (2^Bits);
	// Records the provider records each of a key's k holders keeps for a
	// name every peer provides (domain/general): N unsalted, a shard's
	// peers salted. MeanRecords is the records for that name per DHT peer
	// averaged over the swarm (k, salted or not: salting spreads them, it
	// does not add any).
	Keys, Records int
	MeanRecords   float64
	// Answer is the bytes of one holder's GET_PROVIDERS answer for such a
	// key; TooLarge says it passes network.MessageSizeMax, which the asker
	// refuses to read.
	Answer   int
	TooLarge bool
	// FewRecords is what the holders of a salted name's unsalted key keep
	// at widths > 0: its providers while they are fewer than Few
	// (experts.DefaultFewProviders), plus those that checked at once.
	FewRecords int
	// A rare model, served by one peer in another shard than the asker's
	// (its own shard's would be in its catalog): the keys a lookup tries
	// on average, the chance it is found, the Kademlia hops in all (keys
	// × hops a lookup), and the lookup's time at the median latency of
	// one. experts.Finder looks it up under the unsalted key, where its
	// server put it: one key. The Salted* figures are the same lookup
	// were the rare model under its salted key only (the design without
	// the unsalted key, or with its records lost): Parallel keys at a time
	// in a random order, none started once it is found, MaxKeys at most.
	RareKeys, RareFound, RareHops float64
	RareTime                      time.Duration
	SaltedKeys, SaltedFound       float64
	SaltedHops                    float64
	SaltedTime                    time.Duration
	// PopularKeys: a name with more providers in every shard than a lookup
	// wants is found under the first key tried.
	PopularKeys int
}

// Providers models the DHT side of one name in a swarm of n: its keys,
// the records their holders keep, the answers they send and what a
// lookup for a rare model costs, at the automatic width (unsalted when
// SplitAbove is 0). l is the simulated lookup of one key at n.
func (p Params) Providers(n int, l Lookups) ProviderPoint {
	bits := p.AutoWidth(n, 0)
	pt := ProviderPoint{N: n, Bits: bits, Keys: 1 << bits, Records: members(n, bits), PopularKeys: 1}
	pt.MeanRecords = float64(p.K) // n providers × k holders over n DHT peers
	pt.Answer = p.Sizes.ProviderAnswerBase + pt.Records*p.Sizes.ProviderRecord
	pt.TooLarge = pt.Answer > p.MessageSizeMax
	pt.FewRecords = pt.Records
	if bits > 0 {
		pt.FewRecords = min(n, p.FewProviders)
	}
	pt.RareKeys, pt.RareFound, pt.RareHops, pt.RareTime = 1, 1, l.MeanHops, l.P50
	keys, found := p.rareKeys(bits)
	pt.SaltedKeys, pt.SaltedFound = keys, found
	pt.SaltedHops = keys * l.MeanHops
	rounds := math.Ceil(keys / float64(p.LookupParallel))
	pt.SaltedTime = time.Duration(rounds * float64(l.P50))
	return pt
}

// rareKeys is the keys a lookup tries, on average, for a model one peer
// serves in a uniformly random shard other than the asker's, and the
// chance it is found: at width 0, one key. Otherwise the serving shard's
// key is the i-th of the others in a random order (i uniform); the lookup
// starts keys Parallel at a time and none once it is found, so it starts
// up to i+Parallel-1, and MaxKeys at most when it is not found.
func (p Params) rareKeys(bits int) (keys, found float64) {
	if bits == 0 {
		return 1, 1
	}
	others := 1<<bits - 1
	limit := min(p.LookupKeys, others)
	var sum float64
	for i := 1; i <= limit; i++ {
		sum += float64(min(i+p.LookupParallel-1, limit))
	}
	sum += float64((others - limit) * limit)
	return sum / float64(others), float64(limit) / float64(others)
}

// providerDefaults are the Finder's and kad-dht's values the provider
// model takes.
func providerDefaults(p *Params) {
	p.LookupKeys, p.LookupParallel = experts.DefaultLookupKeys, experts.DefaultLookupParallel
	p.FewProviders = experts.DefaultFewProviders
	p.MessageSizeMax = network.MessageSizeMax
}
