package swarm

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/routing"
	"github.com/mwpeer/mwpeer/trust"
)

func candidateOf(t *testing.T, r *Router, peer string) Candidate {
	t.Helper()
	cs, err := r.Candidates(context.Background(), query("m"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Peer == peer {
			return c
		}
	}
	t.Fatalf("%s is no candidate", peer)
	return Candidate{}
}

func TestReportedRowsAreNotSelfRTT(t *testing.T) {
	self, liar := newID(t), newID(t)
	m := geo.NewMatrix(self.String())
	// The liar's row says it is 1 µs from us.
	m.SetRow(liar.String(), map[string]time.Duration{self.String(): time.Microsecond})
	r := New(Config{Self: self, Catalog: catalog{entry(liar, "m")}, RTT: func(to string) geo.RTT { return m.Estimate(self.String(), to) }})
	c := candidateOf(t, r, liar.String())
	if c.RTTKnown || c.Sources.RTT != routing.SourceUnknown {
		t.Fatalf("RTT to the liar from its own row: %v known %v source %q", c.RTT, c.RTTKnown, c.Sources.RTT)
	}
	// Even an RTT function that hands back a report is not believed.
	r = New(Config{Self: self, Catalog: catalog{entry(liar, "m")}, RTT: func(string) geo.RTT {
		return geo.RTT{Value: time.Microsecond, Source: geo.SourceReported}
	}})
	if c := candidateOf(t, r, liar.String()); c.RTTKnown {
		t.Fatalf("a reported RTT reached routing: %+v", c.Candidate)
	}
	// Our own ping is.
	m.SetRow(self.String(), map[string]time.Duration{liar.String(): 150 * time.Millisecond})
	r = New(Config{Self: self, Catalog: catalog{entry(liar, "m")}, RTT: func(to string) geo.RTT { return m.Estimate(self.String(), to) }})
	if c := candidateOf(t, r, liar.String()); !c.RTTKnown || c.RTT != 150*time.Millisecond || c.Sources.RTT != routing.SourceMeasured {
		t.Fatalf("measured RTT: %+v", c.Candidate)
	}
}

func TestClaimsAreCappedAndLabelled(t *testing.T) {
	self, liar := newID(t), newID(t)
	e := entry(liar, "m")
	e.Capacity, e.Load = 1<<30, 0
	e.Location = &geo.Point{Lat: 1, Lon: 1}
	r := New(Config{Self: self, Catalog: catalog{e}, Local: Local{Location: &geo.Point{Lat: 2, Lon: 2}}})
	c := candidateOf(t, r, liar.String())
	if c.Capacity != routing.MaxCapacity {
		t.Fatalf("capacity %d, want the cap %d", c.Capacity, routing.MaxCapacity)
	}
	want := routing.Sources{RTT: routing.SourceUnknown, TTFT: routing.SourceUnknown, DecodeTPS: routing.SourceUnknown,
		Capacity: routing.SourceReported, Load: routing.SourceReported, Domains: routing.SourceReported,
		Distance: routing.SourceReported, Failures: routing.SourceMeasured}
	if c.Sources != want {
		t.Fatalf("sources %+v, want %+v", c.Sources, want)
	}
}

func TestBusyAnswerBeliesFreeCapacity(t *testing.T) {
	self, liar, honest := newID(t), newID(t), newID(t)
	l, h := entry(liar, "m"), entry(honest, "m")
	l.Capacity, l.Load = 1<<30, 0
	rem := &remote{answer: map[peer.ID]func(func(inference.Chunk) error) (inference.Final, error){
		liar:   fails(inference.ErrBusy),
		honest: tokens(3),
	}}
	r := New(Config{Self: self, Catalog: catalog{l, h}, Remote: rem})
	if c := candidateOf(t, r, liar.String()); c.Load != 0 || c.Sources.Load != routing.SourceReported {
		t.Fatalf("before any call: %+v", c.Candidate)
	}
	// K=2: both are asked, the liar answers busy.
	if _, err := r.Complete(context.Background(), Query{Request: query("m").Request, K: 2}, func(string, inference.Chunk) error { return nil }); err != nil {
		t.Fatal(err)
	}
	c := candidateOf(t, r, liar.String())
	if c.Load != c.Capacity || c.Sources.Load != routing.SourceMeasured {
		t.Fatalf("after a busy answer the claim of free slots stands: load %d of %d (%s)", c.Load, c.Capacity, c.Sources.Load)
	}
	d, err := r.Route(context.Background(), query("m"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Chosen[0].Peer != honest.String() {
		t.Fatalf("chosen %s after the liar answered busy; ranking %+v", d.Chosen[0].Peer, d.Candidates)
	}
	// It is forgiven after BusyMemory.
	r.busy.now = func() time.Time { return time.Now().Add(BusyMemory + time.Second) }
	if c := candidateOf(t, r, liar.String()); c.Load != 0 {
		t.Fatalf("busy remembered past BusyMemory: load %d", c.Load)
	}
}

func TestBusyLogIsBounded(t *testing.T) {
	b := newBusyLog(nil)
	for i := range maxBusy + 10 {
		b.mark(string(rune(i + 1000)))
	}
	if len(b.at) > maxBusy {
		t.Fatalf("%d remembered, cap %d", len(b.at), maxBusy)
	}
}

func TestReportedTimingsDoNotFeedSpeed(t *testing.T) {
	self, liar := newID(t), newID(t)
	const delay = 60 * time.Millisecond
	rem := &remote{answer: map[peer.ID]func(func(inference.Chunk) error) (inference.Final, error){
		liar: func(emit func(inference.Chunk) error) (inference.Final, error) {
			time.Sleep(delay)
			for range 3 {
				if err := emit(inference.Chunk{Text: "t "}); err != nil {
					return inference.Final{}, err
				}
			}
			// It reports a first token after a nanosecond and a million tokens.
			return inference.Final{FinishReason: inference.FinishStop, CompletionTokens: 1e6, TTFT: time.Nanosecond, Duration: time.Nanosecond}, nil
		},
	}}
	store := trust.New(trust.Config{})
	r := New(Config{Self: self, Catalog: catalog{entry(liar, "m")}, Remote: rem, Trust: store})
	if _, err := r.Complete(context.Background(), query("m"), func(string, inference.Chunk) error { return nil }); err != nil {
		t.Fatal(err)
	}
	p := store.Perf(liar.String(), "m")
	if p.TTFT < delay {
		t.Fatalf("TTFT %v: the expert's own report was taken (measured at least %v)", p.TTFT, delay)
	}
	if c := candidateOf(t, r, liar.String()); c.Sources.TTFT != routing.SourceMeasured || c.TTFT != p.TTFT {
		t.Fatalf("candidate TTFT %v (%s), measured %v", c.TTFT, c.Sources.TTFT, p.TTFT)
	}
}

func TestPrefixFromConnectionThenAnnouncedAddrs(t *testing.T) {
	self, a, b, c := newID(t), newID(t), newID(t), newID(t)
	ea, eb, ec := entry(a, "m"), entry(b, "m"), entry(c, "m")
	ea.Addrs = []string{"/ip4/127.0.0.1/tcp/1", "/ip4/203.0.113.7/tcp/1"}
	eb.Addrs = []string{"/ip4/203.0.113.9/tcp/1"}
	ec.Addrs = []string{"/ip4/192.168.1.2/tcp/1"}
	r := New(Config{Self: self, Catalog: catalog{ea, eb, ec}, ConnPrefix: func(id string) string {
		if id == b.String() {
			return "ip4/198.51.100.0/24" // where it really connected from
		}
		return ""
	}})
	for peer, want := range map[string]string{a.String(): "ip4/203.0.113.0/24", b.String(): "ip4/198.51.100.0/24", c.String(): "ip4/192.168.1.0/24"} {
		if got := candidateOf(t, r, peer).Prefix; got != want {
			t.Errorf("prefix %q, want %q", got, want)
		}
	}
	if got := r.prefix("x", []ma.Multiaddr{ma.StringCast("/dns4/example.com/tcp/1")}); got != "" {
		t.Fatalf("prefix of a DNS address: %q", got)
	}
}

func TestChosenExpertsSpreadOverPrefixes(t *testing.T) {
	self := newID(t)
	ids := [3]peer.ID{newID(t), newID(t), newID(t)}
	var cat catalog
	for i, addr := range []string{"/ip4/203.0.113.1/tcp/1", "/ip4/203.0.113.2/tcp/1", "/ip4/198.51.100.1/tcp/1"} {
		e := entry(ids[i], "m")
		e.Addrs = []string{addr}
		cat = append(cat, e)
	}
	// The two in 203.0.113.0/24 are the fastest.
	rtts := map[string]time.Duration{ids[0].String(): time.Millisecond, ids[1].String(): 2 * time.Millisecond, ids[2].String(): 80 * time.Millisecond}
	r := New(Config{Self: self, Catalog: cat, RTT: func(to string) geo.RTT { return geo.RTT{Value: rtts[to], Source: geo.SourceMeasured} }})
	d, err := r.Route(context.Background(), Query{Request: query("m").Request, K: 2})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, s := range d.Chosen {
		got[s.Peer] = true
	}
	if len(got) != 2 || !got[ids[0].String()] || !got[ids[2].String()] {
		t.Fatalf("chosen %v, want the best of each /24", got)
	}
}
