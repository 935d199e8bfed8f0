package worldtest

import (
	"context"
	cryptorand "crypto/rand"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/serf/coordinate"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/infer"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/p2p"
	"github.com/mwpeer/mwpeer/routing"
	"github.com/mwpeer/mwpeer/swarm"
)

// The world's make-up. Every fourth peer is a client that serves nothing
// (its prompts are the ones measured: a peer that serves the model would
// answer itself); every fifth server is slow; one peer in ten announces no
// location and one in ten a wrong one; one server in Sydney says it is in
// Frankfurt.
const (
	model       = "m"
	capacity    = 4
	randomLinks = 5 // connections each peer opens besides its ring neighbour
	slowTTFT    = 900 * time.Millisecond
	slowRate    = 8.0 // tokens/s
	answerLen   = 16  // tokens
	liarCity    = "Sydney"
	liarClaims  = "Frankfurt"
)

// Server domains, in turn.
var domainSets = [][]string{{"code"}, {"math"}, {"creative"}, {"general"}, {"code", "math"}, {"general", "creative"}, {"science", "reasoning"}, {"general"}}

// Prompts, one per domain the servers declare.
var prompts = []string{
	"write a python function that reverses a linked list",
	"solve the equation 2x + 3 = 7 and prove the result",
	"write a short poem about the sea at night",
	"hello there, how are you today?",
	"explain how photosynthesis works in plant cells",
}

// node is one peer of the world: the truth about it and its running parts.
type node struct {
	i       int
	city    City
	claims  *geo.Point // the location it announces
	access  time.Duration
	serves  bool
	domains []string
	ttft    time.Duration // its backend's time to first token
	rate    float64       // its backend's tokens/s
	liar    bool

	key    crypto.PrivKey
	h      host.Host
	cat    *experts.Catalog
	lat    *swarm.Latency
	router *swarm.Router
	gossip *experts.Gossip
	models []experts.Model
	load   func() int
	// served holds the time from each request's arrival at its backend to
	// the first token, as this machine ran it (see timedBackend).
	served servingLog
}

// servingLog is a server's measured serving times.
type servingLog struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *servingLog) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *servingLog) all() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.d)
}

// timedBackend is a synthetic backend that logs, for every request, how
// long after it arrived the first token was emitted: the configured TTFT
// plus whatever the machine added (a timer firing late under load, a
// request waiting for a slot).
type timedBackend struct {
	*inference.Synthetic
	log *servingLog
}

func (b timedBackend) Generate(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	start := time.Now()
	first := true
	return b.Synthetic.Generate(ctx, req, func(c inference.Chunk) error {
		if first {
			first = false
			b.log.add(time.Since(start))
		}
		return emit(c)
	})
}

// world is n peers on a mock network whose links carry the world's
// latencies; oneWay[i][j] is the true one-way delay between nodes i and j.
type world struct {
	nodes  []*node
	byID   map[string]*node
	oneWay [][]time.Duration
	mn     mocknet.Mocknet
	// pingEvery is the peers' measuring pace (they default to 10 s): 2 s
	// for 30 peers, slower for more, whose pings would otherwise starve a
	// 2-core machine. announceEvery is their least announcement interval
	// (the default 5 s up to 30 peers, then n/6 s) for the same reason:
	// gossip costs each peer the number of peers, and the world the square.
	pingEvery, announceEvery time.Duration
}

// rtt is the true round trip between two nodes.
func (w *world) rtt(a, b *node) time.Duration { return 2 * w.oneWay[a.i][b.i] }

func cityNamed(name string) City {
	for _, c := range Cities {
		if c.Name == name {
			return c
		}
	}
	panic("no city " + name)
}

