package mwpeer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/moe"
)

// EngineSharded is the engine name announced for sharded MoE models.
const EngineSharded = "sharded"

// sharding is a peer's part in sharded Mixture-of-Experts models: the shard
// store and its transfer protocol, the experts it serves to others, and a
// backend for each model whose dense shard it holds.
type sharding struct {
	p      *Peer
	store  *shard.Store
	shards interface{ Close() error }
	server *moe.Server
	client *moe.Client
	multi  *inference.Multi

	gen atomic.Uint64 // bumped on every catalog change

	// loadMu serializes load and fetches, so two specs never fetch the same
	// shard or load the same model at once.
	loadMu sync.Mutex

	mu     sync.Mutex
	models map[string]*shardedModel // by model ID
}

// shardedModel is one model this peer holds some of.
type shardedModel struct {
	man     *shard.Manifest
	key     moe.ModelKey
	dense   bool
	experts *moe.Experts // set when dense
	fetch   string       // fetch progress or error, for /api/experts
	logged  time.Time    // last progress log line

	idxMu  sync.Mutex
	idxGen uint64
	idxAt  time.Time
	hosts  [][]peer.ID // layer*experts+expert → remote hosts
}

// startSharding opens the shard store and serves what it holds. It returns
// nil when the peer takes no part in sharded models.
func startSharding(p *Peer, engine inference.Backend) (*sharding, error) {
	cfg := p.cfg
	if len(cfg.Shards) == 0 && len(cfg.HostExperts) == 0 {
		return nil, nil
	}
	dirs := cfg.Shards
	if len(dirs) == 0 {
		dirs = []string{filepath.Join(cfg.DataDir, "shards")}
	}
	store, err := shard.OpenStore(dirs...)
	if err != nil {
		return nil, fmt.Errorf("--shards: %w", err)
	}
	s := &sharding{p: p, store: store, models: make(map[string]*shardedModel)}
	s.server = moe.NewServer(p.Host, moe.ServerConfig{Concurrency: max(2, cfg.Capacity), Log: p.log})
	s.client = moe.NewClient(p.Host)
	s.shards = shard.Serve(p.Host, store)
	s.multi = inference.NewMulti(engine)
	for _, m := range store.Models() {
		if err := s.load(m); err != nil {
			p.log.Warn("sharded model not served", "model", m.Name, "id", m.ID(), "err", err)
		}
	}
	return s, nil
}

// close stops serving shards and experts.
func (s *sharding) close() {
	s.shards.Close()
	s.server.Close()
	s.client.Close()
}

// load serves every shard of m the store holds: the experts to other peers,
// and the model itself when the dense shard is here. Shards already served
// are skipped, so load can run again after a fetch.
func (s *sharding) load(m *shard.Manifest) error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	return s.loadLocked(m)
}

func (s *sharding) loadLocked(m *shard.Manifest) error {
	sm, err := s.track(m)
	if err != nil {
		return err
	}
	key := sm.key
	var errs []error
	held := 0
	for _, sh := range m.Shards {
		if sh.Role != shard.RoleExpert || !s.store.Has(sh.Hash) || s.server.Get(key, sh.Layer, sh.Expert) != nil {
			continue
		}
		x, err := moe.LoadExpert(s.store, m.ID(), sh.Layer, sh.Expert)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.server.Add(key, sh.Layer, sh.Expert, x)
		held++
	}
	s.mu.Lock()
	dense := sm.dense
	s.mu.Unlock()
	if !dense && s.store.Has(m.Dense().Hash) {
		model, err := moe.LoadDense(s.store, m.ID())
		if err != nil {
			errs = append(errs, err)
		} else {
			x := &moe.Experts{
				Model:  key,
				Local:  s.server,
				Client: s.client,
				Hosts:  func(l, e int) []peer.ID { return s.hostsOf(sm, l, e) },
				RTT:    s.p.rttTo,
			}
			b := shardedBackend{llama.NewModelBackend(model, llama.BackendOptions{
				Name: m.Name, Capacity: max(1, s.p.cfg.Capacity), QueueWait: 5 * time.Second, Experts: x,
			})}
			s.mu.Lock()
			sm.dense, sm.experts = true, x
			s.mu.Unlock()
			s.multi.Add(b)
		}
	}
	if held > 0 || dense != sm.dense {
		s.p.log.Info("serving shards", "model", m.Name, "id", m.ID()[:12], "experts", len(s.server.Hosted(key)), "runs_model", sm.dense)
	}
	return errors.Join(errs...)
}

