package experts

import (
	"fmt"
	"testing"
	"time"
)

// testAuto is the policy of the width-decision tests: the thresholds the
// cases below were written for (split above 2,000 authors per shard, merge
// below 250; the defaults are now 1,200 and 250).
var testAuto = AutoShard{SplitAbove: 2000, MergeBelow: 250, Dwell: 10 * time.Minute}.withDefaults()

// TestWidthDecision: the width follows this peer's count of its shard with
// hysteresis, one bit at a time and at most once per dwell, within
// 0..MaxAnnounceShardBits; a majority of voters is followed where the
// count is indifferent, and joined at once by a new peer.
func TestWidthDecision(t *testing.T) {
	long := testAuto.Dwell
	for _, tc := range []struct {
		name string
		v    widthView
		want int
	}{
		{"a small swarm stays unsharded", widthView{bits: 0, authors: 40, since: long}, 0},
		{"past the split threshold: one more bit", widthView{bits: 0, authors: 2001, since: long}, 1},
		{"far past it: still one bit", widthView{bits: 2, authors: 50000, since: long}, 3},
		{"under the merge threshold: one bit less", widthView{bits: 3, authors: 249, since: long}, 2},
		{"nearly empty: still one bit less", widthView{bits: 5, authors: 1, since: long}, 4},
		{"between the thresholds: kept (just split)", widthView{bits: 1, authors: 1001, since: long}, 1},
		{"between the thresholds: kept (just merged)", widthView{bits: 1, authors: 498, since: long}, 1},
		{"within the dwell: kept", widthView{bits: 0, authors: 5000, since: long - time.Second}, 0},
		{"within the dwell: no merge", widthView{bits: 2, authors: 3, since: time.Second}, 2},
		{"at the widest: no split", widthView{bits: MaxAnnounceShardBits, authors: 1 << 20, since: long}, MaxAnnounceShardBits},
		{"unsharded: no merge", widthView{bits: 0, authors: 1, since: long}, 0},
		{"a majority one bit wider, count indifferent: followed", widthView{bits: 2, authors: 1900, since: long, votes: map[int]int{3: 7, 2: 2}}, 3},
		{"a majority far wider: one bit towards it", widthView{bits: 2, authors: 1900, since: long, votes: map[int]int{6: 9}}, 3},
		{"a majority narrower: one bit towards it", widthView{bits: 3, authors: 300, since: long, votes: map[int]int{2: 5, 3: 1}}, 2},
		{"a majority within the dwell: kept", widthView{bits: 2, authors: 1900, since: time.Minute, votes: map[int]int{3: 9}}, 2},
		{"two thirds is not more than two thirds", widthView{bits: 2, authors: 1900, since: long, votes: map[int]int{3: 6, 2: 3}}, 2},
		{"too few voters", widthView{bits: 2, authors: 1900, since: long, votes: map[int]int{3: 2}}, 2},
		{"a majority the count contradicts: not followed", widthView{bits: 1, authors: 1100, since: long, votes: map[int]int{0: 9}}, 1},
		{"a majority into a too thin shard: not followed", widthView{bits: 4, authors: 400, since: long, votes: map[int]int{5: 9}}, 4},
		{"a new peer joins the majority at once", widthView{bits: 0, authors: 1, since: time.Second, fresh: true, votes: map[int]int{5: 4}}, 5},
		{"a new peer with no majority waits", widthView{bits: 0, authors: 1, since: time.Second, fresh: true, votes: map[int]int{5: 2, 4: 2}}, 0},
	} {
		got, why := testAuto.decide(tc.v)
		if got != tc.want {
			t.Errorf("%s: %+v gives width %d (%q), want %d", tc.name, tc.v, got, why, tc.want)
		}
		if (got != tc.v.bits) != (why != "") {
			t.Errorf("%s: width %d from %d with reason %q", tc.name, got, tc.v.bits, why)
		}
	}
}

// swarmWidth runs the decisions of one peer of a swarm of n honest peers
// over steps dwells, with votes(bits) the votes it sees at each, and
// returns the widths it went through.
func swarmWidth(n, bits, steps int, votes func(bits int) map[int]int) []int {
	trail := []int{bits}
	for range steps {
		next, _ := testAuto.decide(widthView{bits: bits, authors: max(n>>bits, 1), since: testAuto.Dwell, votes: votes(bits)})
		if next != bits {
			bits = next
			trail = append(trail, bits)
		}
	}
	return trail
}

