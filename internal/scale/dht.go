package scale

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"time"
)

// Lookups summarises simulated DHT provider lookups in one swarm.
type Lookups struct {
	N                  int
	MeanHops, P90Hops  float64
	P50, P90           time.Duration
	RoutingTableLength float64 // mean contacts per routing table
}

// kad is a Kademlia network of random 64-bit IDs (enough bits for 10^5
// peers: two share a 40-bit prefix with odds of 10^-2). A routing table is
// not stored: bucket i of node x holds k nodes drawn, by a generator
// seeded from (x, i), from those sharing exactly x's first i bits, which in
// sorted order are one range, so a table costs nothing until it is read.
type kad struct {
	ids      []uint64 // sorted
	k, alpha int
	seed     uint64
}

func newKad(n, k, alpha int, seed uint64) *kad {
	r := rand.New(rand.NewPCG(seed, 1))
	seen := make(map[uint64]bool, n)
	ids := make([]uint64, 0, n)
	for len(ids) < n {
		if id := r.Uint64(); !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return &kad{ids: ids, k: k, alpha: alpha, seed: seed}
}

// span is the sorted range of IDs whose first bits equal prefix's first
// bits bits.
func (d *kad) span(prefix uint64, bitsN int) (int, int) {
	if bitsN == 0 {
		return 0, len(d.ids)
	}
	mask := ^uint64(0) << (64 - bitsN)
	lo := prefix & mask
	hi := lo | ^mask
	i := sort.Search(len(d.ids), func(j int) bool { return d.ids[j] >= lo })
	j := sort.Search(len(d.ids), func(j int) bool { return d.ids[j] > hi })
	return i, j
}

// table returns x's routing table.
func (d *kad) table(x uint64) []uint64 {
	var out []uint64
	for i := 0; i < 64; i++ {
		// Bucket i: the first i bits of x, then bit i flipped.
		p := x ^ (uint64(1) << (63 - i))
		lo, hi := d.span(p, i+1)
		if hi-lo == 0 {
			if lo2, hi2 := d.span(x, i+1); hi2-lo2 <= 1 {
				break // x alone below here: no deeper buckets
			}
			continue
		}
		if hi-lo <= d.k {
			out = append(out, d.ids[lo:hi]...)
			continue
		}
		r := rand.New(rand.NewPCG(x^d.seed, uint64(i)))
		picked := make(map[int]bool, d.k)
		for len(picked) < d.k {
			if j := r.IntN(hi - lo); !picked[j] {
				picked[j] = true
				out = append(out, d.ids[lo+j])
			}
		}
	}
	return out
}

func closest(ids []uint64, t uint64, n int) []uint64 {
	slices.SortFunc(ids, func(a, b uint64) int {
		da, db := a^t, b^t
		switch {
		case da < db:
			return -1
		case da > db:
			return 1
		}
		return 0
	})
	ids = slices.Compact(ids)
	if len(ids) > n {
		ids = ids[:n]
	}
	return ids
}

// lookup finds providers of t from node from, as go-libp2p-kad-dht does:
// rounds of α queries to the closest peers not yet asked; a provider record
// lives on the k peers closest to t, so the lookup ends when one of them is
// asked. It returns the rounds (hops) taken.
func (d *kad) lookup(from, t uint64) int {
	// The holders: the k closest in the network. All of them share the
	// longest prefix with t that at least k IDs share.
	cpl := 64
	for b := 1; b <= 64; b++ {
		l, h := d.span(t, b)
		if h-l < d.k {
			cpl = b - 1
			break
		}
	}
	l, h := d.span(t, cpl)
	holders := map[uint64]bool{}
	for _, id := range closest(slices.Clone(d.ids[l:h]), t, d.k) {
		holders[id] = true
	}
	if holders[from] {
		return 0
	}
	asked := map[uint64]bool{from: true}
	short := closest(d.table(from), t, d.k)
	for round := 1; round < 64; round++ {
		var next []uint64
		for _, c := range short {
			if !asked[c] {
				next = append(next, c)
				if len(next) == d.alpha {
					break
				}
			}
		}
		if len(next) == 0 {
			return round // exhausted: the holders were in no table (does not happen)
		}
		for _, c := range next {
			asked[c] = true
			if holders[c] {
				return round
			}
			short = append(short, closest(d.table(c), t, d.k)...)
		}
		short = closest(short, t, d.k)
	}
	return 64
}

// SimulateLookups runs lookups provider lookups for random keys from random
// peers in a swarm of n, each hop costing p.HopRTTs round trips drawn from
// the RTT distribution (a round waits for the slowest of its α queries).
func (p Params) SimulateLookups(n, lookups int, seed uint64) Lookups {
	d := newKad(n, p.K, p.Alpha, seed)
	r := rand.New(rand.NewPCG(seed, 2))
	rtt := func() float64 {
		return p.RTTMedian.Seconds() * math.Exp(p.RTTSigma*r.NormFloat64())
	}
	hops := make([]float64, lookups)
	lat := make([]float64, lookups)
	var table float64
	for i := range lookups {
		from := d.ids[r.IntN(n)]
		if i < 20 {
			table += float64(len(d.table(from))) / 20
		}
		h := d.lookup(from, r.Uint64())
		hops[i] = float64(h)
		for range h {
			slowest := 0.0
			for range p.Alpha {
				slowest = max(slowest, rtt()*p.HopRTTs)
			}
			lat[i] += slowest
		}
	}
	slices.Sort(hops)
	slices.Sort(lat)
	var sum float64
	for _, h := range hops {
		sum += h
	}
	q := func(xs []float64, f float64) float64 { return xs[int(f*float64(len(xs)-1))] }
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	return Lookups{N: n, MeanHops: sum / float64(lookups), P90Hops: q(hops, 0.9),
		P50: sec(q(lat, 0.5)), P90: sec(q(lat, 0.9)), RoutingTableLength: table}
}