// track returns the entry of m, making it if needed.
func (s *sharding) track(m *shard.Manifest) (*shardedModel, error) {
	key, err := moe.ParseModelKey(m.ID())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sm := s.models[m.ID()]
	if sm == nil {
		sm = &shardedModel{man: m, key: key}
		s.models[m.ID()] = sm
	}
	return sm, nil
}

// hostsOf returns the remote peers that announce expert (l, e) of sm. The
// index is rebuilt when the catalog changed, at most every 250 ms.
func (s *sharding) hostsOf(sm *shardedModel, l, e int) []peer.ID {
	sh := sm.man.Shape
	sm.idxMu.Lock()
	defer sm.idxMu.Unlock()
	if gen := s.gen.Load(); sm.hosts == nil || (gen != sm.idxGen && time.Since(sm.idxAt) > 250*time.Millisecond) {
		hosts := make([][]peer.ID, sh.Layers*sh.Experts)
		id := sm.man.ID()
		for _, en := range s.p.Catalog.Select(func(en *experts.Entry) bool { _, ok := en.ShardsOf(id); return ok }) {
			sum, _ := en.ShardsOf(id)
			pid, err := peer.Decode(en.Peer)
			if err != nil {
				continue
			}
			for i := range hosts {
				if sum.Has(i/sh.Experts, i%sh.Experts) {
					hosts[i] = append(hosts[i], pid)
				}
			}
		}
		sm.hosts, sm.idxGen, sm.idxAt = hosts, gen, time.Now()
	}
	if l < 0 || l >= sh.Layers || e < 0 || e >= sh.Experts {
		return nil
	}
	return sm.hosts[l*sh.Experts+e]
}

// summaries are this peer's shard summaries for its announcements.
func (s *sharding) summaries() []experts.ShardSummary {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]experts.ShardSummary, 0, len(s.models))
	for _, sm := range s.models {
		sh := sm.man.Shape
		sum := experts.NewShardSummary(sm.man.ID(), sm.man.Name, sh.Layers, sh.Experts)
		sum.Dense = sm.dense
		for _, le := range s.server.Hosted(sm.key) {
			sum.Set(le[0], le[1])
		}
		if sum.Dense || sum.Count() > 0 {
			out = append(out, sum)
		}
	}
	slices.SortFunc(out, func(a, b experts.ShardSummary) int { return strings.Compare(a.Model, b.Model) })
	if len(out) > experts.MaxShardModels {
		out = out[:experts.MaxShardModels]
	}
	return out
}

// dhtKeys are the content keys this peer provides for its shards: every
// shard it holds, and the manifests (fetchable by model ID).
func (s *sharding) dhtKeys() []string {
	var keys []string
	for _, h := range s.store.Hashes() {
		keys = append(keys, experts.KindShard+"/"+h)
	}
	for _, m := range s.store.Models() {
		keys = append(keys, experts.KindModel+"/"+m.ID())
	}
	return keys
}

