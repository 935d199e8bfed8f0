package routing

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestCapacityClaimIsCapped(t *testing.T) {
	// Claiming 2^30 slots buys nothing over the cap: with 300 requests
	// running, the liar is as full as a peer of MaxCapacity with 300.
	liar := with(cand("liar"), func(c *Candidate) { c.Capacity, c.Load = 1<<30, 300 })
	capped := with(cand("capped"), func(c *Candidate) { c.Capacity, c.Load = MaxCapacity, 300 })
	if a, b := Score(liar, nil, Weights{}), Score(capped, nil, Weights{}); a.Parts != b.Parts {
		t.Fatalf("2^30 claimed %+v, %d claimed %+v", a.Parts, MaxCapacity, b.Parts)
	}
	if s := Score(liar, nil, Weights{}); s.Parts.Capacity != 0 || s.Parts.Load >= 0 {
		t.Fatalf("a liar over the cap keeps free capacity: %+v", s.Parts)
	}
	huge := with(cand("huge"), func(c *Candidate) { c.Load = 1 << 40 })
	if s := Score(huge, nil, Weights{}); s.Parts.Load != -2*DefaultWeights().Load {
		t.Fatalf("load past MaxLoad: %+v", s.Parts)
	}
}

func prefixed(peer, prefix string, rttMs int) Candidate {
	return with(cand(peer), func(c *Candidate) {
		c.Prefix = prefix
		rtt(msec(rttMs))(c)
	})
}

func peersOf(ss []Scored) string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Peer)
	}
	return strings.Join(out, ",")
}

func TestDiverseSpreadsOverPrefixes(t *testing.T) {
	// Three fast peers in one /24 and two slower ones elsewhere: K=3 takes
	// the best of the /24 and one of each other network.
	cands := []Candidate{
		prefixed("a1", "ip4/203.0.113.0/24", 1),
		prefixed("a2", "ip4/203.0.113.0/24", 2),
		prefixed("a3", "ip4/203.0.113.0/24", 3),
		prefixed("b", "ip4/198.51.100.0/24", 40),
		prefixed("c", "ip6/2001:db8:1::/48", 60),
	}
	d := Decide("hi", cands, Weights{}, 3, 3, nil)
	if got := peersOf(d.Chosen); got != "a1,b,c" {
		t.Fatalf("chosen %s, want a1,b,c (ranking %s)", got, peersOf(d.Candidates))
	}
	// Two networks for K=3: the third slot goes to the next best by rank.
	d = Decide("hi", cands[:4], Weights{}, 3, 3, nil)
	if got := peersOf(d.Chosen); got != "a1,a2,b" {
		t.Fatalf("chosen %s, want a1,a2,b", got)
	}
	// The local peer takes no network's slot.
	local := with(prefixed("self", "ip4/203.0.113.0/24", 0), func(c *Candidate) { c.Local = true })
	d = Decide("hi", append([]Candidate{local}, cands...), Weights{}, 3, 3, nil)
	if got := peersOf(d.Chosen); got != "self,a1,b" {
		t.Fatalf("chosen %s, want self,a1,b", got)
	}
	// Unknown prefixes share one.
	d = Decide("hi", []Candidate{prefixed("x", "", 1), prefixed("y", "", 2), prefixed("z", "ip4/192.0.2.0/24", 50)}, Weights{}, 3, 2, nil)
	if got := peersOf(d.Chosen); got != "x,z" {
		t.Fatalf("chosen %s, want x,z", got)
	}
}

func TestDiverseFallsBackOnOnePrefix(t *testing.T) {
	// A swarm on loopback: every peer in 127.0.0.0/24. Diversity is
	// impossible, so the choice is the ranking's.
	var cands []Candidate
	for i, p := range []string{"p1", "p2", "p3", "p4"} {
		cands = append(cands, prefixed(p, "ip4/127.0.0.0/24", i+1))
	}
	d := Decide("hi", cands, Weights{}, 3, 3, nil)
	if got := peersOf(d.Chosen); got != "p1,p2,p3" {
		t.Fatalf("chosen %s, want p1,p2,p3", got)
	}
	if got := Diverse(nil, 3); got == nil || len(got) != 0 {
		t.Fatalf("Diverse(nil) = %#v", got)
	}
}

func TestSourcesInJSON(t *testing.T) {
	c := with(cand("p"), func(c *Candidate) {
		c.Sources = Sources{RTT: SourceMeasured, Capacity: SourceReported, Load: SourceReported, Domains: SourceReported}
		rtt(msec(3))(c)
	})
	b, err := json.Marshal(Score(c, nil, Weights{}))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		RTT struct {
			Ms     *float64 `json:"ms"`
			Source string   `json:"source"`
		} `json:"rtt"`
		RTTMs   float64           `json:"rtt_ms"`
		Sources map[string]string `json:"sources"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.RTT.Ms == nil || *m.RTT.Ms != 3 || m.RTT.Source != SourceMeasured || m.RTTMs != 3 {
		t.Fatalf("rtt in JSON: %s", b)
	}
	if m.Sources["capacity"] != SourceReported || m.Sources["rtt"] != SourceMeasured {
		t.Fatalf("sources in JSON: %s", b)
	}
	unknown, _ := json.Marshal(Score(cand("q"), nil, Weights{}))
	if !strings.Contains(string(unknown), `"rtt":{"ms":null`) {
		t.Fatalf("unknown RTT: %s", unknown)
	}
}

func msec(n int) time.Duration { return time.Duration(n) * time.Millisecond }
