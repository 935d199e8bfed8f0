package swarm

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/routing"
	"github.com/mwpeer/mwpeer/trust"
)

// TestReportedSpeedStandsInUntilMeasured: what a peer announces of its
// engine's speed is used, labelled reported, until this peer timed a call
// of its own; the reported time to a first token is then kept beside the
// measured one (routing weighs it only against few calls).
func TestReportedSpeedStandsInUntilMeasured(t *testing.T) {
	self, other := newID(t), newID(t)
	e := entry(other, "m")
	e.Models[0].TTFTMs, e.Models[0].TPS = 80, 50
	store := trust.New(trust.Config{})
	r := New(Config{Self: self, Catalog: catalog{e}, Trust: store})
	c := candidateOf(t, r, other.String())
	if c.ReportedTTFT != 80*time.Millisecond || c.DecodeTPS != 50 || c.TTFT != 0 ||
		c.Sources.TTFT != routing.SourceReported || c.Sources.DecodeTPS != routing.SourceReported {
		t.Fatalf("unmeasured: %+v", c.Candidate)
	}
	store.Observe(other.String(), trust.Event{Kind: trust.Success, Model: "m", TTFT: 900 * time.Millisecond, Tokens: 9, Duration: 1900 * time.Millisecond})
	c = candidateOf(t, r, other.String())
	if c.ReportedTTFT != 80*time.Millisecond || c.TTFT != 900*time.Millisecond || c.Calls != 1 || c.DecodeTPS != 8 ||
		c.Sources.TTFT != routing.SourceMeasured || c.Sources.DecodeTPS != routing.SourceMeasured {
		t.Fatalf("measured: %+v", c.Candidate)
	}
}

// TestDecisionsProbeTheBestUnmeasured: after a decision the router asks to
// measure its best-ranked candidates whose round trip is only predicted, at
// the addresses they announce.
func TestDecisionsProbeTheBestUnmeasured(t *testing.T) {
	self := newID(t)
	var cat catalog
	rtts := map[string]geo.RTT{}
	for i := range 2*ProbeTop + 2 {
		id := newID(t)
		e := entry(id, "m")
		e.Addrs = []string{fmt.Sprintf("/ip4/203.0.113.%d/tcp/4001", i+1)}
		cat = append(cat, e)
		src := geo.SourceCoordinates
		if i%2 == 0 {
			src = geo.SourceMeasured
		}
		rtts[id.String()] = geo.RTT{Value: time.Duration(10+i) * time.Millisecond, Source: src}
	}
	var asked []string
	r := New(Config{Self: self, Catalog: cat, RTT: func(to string) geo.RTT { return rtts[to] }, Probe: func(ais []peer.AddrInfo) {
		for _, ai := range ais {
			asked = append(asked, ai.ID.String())
			if len(ai.Addrs) != 1 {
				t.Errorf("probe of %s without the address it announces: %v", ai.ID, ai.Addrs)
			}
		}
	}})
	d, err := r.Route(context.Background(), query("m"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, c := range d.Candidates {
		if c.Sources.RTT != routing.SourceMeasured && len(want) < ProbeTop {
			want = append(want, c.Peer)
		}
	}
	if len(want) != ProbeTop || !slices.Equal(asked, want) {
		t.Fatalf("probed %v, want the %d best unmeasured %v", asked, ProbeTop, want)
	}
}

// TestProbesTheNearestByLocation: a server whose coordinates predict it far
// (ranked last) but that announces the nearest location is probed, in the
// last of the ProbeTop slots.
func TestProbesTheNearestByLocation(t *testing.T) {
	self := newID(t)
	var cat catalog
	rtts := map[string]geo.RTT{}
	var near string
	for i := range 2 * ProbeTop {
		id := newID(t)
		e := entry(id, "m")
		e.Location = &geo.Point{Lat: 10 + float64(i), Lon: 100} // 1,100 km and more away
		rtt := time.Duration(20+i) * time.Millisecond
		if i == 2*ProbeTop-1 {
			e.Location = &geo.Point{Lat: 0.1, Lon: 0.1} // 16 km away, predicted the farthest
			rtt = 300 * time.Millisecond
			near = id.String()
		}
		cat = append(cat, e)
		rtts[id.String()] = geo.RTT{Value: rtt, Source: geo.SourceCoordinates}
	}
	var asked []string
	r := New(Config{Self: self, Catalog: cat, RTT: func(to string) geo.RTT { return rtts[to] },
		Local: Local{Location: &geo.Point{Lat: 0, Lon: 0}},
		Probe: func(ais []peer.AddrInfo) {
			for _, ai := range ais {
				asked = append(asked, ai.ID.String())
			}
		}})
	d, err := r.Route(context.Background(), query("m"))
	if err != nil {
		t.Fatal(err)
	}
	if last := d.Candidates[len(d.Candidates)-1].Peer; last != near {
		t.Fatalf("the near server predicted far ranks %d, not last", slices.IndexFunc(d.Candidates, func(s routing.Scored) bool { return s.Peer == near })+1)
	}
	var want []string
	for _, c := range d.Candidates[:ProbeTop-1] {
		want = append(want, c.Peer)
	}
	want = append(want, near)
	if !slices.Equal(asked, want) {
		t.Fatalf("probed %v, want the %d best-ranked and the nearest %v", asked, ProbeTop-1, want)
	}
}
