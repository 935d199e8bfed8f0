package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/p2p"
	"github.com/mwpeer/mwpeer/routing"
	"github.com/mwpeer/mwpeer/trust"
)

// ProviderLookup bounds the DHT lookup made when the catalog knows no server
// of a model.
const ProviderLookup = 2 * time.Second

// Catalog is what the router reads of the catalog (experts.Catalog).
type Catalog interface {
	Select(keep func(*experts.Entry) bool) []experts.Entry
	Snapshot() []experts.Entry
}

// Providers finds up to max peers providing kind/name on the DHT
// (experts.FindProviders over the host's DHT).
type Providers func(ctx context.Context, kind, name string, max int) ([]peer.AddrInfo, error)

// Remote runs a request on another peer. addrs are addresses to try when
// there is no connection; only says the peer is the one expert for the
// prompt, which the relay policy needs (see p2p.RelayPolicy).
type Remote interface {
	Call(ctx context.Context, id peer.ID, addrs []ma.Multiaddr, only bool, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error)
}

// Local is what this peer serves itself.
type Local struct {
	Backend  inference.Backend      // nil: nothing
	Models   func() []experts.Model // what it serves now
	Domains  []string
	Capacity int
	Load     func() int
	Location *geo.Point
}

// Config is everything a Router needs.
type Config struct {
	Self      peer.ID
	Catalog   Catalog
	RTT       func(to string) geo.RTT // estimate from this peer
	Providers Providers               // nil: no DHT fallback
	Remote    Remote
	Local     Local
	Trust     *trust.Store // nil: a private one
	Weights   routing.Weights
	MaxK      int
	Dispatch  inference.DispatchConfig
	// Observe, when set, also hears every expert event of every dispatch,
	// after the trust store did (the seam for receipts and verification).
	Observe func(expert, model string, ev inference.ExpertEvent)
	// Member, when set, says whether another peer may be asked at all (in
	// a certified swarm, whether it holds a valid membership certificate);
	// a peer it refuses is no candidate, from the catalog or the DHT. It is
	// not called under the catalog's lock. Nil admits every peer.
	Member func(peerID string) bool
	// ConnPrefix, when set, is the network prefix (p2p.Prefix) of a live
	// connection to a peer, "" when there is none; Decide spreads a
	// prompt's experts over prefixes. Without a connection, the prefix of
	// the addresses a peer announces counts.
	ConnPrefix func(peerID string) string
	// Probe, when set, is asked after every decision to measure the round
	// trip to the best-ranked candidates not yet measured (at most
	// ProbeTop; Latency.Probe), so that the next decision ranks them by a
	// measurement rather than a prediction. It must not block.
	Probe func(peers []peer.AddrInfo)
	// VerifyShare is the share (0 to 1) of requests not asking for it that
	// are verified anyway (see Query.Verify) when two peers can.
	VerifyShare float64
	Log         *slog.Logger
}

// Router answers prompts for this peer's user with the swarm's experts.
type Router struct {
	cfg  Config
	busy *busyLog // peers that recently answered busy (see BusyMemory)
}

