package swarm

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/routing"
	"github.com/mwpeer/mwpeer/trust"
)

// catalog is a Catalog without gossip.
type catalog []experts.Entry

func (c catalog) Select(keep func(*experts.Entry) bool) []experts.Entry {
	var out []experts.Entry
	for i := range c {
		if keep(&c[i]) {
			out = append(out, c[i])
		}
	}
	return out
}
func (c catalog) Snapshot() []experts.Entry { return slices.Clone(c) }

// remote is a Remote without a network: each peer answers as scripted.
type remote struct {
	mu     sync.Mutex
	answer map[peer.ID]func(emit func(inference.Chunk) error) (inference.Final, error)
	calls  []peer.ID
	only   map[peer.ID]bool
}

func (r *remote) Call(ctx context.Context, id peer.ID, addrs []ma.Multiaddr, only bool, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	r.mu.Lock()
	r.calls = append(r.calls, id)
	if r.only == nil {
		r.only = map[peer.ID]bool{}
	}
	r.only[id] = only
	f := r.answer[id]
	r.mu.Unlock()
	if f == nil {
		return inference.Final{}, errors.New("no such peer")
	}
	return f(emit)
}

func tokens(n int) func(emit func(inference.Chunk) error) (inference.Final, error) {
	return func(emit func(inference.Chunk) error) (inference.Final, error) {
		for range n {
			if err := emit(inference.Chunk{Text: "t "}); err != nil {
				return inference.Final{}, err
			}
		}
		return inference.Final{FinishReason: inference.FinishStop, CompletionTokens: n}, nil
	}
}

func fails(err error) func(emit func(inference.Chunk) error) (inference.Final, error) {
	return func(func(inference.Chunk) error) (inference.Final, error) { return inference.Final{}, err }
}

func newID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func entry(id peer.ID, models ...string) experts.Entry {
	e := experts.Entry{}
	e.Peer = id.String()
	e.Capacity = 4
	e.Domains = []string{"general"}
	for _, m := range models {
		e.Models = append(e.Models, experts.Model{Name: m, Engine: "synthetic"})
	}
	return e
}

func query(model string) Query {
	return Query{Request: inference.Request{Model: model, Prompt: "hello there"}}
}

func peersOf(cs []Candidate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Peer)
	}
	slices.Sort(out)
	return out
}