// TestWidthDoesNotFlap: a swarm that grows splits once per doubling past
// the threshold and then keeps its width as long as its size stays, and
// a swarm that shrinks to a size between the thresholds does not merge.
func TestWidthDoesNotFlap(t *testing.T) {
	none := func(int) map[int]int { return nil }
	for _, tc := range []struct {
		peers, from int
		want        string
	}{
		{1500, 0, "[0]"},
		{2001, 0, "[0 1]"},
		{20000, 0, "[0 1 2 3 4]"},              // 1,250 per shard at 4 bits
		{20000, 7, "[7 6]"},                    // 156 per shard at 7 bits, 312 at 6
		{100, 1, "[1 0]"},                      // 50 per shard
		{300000, 16, "[16 15 14 13 12 11 10]"}, // 292 per shard at 10 bits
	} {
		got := fmt.Sprint(swarmWidth(tc.peers, tc.from, 50, none))
		if got != tc.want {
			t.Errorf("%d peers from %d bits: widths %s, want %s", tc.peers, tc.from, got, tc.want)
		}
	}
}

// TestSybilVotesAreBounded: voters who all claim the widest width move an
// honest peer only while its own count stays between the thresholds (here
// from 3 to 5 bits in a swarm of 8,000, 250 per shard), one bit per dwell,
// never to 16 bits; and they cannot make it narrower than its count
// allows either.
func TestSybilVotesAreBounded(t *testing.T) {
	wide := func(int) map[int]int { return map[int]int{MaxAnnounceShardBits: 1000} }
	if got := fmt.Sprint(swarmWidth(8000, 3, 50, wide)); got != "[3 4 5]" {
		t.Errorf("Sybil voters for 16 bits moved a peer through %s, want [3 4 5]", got)
	}
	narrow := func(int) map[int]int { return map[int]int{0: 1000} }
	if got := fmt.Sprint(swarmWidth(8000, 3, 50, narrow)); got != "[3 2]" {
		t.Errorf("Sybil voters for 0 bits moved a peer through %s, want [3 2]", got)
	}
	// Within one dwell nothing moves at all, whatever the vote.
	if got, _ := testAuto.decide(widthView{bits: 3, authors: 1000, since: testAuto.Dwell / 2, votes: map[int]int{4: 1000}}); got != 3 {
		t.Errorf("a vote moved the width within the dwell to %d", got)
	}
}

// TestSybilFloodOfOnePrefixCannotSplit: a flood of fresh identities from
// one network prefix enters the catalog up to the prefix cap only, far
// under the split threshold, so the estimate that would split stays put.
func TestSybilFloodOfOnePrefixCannotSplit(t *testing.T) {
	cat := NewCatalog("self", 0)
	now := time.Now()
	for i := range 500 {
		key, id := newKey(t)
		a := sample(id, now)
		a.Addrs = []string{fmt.Sprintf("/ip4/203.0.113.%d/tcp/4001", i%250)}
		env, err := Seal(&a, key)
		if err != nil {
			t.Fatal(err)
		}
		opened, err := Open(env, now)
		if err != nil {
			t.Fatal(err)
		}
		cat.Apply(opened, env, now)
	}
	if cat.Len() > DefaultPrefixCap {
		t.Fatalf("the catalog took %d of one /24, cap %d", cat.Len(), DefaultPrefixCap)
	}
	if got, why := testAuto.decide(widthView{bits: 0, authors: cat.Len() + 1, since: testAuto.Dwell}); got != 0 {
		t.Fatalf("a flood of one prefix split the width (%s)", why)
	}
}

// TestAutoShardNeedsHysteresis: thresholds that would let a merge split
// again are refused.
func TestAutoShardNeedsHysteresis(t *testing.T) {
	for _, tc := range []struct {
		a  AutoShard
		ok bool
	}{
		{AutoShard{}, true},
		{AutoShard{SplitAbove: 5, MergeBelow: 2}, true},
		{AutoShard{SplitAbove: 4, MergeBelow: 2}, false},
		{AutoShard{SplitAbove: 100, MergeBelow: 60}, false},
		{AutoShard{Dwell: -time.Second}, false},
	} {
		if err := tc.a.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.a, err)
		}
	}
}
