package mwpeer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/routing"
)

// AnyModel in a request lets routing pick among every model in the swarm.
const AnyModel = "auto"

// providerLookup bounds the DHT lookup made when the catalog knows no
// server of a model or domain.
const providerLookup = 2 * time.Second

// SwarmModels implements api.Swarm: every model served by this peer or a
// catalog entry, with how many peers serve it.
func (p *Peer) SwarmModels() []api.SwarmModel {
	byName := map[string]*api.SwarmModel{}
	add := func(m experts.Model, local bool) {
		sm, ok := byName[m.Name]
		if !ok {
			sm = &api.SwarmModel{ID: m.Name}
			byName[m.Name] = sm
		}
		sm.Peers++
		sm.Local = sm.Local || local
		if m.Engine != "" && !slices.Contains(sm.Engines, m.Engine) {
			sm.Engines = append(sm.Engines, m.Engine)
		}
	}
	for _, m := range p.Models() {
		add(m, true)
	}
	for _, e := range p.Catalog.Snapshot() {
		for _, m := range e.Models {
			add(m, false)
		}
	}
	out := make([]api.SwarmModel, 0, len(byName))
	for _, sm := range byName {
		sort.Strings(sm.Engines)
		out = append(out, *sm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// promptText is what the classifier reads: the user's words.
func promptText(r inference.Request) string {
	if len(r.Messages) == 0 {
		return r.Prompt
	}
	var sb strings.Builder
	for _, m := range r.Messages {
		if m.Role == "user" {
			sb.WriteString(m.Content)
			sb.WriteString("\n")
		}
	}
	return sb.String()
}

// candidate pairs a routing candidate with what is needed to reach it.
type candidate struct {
	routing.Candidate
	addrs []ma.Multiaddr
}

// candidates lists every expert that could answer q: this peer, catalog
// entries serving the model, and (when those are none) DHT providers.
func (p *Peer) candidates(ctx context.Context, q api.Query) ([]candidate, error) {
	model := q.Request.Model
	anyModel := model == AnyModel || model == "*"
	self := p.ID().String()
	var out []candidate
	add := func(id string, local bool, m string, domains []string, capacity, load int, loc *geo.Point, addrs []ma.Multiaddr) {
		c := routing.Candidate{Peer: id, Local: local, Model: m, Domains: domains, Capacity: max(capacity, 1), Load: load, DistanceKm: -1}
		if local {
			c.RTT, c.RTTKnown = 0, true
		} else if r := p.EstimateRTT(id); r.Known() {
			c.RTT, c.RTTKnown = r.Value, true
		}
		if loc != nil && p.cfg.Location != nil {
			c.DistanceKm = geo.Haversine(*p.cfg.Location, *loc)
		}
		c.TTFT, c.DecodeTPS, c.Failures = p.stats.lookup(id, m)
		out = append(out, candidate{Candidate: c, addrs: addrs})
	}
	if p.backend != nil {
		for _, m := range p.Models() {
			if anyModel || m.Name == model {
				add(self, true, m.Name, p.cfg.Domains, p.cfg.Capacity, int(p.load.Load()), p.cfg.Location, nil)
				if anyModel {
					break
				}
			}
		}
	}
	// Unordered: routing ranks them, ties broken by peer ID.
	servers := p.Catalog.Select(func(e *experts.Entry) bool { return e.Serves(modelOrAny(model, anyModel)) })
	for _, e := range servers {
		for _, m := range e.Models {
			if anyModel || m.Name == model {
				add(e.Peer, false, m.Name, e.Domains, e.Capacity, e.Load, e.Location, parseAddrs(e.Addrs))
				break
			}
		}
	}
	if len(out) == 0 && !anyModel {
		// Beyond the gossip horizon: ask the DHT who provides the model.
		lctx, cancel := context.WithTimeout(ctx, providerLookup)
		found, _ := experts.FindProviders(lctx, p.Host.DHT, experts.KindModel, model, 8)
		cancel()
		for _, ai := range found {
			if ai.ID == p.ID() {
				continue
			}
			add(ai.ID.String(), false, model, nil, 1, 0, nil, ai.Addrs)
		}
	}
	if len(out) == 0 {
		if anyModel {
			return nil, fmt.Errorf("%w: no peer in the swarm serves any model", inference.ErrNoExpert)
		}
		return nil, fmt.Errorf("model %q: no peer in the swarm serves it: %w", model, inference.ErrUnknownModel)
	}
	return out, nil
}

// modelOrAny is the model name Entry.Serves takes: "" for any model.
func modelOrAny(model string, anyModel bool) string {
	if anyModel {
		return ""
	}
	return model
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
func (p *Peer) decide(ctx context.Context, q api.Query) (routing.Decision, []candidate, error) {
	cands, err := p.candidates(ctx, q)
	if err != nil {
		return routing.Decision{}, nil, err
	}
	rc := make([]routing.Candidate, len(cands))
	for i, c := range cands {
		rc[i] = c.Candidate
	}
	d := routing.Decide(promptText(q.Request), rc, p.cfg.Weights, p.cfg.MaxK, q.K, q.Domains)
	return d, cands, nil
}

// Route implements api.Swarm: the routing decision for q, without running it.
func (p *Peer) Route(q api.Query) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), providerLookup+time.Second)
	defer cancel()
	d, _, err := p.decide(ctx, q)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Complete implements api.Swarm: route q, dispatch it to the chosen experts
// in parallel, and stream one answer.
func (p *Peer) Complete(ctx context.Context, q api.Query, emit func(expert string, c inference.Chunk) error) (api.Answer, error) {
	strategy, err := inference.ParseStrategy(q.Strategy)
	if err != nil {
		return api.Answer{}, err
	}
	d, cands, err := p.decide(ctx, q)
	if err != nil {
		return api.Answer{}, err
	}
	byPeer := make(map[string]candidate, len(cands))
	for _, c := range cands {
		byPeer[c.Peer] = c
	}
	var primary, spares []inference.Target
	chosen := map[string]bool{}
	// The only expert may answer over a relayed connection; others step
	// aside for an expert reachable directly (see callRemote).
	only := len(d.Candidates) <= 1
	for _, s := range d.Chosen {
		primary = append(primary, p.target(byPeer[s.Peer], only))
		chosen[s.Peer] = true
	}
	for _, s := range d.Candidates {
		if !chosen[s.Peer] {
			spares = append(spares, p.target(byPeer[s.Peer], only))
		}
	}
	req := q.Request
	if req.Model == AnyModel || req.Model == "*" {
		req.Model = "" // each target fills in its own model
	}
	res, err := p.dispatch.Dispatch(ctx, primary, spares, strategy, req, emit)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
			return api.Answer{}, err
		}
		return api.Answer{}, err
	}
	ans := api.Answer{Text: res.Text, Final: res.Final, Experts: res.Experts, Failovers: res.Failovers}
	if strategy == inference.Blend {
		a := res.Agreement
		ans.Agreement = &a
	}
	if len(ans.Experts) == 0 && res.Expert != "" {
		ans.Experts = []string{res.Expert}
	}
	for i, e := range ans.Experts {
		if e == "local" {
			ans.Experts[i] = p.ID().String()
		}
	}
	return ans, nil
}

// target turns a candidate into a dispatch target that records how it did.
// only says it is the one expert for the prompt (see callRemote).
func (p *Peer) target(c candidate, only bool) inference.Target {
	model := c.Model
	var run func(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error)
	name := c.Peer
	if c.Local {
		name = p.ID().String()
		run = p.backend.Generate
	} else {
		id, err := peer.Decode(c.Peer)
		if err != nil {
			run = func(context.Context, inference.Request, func(inference.Chunk) error) (inference.Final, error) {
				return inference.Final{}, fmt.Errorf("bad peer ID %q: %w", c.Peer, err)
			}
		} else {
			if len(c.addrs) > 0 {
				p.Host.Peerstore().AddAddrs(id, c.addrs, peerstore.TempAddrTTL)
			}
			run = func(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
				return p.callRemote(ctx, id, req, emit, only)
			}
		}
	}
	return inference.Target{Name: name, Run: func(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
		req.Model = model
		start := time.Now()
		f, err := run(ctx, req, emit)
		switch {
		case err == nil:
			p.stats.success(name, model, f.TTFT, f.CompletionTokens, time.Since(start))
		case ctx.Err() == nil: // a failure of its own, not a cancelled loser
			p.stats.failure(name, model)
		}
		return f, err
	}}
}