func TestCandidatesAreThisPeerAndCatalogServersOfTheModel(t *testing.T) {
	self, a, b, c := newID(t), newID(t), newID(t), newID(t)
	r := New(Config{
		Self:    self,
		Catalog: catalog{entry(a, "m"), entry(b, "m", "n"), entry(c, "n")},
		Local: Local{Backend: inference.NewSynthetic(inference.SyntheticConfig{Models: []string{"m"}}),
			Models: func() []experts.Model { return []experts.Model{{Name: "m"}} }, Capacity: 1},
	})
	cs, err := r.Candidates(context.Background(), query("m"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{self.String(), a.String(), b.String()}
	slices.Sort(want)
	if got := peersOf(cs); !slices.Equal(got, want) {
		t.Fatalf("candidates %v, want %v", got, want)
	}
	for _, c := range cs {
		if c.Local != (c.Peer == self.String()) {
			t.Fatalf("%s: local %v", c.Peer, c.Local)
		}
	}
	if all, _ := r.Candidates(context.Background(), query(AnyModel)); len(all) != 4 {
		t.Fatalf("any model: %d candidates, want 4 (one per peer)", len(all))
	}
}

func TestCandidatesFallBackToDHTProviders(t *testing.T) {
	self, far := newID(t), newID(t)
	addr := ma.StringCast("/ip4/127.0.0.1/tcp/4001")
	var asked string
	r := New(Config{
		Self:    self,
		Catalog: catalog{},
		Providers: func(ctx context.Context, kind, name string, max int) ([]peer.AddrInfo, error) {
			asked = kind + "/" + name
			return []peer.AddrInfo{{ID: self}, {ID: far, Addrs: []ma.Multiaddr{addr}}}, nil
		},
	})
	cs, err := r.Candidates(context.Background(), query("rare"))
	if err != nil {
		t.Fatal(err)
	}
	if asked != experts.KindModel+"/rare" {
		t.Fatalf("asked the DHT for %q", asked)
	}
	if len(cs) != 1 || cs[0].Peer != far.String() || len(cs[0].Addrs) != 1 {
		t.Fatalf("candidates %+v, want only the far provider with its address", cs)
	}
}

func TestNoServerIsUnknownModelOrNoExpert(t *testing.T) {
	r := New(Config{Self: newID(t), Catalog: catalog{}})
	if _, err := r.Candidates(context.Background(), query("nope")); !errors.Is(err, inference.ErrUnknownModel) {
		t.Fatalf("named model: %v, want ErrUnknownModel", err)
	}
	// Nothing anywhere is a 404 too (not a busy 503), and says what to do.
	if _, err := r.Candidates(context.Background(), query(AnyModel)); !errors.Is(err, inference.ErrUnknownModel) || !strings.Contains(err.Error(), "--engine") {
		t.Fatalf("any model: %v, want ErrUnknownModel with what to do", err)
	}
}

func TestMeasuredRTTAndDistanceReachCandidates(t *testing.T) {
	self, near := newID(t), newID(t)
	e := entry(near, "m")
	e.Location = &geo.Point{Lat: 48.85, Lon: 2.35}
	r := New(Config{
		Self: self, Catalog: catalog{e},
		RTT:   func(to string) geo.RTT { return geo.RTT{Value: 7 * time.Millisecond, Source: geo.SourceMeasured} },
		Local: Local{Location: &geo.Point{Lat: 51.5, Lon: -0.12}},
	})
	cs, err := r.Candidates(context.Background(), query("m"))
	if err != nil || len(cs) != 1 {
		t.Fatal(cs, err)
	}
	if c := cs[0]; !c.RTTKnown || c.RTT != 7*time.Millisecond || c.DistanceKm < 300 || c.DistanceKm > 400 {
		t.Fatalf("candidate %+v: want measured 7 ms and ~340 km", c.Candidate)
	}
}

func TestAFailedExpertIsReplacedAndThenRankedLower(t *testing.T) {
	self, a, b := newID(t), newID(t), newID(t)
	rem := &remote{answer: map[peer.ID]func(func(inference.Chunk) error) (inference.Final, error){
		a: fails(errors.New("model crashed")),
		b: tokens(3),
	}}
	st := trust.New(trust.Config{})
	// b is busier, so a is the first choice.
	eb := entry(b, "m")
	eb.Load = 2
	r := New(Config{Self: self, Catalog: catalog{entry(a, "m"), eb}, Remote: rem, Trust: st, MaxK: 1})
	d, err := r.Route(context.Background(), query("m"))
	if err != nil || len(d.Chosen) != 1 || d.Chosen[0].Peer != a.String() {
		t.Fatalf("first choice %v (%v), want a", d.Chosen, err)
	}
	ans, err := r.Complete(context.Background(), query("m"), func(string, inference.Chunk) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Experts) != 1 || ans.Experts[0] != b.String() || ans.Text != "t t t " {
		t.Fatalf("answer %+v: want b's three tokens", ans)
	}
	if sc := st.Score(a.String()); sc.Failures < 0.9 {
		t.Fatalf("a failed but its score is %+v", sc)
	}
	if p := st.Perf(b.String(), "m"); p.Calls != 1 || p.TTFT <= 0 {
		t.Fatalf("b answered but its measured perf is %+v", p)
	}
	d, err = r.Route(context.Background(), query("m"))
	if err != nil || d.Chosen[0].Peer != b.String() {
		t.Fatalf("after a's failure routing still chooses %v", d.Chosen)
	}
	var failures int
	for _, c := range d.Candidates {
		if c.Peer == a.String() {
			failures = c.Failures
		}
	}
	if failures != 1 {
		t.Fatalf("a's candidate shows %d failures, want 1", failures)
	}
}

func TestBusyExpertIsNotHeldAgainstIt(t *testing.T) {
	self, a, b := newID(t), newID(t), newID(t)
	rem := &remote{answer: map[peer.ID]func(func(inference.Chunk) error) (inference.Final, error){
		a: fails(inference.ErrBusy),
		b: fails(inference.ErrBusy),
	}}
	st := trust.New(trust.Config{})
	r := New(Config{Self: self, Catalog: catalog{entry(a, "m"), entry(b, "m")}, Remote: rem, Trust: st})
	if _, err := r.Complete(context.Background(), query("m"), func(string, inference.Chunk) error { return nil }); !errors.Is(err, inference.ErrNoExpert) {
		t.Fatalf("every expert busy: %v, want ErrNoExpert", err)
	}
	for _, id := range []peer.ID{a, b} {
		if sc := st.Score(id.String()); sc.Value != 1 || st.Counts(id.String())["refused"] != 1 {
			t.Fatalf("%s: busy is not a fault, score %+v counts %v", id.ShortString(), sc, st.Counts(id.String()))
		}
	}
}

func TestOnlyTheSoleCandidateMayUseARelay(t *testing.T) {
	self, a, b := newID(t), newID(t), newID(t)
	rem := &remote{answer: map[peer.ID]func(func(inference.Chunk) error) (inference.Final, error){a: tokens(1), b: tokens(1)}}
	one := New(Config{Self: self, Catalog: catalog{entry(a, "m")}, Remote: rem})
	if _, err := one.Complete(context.Background(), query("m"), func(string, inference.Chunk) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if !rem.only[a] {
		t.Fatal("the sole candidate should be called with only=true")
	}
	two := New(Config{Self: self, Catalog: catalog{entry(a, "m"), entry(b, "m")}, Remote: rem, MaxK: 2})
	rem.only = nil
	if _, err := two.Complete(context.Background(), query("m"), func(string, inference.Chunk) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for id, only := range rem.only {
		if only {
			t.Fatalf("%s called with only=true while another candidate exists", id.ShortString())
		}
	}
}

func TestTargetsAreChosenThenSparesInRankOrder(t *testing.T) {
	self := newID(t)
	ids := []peer.ID{newID(t), newID(t), newID(t), newID(t)}
	var cands []Candidate
	for _, id := range ids {
		cands = append(cands, Candidate{Candidate: routing.Candidate{Peer: id.String(), Model: "m", Capacity: 1}})
	}
	d := routing.Decision{
		Chosen:     []routing.Scored{{Candidate: cands[2].Candidate}},
		Candidates: []routing.Scored{{Candidate: cands[2].Candidate}, {Candidate: cands[0].Candidate}, {Candidate: cands[3].Candidate}, {Candidate: cands[1].Candidate}},
	}
	r := New(Config{Self: self, Catalog: catalog{}, Remote: &remote{}})
	primary, spares := r.Targets(d, cands)
	var got []string
	for _, t := range append(primary, spares...) {
		got = append(got, t.Name)
	}
	want := []string{ids[2].String(), ids[0].String(), ids[3].String(), ids[1].String()}
	if len(primary) != 1 || !slices.Equal(got, want) {
		t.Fatalf("targets %v (primary %d), want %v", got, len(primary), want)
	}
}

func TestModelsCountPeers(t *testing.T) {
	a, b := newID(t), newID(t)
	r := New(Config{Self: newID(t), Catalog: catalog{entry(a, "m"), entry(b, "m", "n")},
		Local: Local{Models: func() []experts.Model { return []experts.Model{{Name: "n", Engine: "ollama"}} }}})
	got := r.Models()
	if len(got) != 2 || got[0].ID != "m" || got[0].Peers != 2 || got[0].Local || got[1].ID != "n" || got[1].Peers != 2 || !got[1].Local ||
		!slices.Equal(got[1].Engines, []string{"ollama", "synthetic"}) {
		t.Fatalf("models %+v", got)
	}
}