// sources finds peers to fetch hash from: the DHT's providers, then peers
// whose announcements say they hold it.
func (s *sharding) sources(ctx context.Context, hash string) []peer.ID {
	var out []peer.ID
	seen := map[peer.ID]bool{s.p.ID(): true}
	add := func(id peer.ID) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	// Catalog first: those peers are live and usually connected.
	for _, en := range s.p.Catalog.Select(func(en *experts.Entry) bool { return len(en.Shards) > 0 }) {
		pid, err := peer.Decode(en.Peer)
		if err != nil {
			continue
		}
		for _, sum := range en.Shards {
			if sum.Model == hash || s.summaryHolds(sum, hash) {
				add(pid)
			}
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kind := experts.KindShard
	if s.isModelID(hash) {
		kind = experts.KindModel
	}
	if ais, err := experts.FindProviders(fctx, s.p.Host.DHT, kind, hash, 20); err == nil {
		for _, ai := range ais {
			if len(ai.Addrs) > 0 {
				s.p.Host.Peerstore().AddAddrs(ai.ID, ai.Addrs, 10*time.Minute)
			}
			add(ai.ID)
		}
	}
	return out
}

// summaryHolds reports whether a peer with summary sum holds shard hash.
func (s *sharding) summaryHolds(sum experts.ShardSummary, hash string) bool {
	m, ok := s.store.Manifest(sum.Model)
	if !ok {
		return false
	}
	if m.Dense().Hash == hash {
		return sum.Dense
	}
	for _, sh := range m.Shards {
		if sh.Hash == hash && sh.Role == shard.RoleExpert {
			return sum.Has(sh.Layer, sh.Expert)
		}
	}
	return false
}

func (s *sharding) isModelID(h string) bool {
	if _, ok := s.store.Manifest(h); ok {
		return true
	}
	return len(s.p.Catalog.Select(func(en *experts.Entry) bool { _, ok := en.ShardsOf(h); return ok })) > 0
}

var errNotHeard = errors.New("no sharded model of that name or ID heard of yet")

// resolve turns a spec's MODEL (ID, ID prefix or name) into a model ID,
// looking in the store and in the swarm's announcements.
func (s *sharding) resolve(model string) (string, error) {
	var ids []string
	match := func(id, name string) {
		if (id == model || (len(model) >= 8 && strings.HasPrefix(id, model)) || name == model) && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	for _, m := range s.store.Models() {
		match(m.ID(), m.Name)
	}
	for _, en := range s.p.Catalog.Select(func(en *experts.Entry) bool { return len(en.Shards) > 0 }) {
		for _, sum := range en.Shards {
			match(sum.Model, sum.Name)
		}
	}
	switch {
	case len(ids) == 1:
		return ids[0], nil
	case len(ids) > 1:
		return "", fmt.Errorf("%q names %d models: %s", model, len(ids), strings.Join(ids, ", "))
	case shard.ValidHash(model):
		return model, nil // not heard of yet: ask the DHT
	}
	return "", fmt.Errorf("%w: %q", errNotHeard, model)
}

// host keeps spec satisfied: it finds the manifest, fetches the shards the
// spec asks for that the store lacks, and serves them. It retries until
// everything is here or ctx ends.
func (s *sharding) host(ctx context.Context, spec HostSpec) {
	backoff := time.Second
	for {
		err := s.hostOnce(ctx, spec)
		if err == nil || ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNotHeard) && backoff < 8*time.Second {
			s.p.log.Info("waiting to hear of the model", "spec", spec.String())
		} else {
			s.p.log.Warn("hosting shards", "spec", spec.String(), "err", err, "retry_in", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (s *sharding) hostOnce(ctx context.Context, spec HostSpec) error {
	id, err := s.resolve(spec.Model)
	if err != nil {
		return err
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	f := &shard.Fetcher{Host: s.p.Host, Store: s.store, Sources: s.sources, Progress: func(pr shard.Progress) { s.progress(id, pr) }}
	m, ok := s.store.Manifest(id)
	if !ok {
		if m, err = f.FetchManifest(ctx, id); err != nil {
			return fmt.Errorf("manifest %s: %w", id[:12], err)
		}
	}
	if _, err := s.track(m); err != nil {
		return err
	}
	var want []shard.Shard
	for _, sh := range m.Shards {
		if s.store.Has(sh.Hash) {
			continue
		}
		if (sh.Role == shard.RoleDense && spec.Dense) || (sh.Role == shard.RoleExpert && spec.Wants(sh.Layer, sh.Expert)) {
			want = append(want, sh)
		}
	}
	if len(want) > 0 {
		s.p.log.Info("fetching shards", "model", m.Name, "id", id[:12], "shards", len(want))
		if err := f.Fetch(ctx, m, want); err != nil {
			return err
		}
	}
	if err := s.loadLocked(m); err != nil {
		return err
	}
	s.setFetch(id, "")
	s.p.refreshModels(ctx, false)
	s.p.Gossip.Changed()
	return nil
}

// progress shows a fetch in /api/experts and logs dropped sources and, at
// most every few seconds, how far it got.
func (s *sharding) progress(id string, pr shard.Progress) {
	text := fmt.Sprintf("%.1f of %.1f MB verified", float64(pr.TotalDone)/1e6, float64(pr.Total)/1e6)
	if pr.Dropped != "" {
		s.p.log.Warn("shard source dropped", "model", id[:12], "shard", pr.Shard.String(), "source", pr.Dropped.ShortString(), "err", pr.Err)
	}
	s.mu.Lock()
	sm := s.models[id]
	now := time.Now()
	logIt := sm != nil && (now.Sub(sm.logged) > 5*time.Second || pr.TotalDone == pr.Total)
	if logIt {
		sm.logged = now
	}
	s.mu.Unlock()
	if logIt {
		s.p.log.Info("fetching shards", "model", id[:12], "progress", text)
	}
	s.setFetch(id, text)
}

func (s *sharding) setFetch(id, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sm := s.models[id]; sm != nil {
		sm.fetch = text
	}
}

// shardView is GET /api/experts: every sharded model this peer holds (s, if
// not nil) or hears of in announcements.
func shardView(p *Peer, s *sharding) api.Experts {
	byID := map[string]*api.ShardedModel{}
	get := func(id, name string, layers, nexperts int) *api.ShardedModel {
		m := byID[id]
		if m == nil {
			m = &api.ShardedModel{ID: id, Name: name, Layers: layers, Experts: nexperts, Hosts: map[string]int{}, Runners: []string{}}
			m.Replicas = make([][]int, layers)
			for l := range m.Replicas {
				m.Replicas[l] = make([]int, nexperts)
			}
			byID[id] = m
		}
		return m
	}
	count := func(m *api.ShardedModel, who string, sum experts.ShardSummary) {
		if sum.Layers != m.Layers || sum.Experts != m.Experts {
			return
		}
		if sum.Dense {
			m.Runners = append(m.Runners, who)
		}
		if n := sum.Count(); n > 0 {
			m.Hosts[who] = n
		}
		for l := range m.Layers {
			for e := range m.Experts {
				if sum.Has(l, e) {
					m.Replicas[l][e]++
				}
			}
		}
	}
	if s != nil {
		self := p.ID().String()
		for _, sum := range s.summaries() {
			count(get(sum.Model, sum.Name, sum.Layers, sum.Experts), self, sum)
		}
		s.mu.Lock()
		for id, sm := range s.models {
			sh := sm.man.Shape
			m := get(id, sm.man.Name, sh.Layers, sh.Experts)
			m.ExpertsUsed = sh.ExpertsUsed
			loc := &api.LocalShards{Dense: sm.dense, Experts: len(s.server.Hosted(sm.key)), Fetch: sm.fetch, Served: s.server.Calls.Load()}
			if x := sm.experts; x != nil {
				loc.LocalCalls, loc.RemoteCalls, loc.Failovers = x.LocalCalls.Load(), x.RemoteCalls.Load(), x.Failovers.Load()
			}
			m.Local = loc
		}
		s.mu.Unlock()
	}
	for _, en := range p.Catalog.Select(func(en *experts.Entry) bool { return len(en.Shards) > 0 }) {
		for _, sum := range en.Shards {
			count(get(sum.Model, sum.Name, sum.Layers, sum.Experts), en.Peer, sum)
		}
	}
	out := api.Experts{Models: []api.ShardedModel{}}
	for _, m := range byID {
		m.MinReplicas = -1
		for l := range m.Replicas {
			for _, n := range m.Replicas[l] {
				if n == 0 {
					m.Missing++
				}
				if m.MinReplicas < 0 || n < m.MinReplicas {
					m.MinReplicas = n
				}
			}
		}
		if m.Missing > 0 {
			m.Warnings = append(m.Warnings, fmt.Sprintf("%d of %d experts have no live host: prompts routed to them fail", m.Missing, m.Layers*m.Experts))
		}
		if len(m.Runners) == 0 {
			m.Warnings = append(m.Warnings, "no peer holds the dense shard: nobody runs this model")
		}
		slices.Sort(m.Runners)
		out.Models = append(out.Models, *m)
	}
	slices.SortFunc(out.Models, func(a, b api.ShardedModel) int { return strings.Compare(a.Name+a.ID, b.Name+b.ID) })
	return out
}

// shardedBackend is the engine of a sharded model, named as such.
type shardedBackend struct{ *llama.Backend }

func (shardedBackend) Name() string { return EngineSharded }

// rttTo estimates the round trip to id from the RTT matrix.
func (p *Peer) rttTo(id peer.ID) (time.Duration, bool) {
	r := p.Matrix.Estimate(p.ID().String(), id.String())
	return r.Value, r.Known()
}

// Experts implements api.Node: the sharded models this peer knows of.
func (p *Peer) Experts() api.Experts { return shardView(p, p.sharding) }