// newWorld places n peers (n <= len(Cities)), links every pair with its
// latency, starts every peer's protocol stack as the module root wires it
// (pubsub gossip with mwpeer's parameters, catalog, latency with Vivaldi,
// router, infer service over a synthetic backend) and connects each to its
// ring neighbour and a few random others.
func newWorld(t *testing.T, n int, seed uint64) *world {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	w := &world{byID: map[string]*node{}, mn: mn, pingEvery: time.Duration(max(n, 30)) * 2 * time.Second / 30,
		announceEvery: time.Duration(max(n, 30)) * time.Second / 6}
	cities := append([]City(nil), Cities[:n]...)
	if !slices.ContainsFunc(cities, func(c City) bool { return c.Name == liarCity }) {
		cities[n-1] = cityNamed(liarCity)
	}
	servers := 0
	for i, c := range cities {
		nd := &node{i: i, city: c, access: time.Duration(500+rng.IntN(1500)) * time.Microsecond}
		loc := c.Point
		nd.claims = &loc
		switch i % 10 {
		case 1:
			nd.claims = nil
		case 6:
			wrong := Cities[(i+37)%len(Cities)].Point
			nd.claims = &wrong
		}
		nd.serves = i%4 != 3
		if c.Name == liarCity {
			nd.serves, nd.liar = true, true
			lie := cityNamed(liarClaims).Point
			nd.claims = &lie
		}
		if nd.serves {
			nd.domains = domainSets[servers%len(domainSets)]
			// A machine's speed shows in both: prefill and decode run the
			// same weights on the same cores and memory, so a server quick
			// to a first token decodes quickly too (70 tokens/s at 60 ms,
			// 30 at 180 ms, ±10% for what else differs between machines).
			// Drawn apart, a quick starter was as often a slow decoder,
			// and routers weighing decode rates chose between servers no
			// machine room holds.
			nd.ttft = time.Duration(60+rng.IntN(120)) * time.Millisecond
			quick := 1 - float64(nd.ttft-60*time.Millisecond)/float64(120*time.Millisecond)
			nd.rate = (30 + 40*quick) * (0.9 + 0.2*rng.Float64())
			if servers%5 == 2 && !nd.liar {
				nd.ttft, nd.rate = slowTTFT, slowRate
			}
			servers++
		}
		key, _, err := crypto.GenerateEd25519Key(cryptorand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		nd.key = key
		addr := ma.StringCast(fmt.Sprintf("/ip4/198.18.%d.1/tcp/4001", i))
		if nd.h, err = mn.AddPeer(key, addr); err != nil {
			t.Fatal(err)
		}
		w.nodes = append(w.nodes, nd)
		w.byID[nd.h.ID().String()] = nd
	}
	w.oneWay = make([][]time.Duration, n)
	for i := range w.oneWay {
		w.oneWay[i] = make([]time.Duration, n)
	}
	for i, a := range w.nodes {
		for j := i + 1; j < n; j++ {
			d := OneWay(a.city, w.nodes[j].city, a.access, w.nodes[j].access, rng)
			w.oneWay[i][j], w.oneWay[j][i] = d, d
		}
	}
	// The mock links carry no latency; Shaped hosts delay every write.
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	for _, nd := range w.nodes {
		from := nd.i
		nd.h = &Shaped{Host: nd.h, Done: done, OneWay: func(to peer.ID) time.Duration {
			if o, ok := w.byID[to.String()]; ok {
				return w.oneWay[from][o.i]
			}
			return 0
		}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, nd := range w.nodes {
		w.start(t, ctx, &wg, nd)
	}
	for i, nd := range w.nodes {
		others := []int{(i + 1) % n}
		for len(others) < randomLinks+1 {
			if j := rng.IntN(n); j != i && !slices.Contains(others, j) {
				others = append(others, j)
			}
		}
		for _, j := range others {
			if _, err := mn.ConnectPeers(nd.h.ID(), w.nodes[j].h.ID()); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The first announcements went out before any connection; each peer
	// announces in full again when its first topic neighbour joins.
	return w
}

// start wires one peer's parts as mwpeer.Start does (peer.go), minus what a
// mock network has no use for (DHT, NAT, HTTP, ledger, consent).
func (w *world) start(t *testing.T, ctx context.Context, wg *sync.WaitGroup, nd *node) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	h := nd.h
	ping.NewPingService(h) // libp2p.New's default; mocknet hosts lack it
	// p2p.New's GossipSub options, without DHT discovery.
	gp := pubsub.DefaultGossipSubParams()
	gp.D, gp.Dlo, gp.Dhi, gp.Dout, gp.Dlazy = 4, 3, 8, 1, 4
	gp.IDontWantMessageThreshold = 512
	ps, err := pubsub.NewGossipSub(ctx, h,
		pubsub.WithGossipSubParams(gp),
		pubsub.WithPeerScore(p2p.ScoreParams(), p2p.ScoreThresholds()),
		pubsub.WithValidateQueueSize(256),
		pubsub.WithPeerOutboundQueueSize(128),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithPeerExchange(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	nd.cat = experts.NewCatalog(h.ID().String(), 0)
	nd.lat = swarm.NewLatency(h, w.pingEvery, nd.claims, func(id string) *coordinate.Coordinate {
		e, _ := nd.cat.Get(id)
		return e.Coord
	}, log)
	local := swarm.Local{Domains: nd.domains, Capacity: capacity, Location: nd.claims}
	nd.load = func() int { return 0 }
	if nd.serves {
		syn := timedBackend{Synthetic: inference.NewSynthetic(inference.SyntheticConfig{Models: []string{model}, Tokens: answerLen, Rate: nd.rate, TTFT: nd.ttft, Capacity: capacity, QueueWait: time.Second}), log: &nd.served}
		nd.load = func() int { return int(syn.Active()) }
		if nd.models, err = swarm.ListModels(ctx, syn, "synthetic"); err != nil {
			t.Fatal(err)
		}
		for k := range nd.models {
			// What the peer's engine measured serving (truthfully here;
			// the liar lies about its location only).
			nd.models[k].TTFTMs, nd.models[k].TPS = float64(nd.ttft)/float64(time.Millisecond), nd.rate
		}
		local.Backend, local.Models, local.Load = syn, func() []experts.Model { return nd.models }, nd.load
		sc := infer.DefaultServiceConfig()
		sc.Logger = log
		svc := infer.NewService(h, syn, sc)
		t.Cleanup(func() { svc.Close() })
	}
	nd.router = swarm.New(swarm.Config{
		Self: h.ID(), Catalog: nd.cat, RTT: nd.lat.Estimate,
		Remote: swarm.HostRemote{Host: h, Policy: &p2p.RelayPolicy{Links: p2p.HostLinks(h), Log: log}, Infer: infer.Call},
		Local:  local, Log: log, Probe: nd.lat.Probe,
	})
	nd.cat.Watch(func(c experts.Change) {
		if c.Removed {
			nd.lat.Forget(c.Peer)
		} else if e, ok := nd.cat.Get(c.Peer); ok {
			nd.lat.Heard(e)
		}
	})
	nd.gossip, err = experts.JoinGossip(ps, h, experts.GossipConfig{Key: nd.key, Catalog: nd.cat, Local: nd.announcement, Logger: log,
		MinInterval: w.announceEvery})
	if err != nil {
		t.Fatal(err)
	}
	nd.lat.OnDrift(nd.gossip.Changed, nd.gossip.Interval)
	nd.gossip.Start(ctx)
	t.Cleanup(nd.gossip.Close)
	wg.Add(1)
	go func() { defer wg.Done(); nd.lat.Run(ctx) }()
}

// announcement is what the peer says of itself (Peer.announcement).
func (nd *node) announcement() experts.Announcement {
	rtt, coord := nd.lat.Own(experts.MaxRTTRow)
	var addrs []string
	for _, a := range nd.h.Addrs() {
		addrs = append(addrs, a.String())
	}
	a := experts.Announcement{Addrs: addrs, Models: nd.models, Domains: nd.domains, Capacity: capacity,
		Load: nd.load(), Location: nd.claims, RTT: rtt, Coord: coord}
	if len(nd.models) == 0 {
		a.Capacity = 0
	}
	return a
}

func (w *world) servers() []*node {
	var out []*node
	for _, nd := range w.nodes {
		if nd.serves {
			out = append(out, nd)
		}
	}
	return out
}

func (w *world) clients() []*node {
	var out []*node
	for _, nd := range w.nodes {
		if !nd.serves {
			out = append(out, nd)
		}
	}
	return out
}

// settled: every peer's catalog lists every server, and every peer has
// measured at least three others.
func (w *world) settled() error {
	servers := len(w.servers())
	for _, nd := range w.nodes {
		want := servers
		if nd.serves {
			want--
		}
		if got := len(nd.cat.Select(func(e *experts.Entry) bool { return e.Serves(model) })); got < want {
			return fmt.Errorf("peer %d (%s) lists %d of %d servers (accepted %d announcements, rejected %v)",
				nd.i, nd.city.Name, got, want, nd.gossip.Accepted(), nd.gossip.Rejected())
		}
		measured := 0
		for _, o := range w.nodes {
			if o != nd && nd.lat.Measured(o.h.ID()) {
				measured++
			}
		}
		if measured < 3 {
			return fmt.Errorf("peer %d (%s) measured %d peers", nd.i, nd.city.Name, measured)
		}
	}
	return nil
}

// vivaldiError is the median, over every pair of peers, of the relative
// error of the RTT their own coordinates predict against the true RTT; an
// untrained pair counts as an infinite error.
func (w *world) vivaldiError() float64 {
	coords := make([]*coordinate.Coordinate, len(w.nodes))
	for i, nd := range w.nodes {
		_, coords[i] = nd.lat.Own(experts.MaxRTTRow)
	}
	var errs []float64
	for i := range w.nodes {
		for j := i + 1; j < len(w.nodes); j++ {
			truth := w.rtt(w.nodes[i], w.nodes[j])
			pred, ok := geo.CoordinateRTT(coords[i], coords[j])
			if !ok {
				errs = append(errs, math.Inf(1))
				continue
			}
			errs = append(errs, math.Abs(float64(pred-truth))/float64(truth))
		}
	}
	return quantile(errs, 0.5)
}

// settleVivaldi polls the world's Vivaldi error every 2 s until it is
// below good, or has made no new low by 5% for still, or until deadline;
// it returns the last figure and the trail of figures it saw.
func (w *world) settleVivaldi(good float64, still, deadline time.Duration) (float64, string) {
	start := time.Now()
	best, bestAt := math.Inf(1), start
	var trail []string
	for {
		e := w.vivaldiError()
		now := time.Now()
		trail = append(trail, fmt.Sprintf("%s:%.3f", now.Sub(start).Round(time.Second), e))
		if e < best*0.95 {
			best, bestAt = e, now
		}
		if e < good || now.Sub(bestAt) >= still || now.Sub(start) >= deadline {
			return e, strings.Join(trail, " ")
		}
		time.Sleep(2 * time.Second)
	}
}

// pingRatios are, over every pair one end measured, the measured RTT over
// the true one: how far the machine's load inflates what peers measure.
func (w *world) pingRatios() []float64 {
	var out []float64
	for _, a := range w.nodes {
		for _, b := range w.nodes {
			if a == b {
				continue
			}
			if r := a.lat.Estimate(b.h.ID().String()); r.Source == geo.SourceMeasured {
				out = append(out, float64(r.Value)/float64(w.rtt(a, b)))
			}
		}
	}
	return out
}

// quantile is the q-quantile of xs (nearest rank).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	k := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}

// oracle is the expert a router that knew every true latency and backend
// would pick for prompt from c: of the servers most relevant to the prompt,
// the one whose first token reaches c first (true RTT + backend TTFT, the
// configured one, or serve's when given).
func (w *world) oracle(c *node, prompt string, serve map[*node]time.Duration) *node {
	domains := routing.Classify(prompt)
	best, bestRel, bestFirst := (*node)(nil), -1.0, time.Duration(math.MaxInt64)
	for _, s := range w.servers() {
		rel := routing.Relevance(routing.Candidate{Domains: s.domains}, domains)
		first := w.rtt(c, s) + serving(s, serve)
		if rel > bestRel+1e-9 || (math.Abs(rel-bestRel) <= 1e-9 && first < bestFirst) {
			best, bestRel, bestFirst = s, rel, first
		}
	}
	return best
}

// serving is s's time from a request's arrival to its first token: the
// configured one, or serve's when given.
func serving(s *node, serve map[*node]time.Duration) time.Duration {
	if d, ok := serve[s]; ok {
		return d
	}
	return s.ttft
}

// servingTimes are the servers' serving times as the machine ran them: the
// median of each server's measured ones, and for a server never asked its
// configured time plus the median lateness over every request (measured
// less configured), so that no server counts as quicker for being unasked.
func (w *world) servingTimes() (serve map[*node]time.Duration, late time.Duration) {
	serve = map[*node]time.Duration{}
	var lateness []float64
	for _, s := range w.servers() {
		ds := s.served.all()
		for _, d := range ds {
			lateness = append(lateness, float64(d-s.ttft))
		}
		if len(ds) > 0 {
			slices.Sort(ds)
			serve[s] = ds[(len(ds)-1)/2]
		}
	}
	if len(lateness) > 0 {
		late = max(time.Duration(quantile(lateness, 0.5)), 0)
	}
	for _, s := range w.servers() {
		if _, ok := serve[s]; !ok {
			serve[s] = s.ttft + late
		}
	}
	return serve, late
}

// judge measures o against the oracle that knows the serving times serve
// (nil: the configured ones): the chosen expert's true RTT and time to
// first token over the oracle's.
func (w *world) judge(o outcome, serve map[*node]time.Duration) (rttRatio, ttftRatio float64) {
	best := w.oracle(o.client, o.prompt, serve)
	return float64(w.rtt(o.client, o.chosen)) / float64(w.rtt(o.client, best)),
		float64(w.rtt(o.client, o.chosen)+serving(o.chosen, serve)) / float64(w.rtt(o.client, best)+serving(best, serve))
}

// outcome is one routed prompt measured against the oracle.
type outcome struct {
	client, chosen, oracle *node
	rttRatio, ttftRatio    float64
	observed               time.Duration // time to first token the client saw
	prompt                 string
	// At the time of asking: routing's first choice (a dry run just
	// before), its ranking, and the failovers the answer took.
	planned   string
	ranking   []routing.Scored
	failovers int
}

// ask routes prompt from c and runs it (K = 1, as for a short prompt).
func (w *world) ask(ctx context.Context, c *node, prompt string) (outcome, error) {
	start := time.Now()
	var first time.Duration
	q := swarm.Query{Request: inference.Request{Model: model, Prompt: prompt, MaxTokens: answerLen}, K: 1}
	d, err := c.router.Route(ctx, q)
	if err != nil {
		return outcome{}, err
	}
	ans, err := c.router.Complete(ctx, q, func(string, inference.Chunk) error {
		if first == 0 {
			first = time.Since(start)
		}
		return nil
	})
	if err != nil {
		return outcome{}, err
	}
	if len(ans.Experts) == 0 {
		return outcome{}, fmt.Errorf("no expert answered")
	}
	out := outcome{client: c, chosen: w.byID[ans.Experts[0]], oracle: w.oracle(c, prompt, nil), observed: first, prompt: prompt,
		ranking: d.Candidates, failovers: ans.Failovers}
	if len(d.Chosen) > 0 {
		out.planned = d.Chosen[0].Peer
	}
	out.rttRatio, out.ttftRatio = w.judge(out, nil)
	return out, nil
}

// round asks one prompt from every client at once.
func (w *world) round(t *testing.T, ctx context.Context, r int) []outcome {
	t.Helper()
	clients := w.clients()
	out := make([]outcome, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for k, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[k], errs[k] = w.ask(ctx, c, prompts[(r+k)%len(prompts)])
		}()
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			t.Fatalf("round %d, client %s: %v", r, clients[k].city.Name, err)
		}
	}
	return out
}

func ratios(os []outcome, f func(outcome) float64) []float64 {
	xs := make([]float64, len(os))
	for i, o := range os {
		xs[i] = f(o)
	}
	return xs
}

// TestRoutingInALatencyShapedWorld places peers in real cities on a mock
// network whose links take the fibre delay between them, lets the swarm
// settle, and checks against an oracle that knows every true latency and
// backend (its serving times as the machine ran them) that the experts
// chosen from many peers are as near and as quick
// to a first token as they should be (p90 RTT within 1.2x, p90 TTFT within
// 1.3x), that Vivaldi coordinates converge (median relative error below
// 0.25), and that a far peer announcing a near location is not chosen.
//
// Opt in with MWPEER_WORLD=1; MWPEER_WORLD_PEERS sets the number of peers
// (30 by default). 30 peers take 35-70 s of a 2-core machine at a load of
// 9-11 and met the targets there in 5 runs of 6: the sixth missed by a
// hair (RTT p90 1.21), on servers whose first tokens tied within 1% and
// whose decode rates (which the router weighs and the oracle does not)
// differed, so it does not run in the suite. 60 peers want a quiet
// machine: at a load of 8-11 the process falls behind (catalogs fill in
// 1.5-3 minutes, first tokens arrive 3-5x late), and the test then skips
// its judgement. At 60 peers on a machine at a load of 1-4 the RTT p90
// missed (1.27, 1.39) on near ties in first token between servers at very
// different round trips (Stockholm chose Seoul, 121 ms away, over Madrid,
// 40 ms away), on decode rates no reader could tell apart and on a stale
// load's tie-breaker, and Vivaldi reached 0.22-0.32 in a minute. Since
// routing counts the round trip once more at half weight, decode rates
// above reading pace hardly at all and free slots only in a tie
// (routing.Speed, routing.DefaultWeights), the servers decode as fast as
// they start (newWorld), and peers sample more and re-announce their
// coordinate while it is untrained (geo.EarlyError, geo.CoordinateDrift),
// every judged 60-peer run met every target: 11 of 11 at a load of 1.7-4.4
// (RTT p90 1.00, TTFT p90 1.00-1.02, Vivaldi 0.10-0.18; five more at a
// load of 2-6 ran unfaithfully and were not judged), and 30 peers 13 of
// 13 at 1.2-7.1 (RTT p90 1.00, TTFT p90 1.00-1.08, Vivaldi 0.11-0.20).
func TestRoutingInALatencyShapedWorld(t *testing.T) {
	if os.Getenv("MWPEER_WORLD") == "" || testing.Short() {
		t.Skip("set MWPEER_WORLD=1 to run the latency-shaped world")
	}
	if raceEnabled {
		// The race detector slows the process several times; on a shared
		// 2-core machine the world then starves (announcements arrive late,
		// teardown waits on goroutines that get no CPU; it did not hang).
		t.Skip("the latency-shaped world runs without the race detector")
	}
	n := 30
	if v, err := strconv.Atoi(os.Getenv("MWPEER_WORLD_PEERS")); err == nil && v > 0 {
		n = min(v, len(Cities))
	}
	started := time.Now()
	w := newWorld(t, n, 19)
	t.Logf("%d peers (%d servers, %d clients) in %d cities", n, len(w.servers()), len(w.clients()), n)

	took := wait.For(t, time.Duration(n)*3*time.Second, "the swarm settles", w.settled)
	t.Logf("settled in %s", took.Round(time.Millisecond))

	// Vivaldi keeps learning from every ping, and routers rank the servers
	// they have not measured by its predictions: wait until its error is
	// well under the target (0.15) or stops falling (no new low by 5% in
	// 20 s), for at most 3 minutes (the assertion below reports the
	// figure).
	verr, trail := w.settleVivaldi(0.15, 20*time.Second, 3*time.Minute)
	t.Logf("Vivaldi median relative error %.3f after %s (%s)", verr, time.Since(started).Round(time.Second), trail)
	pr := w.pingRatios()
	t.Logf("%d measured pairs: measured RTT / true p50 %.2f p90 %.2f", len(pr), quantile(pr, 0.5), quantile(pr, 0.9))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const warm, measured = 3, 6
	var cold, settled []outcome
	for r := 0; r < warm+measured; r++ {
		os := w.round(t, ctx, r)
		if r < warm {
			cold = append(cold, os...)
		} else {
			settled = append(settled, os...)
		}
	}
	rtt := func(o outcome) float64 { return o.rttRatio }
	ttft := func(o outcome) float64 { return o.ttftRatio }
	t.Logf("first %d rounds (%d prompts, learning backends): RTT ratio p50 %.2f p90 %.2f, TTFT ratio p50 %.2f p90 %.2f",
		warm, len(cold), quantile(ratios(cold, rtt), 0.5), quantile(ratios(cold, rtt), 0.9),
		quantile(ratios(cold, ttft), 0.5), quantile(ratios(cold, ttft), 0.9))
	// The oracle the routers are judged against knows the serving times as
	// this machine ran them (servingTimes): on a loaded machine every
	// backend's timer fires late and a popular server queues, and an oracle
	// with the configured times would count that against the router. The
	// round trips are the true ones (pings measure them within a few %).
	serve, late := w.servingTimes()
	fair := slices.Clone(settled)
	for i := range fair {
		fair[i].oracle = w.oracle(fair[i].client, fair[i].prompt, serve)
		fair[i].rttRatio, fair[i].ttftRatio = w.judge(fair[i], serve)
	}
	p90RTT, p90TTFT := quantile(ratios(fair, rtt), 0.9), quantile(ratios(fair, ttft), 0.9)
	var observed []float64
	for _, o := range fair {
		observed = append(observed, float64(o.observed)/float64(w.rtt(o.client, o.oracle)+serving(o.oracle, serve)))
	}
	t.Logf("next %d rounds (%d prompts), against the configured serving times: RTT ratio p50 %.2f p90 %.2f, TTFT ratio p50 %.2f p90 %.2f",
		measured, len(settled), quantile(ratios(settled, rtt), 0.5), quantile(ratios(settled, rtt), 0.9),
		quantile(ratios(settled, ttft), 0.5), quantile(ratios(settled, ttft), 0.9))
	t.Logf("serving times as run: median lateness %s over the configured; against them: RTT ratio p50 %.2f p90 %.2f, TTFT ratio p50 %.2f p90 %.2f; observed TTFT / oracle's p50 %.2f p90 %.2f",
		late.Round(time.Millisecond), quantile(ratios(fair, rtt), 0.5), p90RTT,
		quantile(ratios(fair, ttft), 0.5), p90TTFT, quantile(observed, 0.5), quantile(observed, 0.9))
	for _, o := range fair {
		if o.ttftRatio > 1.3 || o.rttRatio > 1.2 {
			t.Logf("  miss: %s chose %s (rtt %s, serving %s) over %s (rtt %s, serving %s)", o.client.city.Name,
				o.chosen.city.Name, w.rtt(o.client, o.chosen).Round(time.Millisecond), serving(o.chosen, serve).Round(time.Millisecond),
				o.oracle.city.Name, w.rtt(o.client, o.oracle).Round(time.Millisecond), serving(o.oracle, serve).Round(time.Millisecond))
			if testing.Verbose() {
				// As routing saw them when the prompt was asked.
				planned := "?"
				if nd := w.byID[o.planned]; nd != nil {
					planned = nd.city.Name
				}
				t.Logf("    routing's first choice %s, %d failovers", planned, o.failovers)
				for k, c := range o.ranking {
					if nd := w.byID[c.Peer]; nd == o.chosen || nd == o.oracle {
						t.Logf("    #%d %s: score %.4f %+v first token %s rtt %s (%s) ttft %s (%d calls) reported %s tps %.0f dom %v", k+1, nd.city.Name, c.Score, c.Parts,
							c.FirstToken.Round(time.Millisecond), c.RTT.Round(time.Millisecond), c.Sources.RTT, c.TTFT.Round(time.Millisecond), c.Calls,
							c.ReportedTTFT.Round(time.Millisecond), c.DecodeTPS, c.Domains)
					}
				}
			}
		}
	}
	// The targets are p90 RTT <= 1.2x and TTFT <= 1.3x the
	// oracle's. They are judged only when the machine ran the world
	// faithfully: when a chosen expert's first token, as its client saw it,
	// came within 15% of the true round trip plus its serving time at the
	// median. On a 2-core machine shared at a load of 10-25 the process
	// gets a fraction of a core, every timer fires late (the round trips
	// too), and routers rank by that noise (see README, "Routing in a
	// latency-shaped world"): then the figures (Vivaldi's too: its pings
	// read late alike) are logged and the test is skipped, not judged
	// against looser targets.
	var fidelity []float64
	for _, o := range fair {
		fidelity = append(fidelity, float64(o.observed)/float64(w.rtt(o.client, o.chosen)+serving(o.chosen, serve)))
	}
	faithful := quantile(fidelity, 0.5) <= 1.15
	t.Logf("FIGURES: %d peers, load average %s: RTT p90 %.2f (target 1.2), TTFT p90 %.2f (target 1.3) against the oracle with the serving times as run; Vivaldi median error %.3f (target 0.25); observed / true TTFT of the chosen p50 %.2f: judged %v",
		n, loadAverage(), p90RTT, p90TTFT, verr, quantile(fidelity, 0.5), faithful)
	if faithful {
		if verr >= 0.25 {
			t.Errorf("Vivaldi median relative error %.3f, want < 0.25", verr)
		}
		if p90RTT > 1.2 {
			t.Errorf("chosen expert's true RTT is %.2fx the oracle's at p90, want <= 1.2x", p90RTT)
		}
		if p90TTFT > 1.3 {
			t.Errorf("chosen expert's time to first token is %.2fx the oracle's at p90, want <= 1.3x", p90TTFT)
		}
	}

	liarChosen := 0
	for _, o := range settled {
		if o.chosen.liar {
			liarChosen++
		}
	}
	t.Logf("the liar (%s, announcing %s) was chosen %d times of %d settled prompts", liarCity, liarClaims, liarChosen, len(settled))
	w.checkLiar(t, ctx)
	t.Logf("whole test %s", time.Since(started).Round(time.Second))
	if !faithful {
		t.Skipf("the machine did not run the world faithfully (a chosen expert's first token came %.2fx its true time at the median, load average %s): the routing figures above are not judged",
			quantile(fidelity, 0.5), loadAverage())
	}
}

// loadAverage is the machine's 1, 5 and 15-minute load averages, for the
// figures' record; "unknown" off Linux.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// checkLiar: every European client measures the liar (a connection, then
// pings), and its dry-run choice for a general prompt is then never the
// liar, whose RTT it ranks by is measured, not its claimed distance.
func (w *world) checkLiar(t *testing.T, ctx context.Context) {
	t.Helper()
	var liar *node
	for _, nd := range w.nodes {
		if nd.liar {
			liar = nd
		}
	}
	var eu []*node
	for _, c := range w.clients() {
		if c.city.Continent == "EU" {
			eu = append(eu, c)
			if _, err := w.mn.ConnectPeers(c.h.ID(), liar.h.ID()); err != nil {
				t.Fatal(err)
			}
		}
	}
	wait.For(t, 30*time.Second, "European clients measure the liar", func() error {
		for _, c := range eu {
			if !c.lat.Measured(liar.h.ID()) {
				return fmt.Errorf("%s has not pinged the liar", c.city.Name)
			}
		}
		return nil
	})
	prompt := "hello there, how are you today?"
	for _, c := range eu {
		d, err := c.router.Route(ctx, swarm.Query{Request: inference.Request{Model: model, Prompt: prompt}, K: 1})
		if err != nil {
			t.Fatal(err)
		}
		if d.Chosen[0].Peer == liar.h.ID().String() {
			t.Errorf("%s chose the liar (true RTT %s) for %q", c.city.Name, w.rtt(c, liar).Round(time.Millisecond), prompt)
		}
		for _, s := range d.Candidates {
			if s.Peer == liar.h.ID().String() {
				if s.Sources.RTT != routing.SourceMeasured || s.RTT < w.rtt(c, liar)/2 {
					t.Errorf("%s ranks the liar at RTT %s (%s), true %s", c.city.Name, s.RTT, s.Sources.RTT, w.rtt(c, liar))
				}
				t.Logf("%s: the liar ranks %d of %d (measured RTT %s, true %s, claimed %.0f km away)", c.city.Name,
					slices.IndexFunc(d.Candidates, func(x routing.Scored) bool { return x.Peer == s.Peer })+1,
					len(d.Candidates), s.RTT.Round(time.Millisecond), w.rtt(c, liar).Round(time.Millisecond), s.DistanceKm)
			}
		}
	}
}