// New returns a Router. Zero Weights and MaxK take routing's defaults.
func New(cfg Config) *Router {
	if cfg.Trust == nil {
		cfg.Trust = trust.New(trust.Config{})
	}
	if cfg.Weights == (routing.Weights{}) {
		cfg.Weights = routing.DefaultWeights()
	}
	if cfg.MaxK <= 0 {
		cfg.MaxK = 3
	}
	if cfg.Dispatch == (inference.DispatchConfig{}) {
		cfg.Dispatch = inference.DefaultDispatchConfig()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.RTT == nil {
		cfg.RTT = func(string) geo.RTT { return geo.RTT{} }
	}
	if cfg.Local.Models == nil {
		cfg.Local.Models = func() []experts.Model { return nil }
	}
	if cfg.Local.Load == nil {
		cfg.Local.Load = func() int { return 0 }
	}
	return &Router{cfg: cfg, busy: newBusyLog(nil)}
}

// Trust is the store the router records into and ranks by.
func (r *Router) Trust() *trust.Store { return r.cfg.Trust }

// Models lists every model served by this peer or a catalog entry, with how
// many peers serve it.
func (r *Router) Models() []Model {
	byName := map[string]*Model{}
	add := func(m experts.Model, local bool) {
		sm, ok := byName[m.Name]
		if !ok {
			sm = &Model{ID: m.Name}
			byName[m.Name] = sm
		}
		sm.Peers++
		sm.Local = sm.Local || local
		if m.Engine != "" && !slices.Contains(sm.Engines, m.Engine) {
			sm.Engines = append(sm.Engines, m.Engine)
		}
		if m.Context > 0 && (sm.Context == 0 || m.Context < sm.Context) {
			sm.Context = m.Context // a prompt must fit the smallest
		}
		caps := m.Capabilities
		if len(caps) == 0 {
			caps = []string{inference.CapCompletion}
		}
		for _, c := range caps {
			if !slices.Contains(sm.Capabilities, c) {
				sm.Capabilities = append(sm.Capabilities, c)
			}
		}
	}
	for _, m := range r.cfg.Local.Models() {
		add(m, true)
	}
	for _, e := range r.cfg.Catalog.Snapshot() {
		for _, m := range e.Models {
			add(m, false)
		}
	}
	out := make([]Model, 0, len(byName))
	for _, sm := range byName {
		sort.Strings(sm.Engines)
		sort.Strings(sm.Capabilities)
		out = append(out, *sm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ModelSize is the largest size the catalog announces for model (0: none),
// which bounds what a server may charge for it.
func (r *Router) ModelSize(model string) int64 {
	var size int64
	for _, e := range r.cfg.Catalog.Select(func(e *experts.Entry) bool { return e.Serves(model) }) {
		for _, m := range e.Models {
			if m.Name == model {
				size = max(size, m.Size)
			}
		}
	}
	return size
}

// PromptText is what the classifier reads: the user's words.
func PromptText(req inference.Request) string {
	if len(req.Messages) == 0 {
		return req.Prompt
	}
	var sb strings.Builder
	for _, m := range req.Messages {
		if m.Role == "user" {
			sb.WriteString(m.Content)
			sb.WriteString("\n")
		}
	}
	return sb.String()
}

// Candidate is a routing candidate with the addresses to reach it.
type Candidate struct {
	routing.Candidate
	Addrs []ma.Multiaddr
}

func isAny(model string) bool { return model == AnyModel || model == "*" }

// Candidates lists every expert that could answer q: this peer, catalog
// entries serving the model, and, when those are none, DHT providers of the
// model. Measured speed and recent failures come from the trust store; every
// input is labelled with its source, and claims are vetted (see vet).
func (r *Router) Candidates(ctx context.Context, q Query) ([]Candidate, error) {
	model := q.Request.Model
	anyModel := isAny(model)
	var out []Candidate
	// A server counts only if its model can do what the request needs
	// (tools, images, JSON, embeddings); unable tells why one could not.
	var unable error
	can := func(m experts.Model) bool {
		err := inference.Check(m.Capabilities, m.Engine, inference.Request{
			Model: m.Name, Messages: q.Request.Messages, Tools: q.Request.Tools, ToolChoice: q.Request.ToolChoice,
			Format: q.Request.Format, Input: q.Request.Input,
		})
		if err != nil && unable == nil {
			unable = err
		}
		return err == nil
	}
	add := func(id string, local bool, m string, domains []string, capacity, load int, loc *geo.Point, addrs []ma.Multiaddr) {
		c := routing.Candidate{Peer: id, Local: local, Model: m, Domains: domains, Capacity: max(capacity, 1), Load: load, DistanceKm: -1}
		if local {
			c.RTT, c.RTTKnown = 0, true
		} else if e := r.cfg.RTT(id); e.Known() && e.Source != geo.SourceReported {
			c.RTT, c.RTTKnown, c.Sources.RTT = e.Value, true, string(e.Source)
		}
		if loc != nil && r.cfg.Local.Location != nil {
			c.DistanceKm = geo.Haversine(*r.cfg.Local.Location, *loc)
		}
		perf := r.cfg.Trust.Perf(id, m)
		c.TTFT, c.DecodeTPS, c.Calls = perf.TTFT, perf.DecodeTPS, perf.Calls
		c.Failures = int(r.cfg.Trust.Score(id).Failures + 0.5)
		r.vet(&c, addrs)
		out = append(out, Candidate{Candidate: c, Addrs: addrs})
	}
	if r.cfg.Local.Backend != nil {
		for _, m := range r.cfg.Local.Models() {
			if (anyModel || m.Name == model) && can(m) {
				l := r.cfg.Local
				add(r.cfg.Self.String(), true, m.Name, l.Domains, l.Capacity, l.Load(), l.Location, nil)
				if anyModel {
					break
				}
			}
		}
	}
	want := model
	if anyModel {
		want = "" // Entry.Serves: any model
	}
	// Unordered: routing ranks them, ties broken by peer ID.
	member := r.cfg.Member
	if member == nil {
		member = func(string) bool { return true }
	}
	for _, e := range r.cfg.Catalog.Select(func(e *experts.Entry) bool { return e.Serves(want) }) {
		if !member(e.Peer) { // outside Select: Member may read the catalog
			continue
		}
		for _, m := range e.Models {
			if (anyModel || m.Name == model) && can(m) {
				add(e.Peer, false, m.Name, e.Domains, e.Capacity, e.Load, e.Location, parseAddrs(e.Addrs))
				reportedSpeed(&out[len(out)-1].Candidate, m)
				break
			}
		}
	}
	if ok, _, _ := inference.Can(nil, q.Request); len(out) == 0 && !anyModel && r.cfg.Providers != nil && ok && unable == nil {
		// (A provider's capabilities are unknown: it gets plain
		// completions only.)
		// Beyond the gossip horizon: ask the DHT who provides the model.
		lctx, cancel := context.WithTimeout(ctx, ProviderLookup)
		found, _ := r.cfg.Providers(lctx, experts.KindModel, model, 8)
		cancel()
		for _, ai := range found {
			if ai.ID != r.cfg.Self && member(ai.ID.String()) {
				add(ai.ID.String(), false, model, nil, 1, 0, nil, ai.Addrs)
			}
		}
	}
	if len(out) == 0 {
		switch {
		case unable != nil && anyModel:
			var ue *inference.UnsupportedError
			if errors.As(unable, &ue) {
				u := *ue
				u.Model, u.Engine = model, ""
				return nil, fmt.Errorf("no model in the swarm serves this request: %w", &u)
			}
			return nil, unable
		case unable != nil:
			return nil, unable
		case anyModel:
			return nil, fmt.Errorf("no peer in the swarm serves any model (%w): %s", inference.ErrUnknownModel, NoModelHint)
		}
		return nil, fmt.Errorf("model %q: no peer in the swarm serves it (GET /v1/models lists those it does): %w", model, inference.ErrUnknownModel)
	}
	return out, nil
}

func parseAddrs(ss []string) []ma.Multiaddr {
	out := make([]ma.Multiaddr, 0, len(ss))
	for _, s := range ss {
		if a, err := ma.NewMultiaddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// decide runs routing over the candidates for q.
func (r *Router) decide(ctx context.Context, q Query) (routing.Decision, []Candidate, error) {
	cands, err := r.Candidates(ctx, q)
	if err != nil {
		return routing.Decision{}, nil, err
	}
	rc := make([]routing.Candidate, len(cands))
	for i, c := range cands {
		rc[i] = c.Candidate
	}
	d := routing.Decide(PromptText(q.Request), rc, r.cfg.Weights, r.cfg.MaxK, q.K, q.Domains)
	if r.cfg.Probe != nil {
		if ais := unmeasured(d.Candidates, cands, ProbeTop); len(ais) > 0 {
			r.cfg.Probe(ais)
		}
	}
	return d, cands, nil
}

// Route is the routing decision for q, without running it.
func (r *Router) Route(ctx context.Context, q Query) (routing.Decision, error) {
	d, _, err := r.decide(ctx, q)
	return d, err
}

// Complete routes q, dispatches it to the chosen experts in parallel, and
// streams one answer to emit.
func (r *Router) Complete(ctx context.Context, q Query, emit func(expert string, c inference.Chunk) error) (Answer, error) {
	strategy, err := inference.ParseStrategy(q.Strategy)
	if err != nil {
		return Answer{}, err
	}
	d, cands, err := r.decide(ctx, q)
	if err != nil {
		return Answer{}, err
	}
	if r.verifies(q) {
		// A sampled request nobody can verify runs as usual; one the
		// client asked to verify fails (ErrNoAgreement).
		if targets := r.verifyTargets(d, cands); len(targets) >= 2 || q.Verify {
			ans, err := r.completeVerified(ctx, q, targets, answering(q, cands, emit))
			if err == nil {
				ans.Model = answeredModel(q.Request.Model, "", ans.Experts, cands)
			}
			return ans, err
		}
	}
	primary, spares := r.trusted(r.Targets(d, cands))
	req := q.Request
	if isAny(req.Model) {
		req.Model = "" // each target fills in its own model
	}
	res, err := r.cfg.Dispatch.Dispatch(ctx, primary, spares, strategy, req, answering(q, cands, emit))
	if err != nil {
		return Answer{}, err
	}
	ans := Answer{Model: q.Request.Model, Text: res.Text, Final: res.Final, Experts: res.Experts, Failovers: res.Failovers}
	if strategy == inference.Blend {
		a := res.Agreement
		ans.Agreement = &a
	}
	if len(ans.Experts) == 0 && res.Expert != "" {
		ans.Experts = []string{res.Expert}
	}
	ans.Model = answeredModel(q.Request.Model, res.Expert, ans.Experts, cands)
	return ans, nil
}

// answering wraps emit to tell q.Answering which model each expert runs.
func answering(q Query, cands []Candidate, emit func(string, inference.Chunk) error) func(string, inference.Chunk) error {
	if q.Answering == nil {
		return emit
	}
	var mu sync.Mutex
	var told []string
	return func(expert string, c inference.Chunk) error {
		mu.Lock()
		first := !slices.Contains(told, expert)
		if first {
			told = append(told, expert)
		}
		mu.Unlock()
		if first {
			q.Answering(expert, answeredModel(q.Request.Model, expert, nil, cands))
		}
		return emit(expert, c)
	}
}

// NoModelHint says what to do when no peer serves any model.
const NoModelHint = "start a peer that serves one (with Ollama running: mwpeer --engine ollama; without: mwpeer --engine embedded, " +
	"the built-in model), or join a swarm that has one (mwpeer --bootstrap ADDR, the line `mwpeer id` prints on one of its peers)"

// answeredModel is the model the expert that answered ran: asked is the
// one asked for, or, for AnyModel, the one routing chose for that expert.
func answeredModel(asked, expert string, experts []string, cands []Candidate) string {
	if !isAny(asked) {
		return asked
	}
	if expert == "" && len(experts) > 0 {
		expert = experts[0]
	}
	for _, c := range cands {
		if c.Peer == expert {
			return c.Model
		}
	}
	return asked
}

// Targets turns a decision into dispatch targets: the chosen experts, then
// the other candidates in rank order as spares. When the decision has one
// candidate, it may answer over a relayed connection; otherwise a peer
// reachable only through a relay steps aside (see p2p.RelayPolicy).
func (r *Router) Targets(d routing.Decision, cands []Candidate) (primary, spares []inference.Target) {
	byPeer := make(map[string]Candidate, len(cands))
	for _, c := range cands {
		byPeer[c.Peer] = c
	}
	only := len(d.Candidates) <= 1
	chosen := map[string]bool{}
	for _, s := range d.Chosen {
		primary = append(primary, r.target(byPeer[s.Peer], only))
		chosen[s.Peer] = true
	}
	for _, s := range d.Candidates {
		if !chosen[s.Peer] {
			spares = append(spares, r.target(byPeer[s.Peer], only))
		}
	}
	return primary, spares
}

// target turns a candidate into a dispatch target whose events go to the
// trust store.
func (r *Router) target(c Candidate, only bool) inference.Target {
	model := c.Model
	var run func(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error)
	switch {
	case c.Local:
		run = r.cfg.Local.Backend.Generate
	default:
		id, err := peer.Decode(c.Peer)
		if err != nil {
			run = func(context.Context, inference.Request, func(inference.Chunk) error) (inference.Final, error) {
				return inference.Final{}, fmt.Errorf("%w: bad peer ID %q: %v", inference.ErrNoExpert, c.Peer, err)
			}
			break
		}
		run = func(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
			return r.cfg.Remote.Call(ctx, id, c.Addrs, only, req, emit)
		}
	}
	return inference.Target{
		Name: c.Peer,
		Run: func(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
			req.Model = model
			return run(ctx, req, emit)
		},
		Observe: func(ev inference.ExpertEvent) { r.observe(c.Peer, model, ev) },
		Pace:    r.pace(c.Peer, model),
	}
}

// pace is what this peer measured of expert serving model: dispatch judges
// its stalls and hedges it by that (see inference.DispatchConfig).
func (r *Router) pace(expert, model string) inference.Pace {
	perf := r.cfg.Trust.Perf(expert, model)
	p := inference.Pace{TTFT: perf.TTFT}
	if perf.DecodeTPS > 0 {
		p.Gap = time.Duration(float64(time.Second) / perf.DecodeTPS)
	}
	return p
}

// observe records an expert's event in the trust store.
func (r *Router) observe(expert, model string, ev inference.ExpertEvent) {
	t := r.cfg.Trust
	switch ev.Kind {
	case inference.EventChosen:
		t.Observe(expert, trust.Event{Kind: trust.Chosen, Model: model})
	case inference.EventDone:
		t.Observe(expert, trust.Event{Kind: trust.Success, Model: model, TTFT: ev.TTFT, Tokens: ev.Tokens, Duration: ev.Duration})
	case inference.EventStalled: // a suspect too, until it answers
		t.Observe(expert, trust.Event{Kind: trust.Stalled, Model: model})
	case inference.EventLate:
		t.Suspect(expert, ev.Err.Error())
	case inference.EventOutvoted:
		t.Convict(expert, model, ev.Err.Error())
	case inference.EventFailed:
		k := trust.Failure
		if NotAFault(ev.Err) {
			k = trust.Refused
		}
		if errors.Is(ev.Err, inference.ErrBusy) {
			r.busy.mark(expert)
		}
		t.Observe(expert, trust.Event{Kind: k, Model: model})
	}
	if r.cfg.Observe != nil {
		r.cfg.Observe(expert, model, ev)
	}
}

// NotAFault reports whether err means the expert declined or could not be
// reached the way policy wants, rather than that it failed: busy, refused,
// or reachable only through a relay.
func NotAFault(err error) bool {
	return errors.Is(err, inference.ErrBusy) || errors.Is(err, inference.ErrRefused) || errors.Is(err, p2p.ErrRelayOnly)
}
