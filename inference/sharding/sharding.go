package sharding

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/experts/shard/transfer"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/moe"
	"github.com/mwpeer/mwpeer/inference/tally"
	"github.com/mwpeer/mwpeer/receipt"
	"github.com/mwpeer/mwpeer/trust"
)

// EngineSharded is the engine name announced for sharded MoE models.
const EngineSharded = "sharded"

// Catalog is what sharding reads of the catalog (experts.Catalog).
type Catalog interface {
	Select(keep func(*experts.Entry) bool) []experts.Entry
}

// Providers finds up to max peers providing kind/name on the DHT
// (experts.FindProviders over the host's DHT).
type Providers func(ctx context.Context, kind, name string, max int) ([]peer.AddrInfo, error)

// Config is what a peer's part in sharded models depends on.
type Config struct {
	// Host carries the shard and expert protocols.
	Host host.Host
	// Dirs are the shard directories to serve; the first takes fetched
	// shards.
	Dirs []string
	// Specs are the parts of sharded models to hold, fetched when missing.
	Specs []HostSpec
	// Engine is the peer's own backend (nil: none); the models whose dense
	// shard is here are served next to it.
	Engine   inference.Backend
	Capacity int // generations at once per model, and expert calls served (at least 2)

	Catalog   Catalog
	Providers Providers                           // nil: no DHT lookups
	RTT       func(peer.ID) (time.Duration, bool) // round-trip estimate to a peer
	Trust     *trust.Store                        // expert hosts and shard sources are ranked and judged here
	// Admit, if set, decides whether to compute an expert call for another
	// peer (see expert.ServerConfig.Admit).
	Admit func(ctx context.Context, caller peer.ID, c expert.Call) error
	// AdmitShard, if set, decides whether to upload shards to another peer
	// (see transfer.ServerConfig.Admit).
	AdmitShard func(caller peer.ID) error
	// UploadRate and PeerUploadRate bound the bytes of shards sent per
	// second, in all and to one peer (0: no limit; see transfer.ServerConfig).
	UploadRate, PeerUploadRate float64
	// Prepare applies the relay policy to expert calls (see expert.Client).
	Prepare func(ctx context.Context, p peer.ID) (context.Context, error)
	// VerifyExperts is the share of remote expert calls spot-checked on a
	// second replica (0: none; see moe.Experts.Verify and moe.DefaultVerify).
	VerifyExperts float64
	// OnBadHost, if set, hears of each expert host caught answering wrongly,
	// once per offence (see moe.Experts.OnBadHost).
	OnBadHost func(host peer.ID, model, reason string)
	// Changed is called when what this peer holds changed (after a fetch),
	// so the peer re-reads its models and re-announces.
	Changed func(ctx context.Context)
	// Key is the host's private key. It signs the tallies of expert calls
	// and shard bytes this peer settles (package tally); nil: nothing is
	// settled, the work is only counted.
	Key crypto.PrivKey
	// StoreTally keeps every tally settled, as payer or as worker:
	// signed by both, or by the payer only when disputed (see
	// tally.Payer.Store and tally.ServiceConfig.Store).
	StoreTally func(*receipt.SignedTally) error
	Log        *slog.Logger
}

// Sharding is a peer's part in sharded Mixture-of-Experts models: the shard
// store and its transfer protocol, the experts it serves to others, and a
// backend for each model whose dense shard it holds.
type Sharding struct {
	cfg    Config
	self   peer.ID
	log    *slog.Logger
	store  *shard.Store
	shards *transfer.Server
	server *expert.Server
	client *expert.Client
	multi  *inference.Multi
	payer  *tally.Payer   // nil without a key
	tally  *tally.Service // nil without a key
	due    chan struct{}  // a generation ended: its expert calls are due

	gen atomic.Uint64 // bumped on every catalog change

	// loadMu serializes load and fetches, so two specs never fetch the same
	// shard or load the same model at once.
	loadMu sync.Mutex

	mu     sync.Mutex
	models map[string]*shardedModel // by model ID
	pinned map[string]string        // a spec's MODEL → the model ID it resolved to
}

// shardedModel is one model this peer holds some of.
type shardedModel struct {
	man     *shard.Manifest
	key     expert.ModelKey
	dense   bool
	experts *moe.Experts   // set when dense
	backend *llama.Backend // set when dense: owns the mapped dense shard
	fetch   string         // fetch progress or error, for /api/experts
	logged  time.Time      // last progress log line

	idxMu   sync.Mutex
	idxGen  uint64
	idxAt   time.Time
	hosts   [][]peer.ID        // layer*experts+expert → remote hosts
	kernels map[peer.ID]string // remote host → kernel set its summary announces
}

// Open opens the shard store, registers the shard and expert protocols on
// the host and serves what the store holds. Run fetches what the specs ask
// for; Close undoes Open.
func Open(cfg Config) (*Sharding, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Trust == nil {
		cfg.Trust = trust.New(trust.Config{})
	}
	store, err := shard.OpenStore(cfg.Dirs...)
	if err != nil {
		return nil, err
	}
	s := &Sharding{cfg: cfg, self: cfg.Host.ID(), log: cfg.Log, store: store, models: make(map[string]*shardedModel),
		pinned: make(map[string]string), due: make(chan struct{}, 1)}
	s.server = expert.NewServer(cfg.Host, expert.ServerConfig{Concurrency: max(2, cfg.Capacity), Admit: cfg.Admit, Log: cfg.Log})
	s.client = expert.NewClient(cfg.Host)
	s.client.Prepare = cfg.Prepare
	s.shards = transfer.NewServer(cfg.Host, store, transfer.ServerConfig{Admit: cfg.AdmitShard, Logger: cfg.Log,
		UploadRate: cfg.UploadRate, PeerUploadRate: cfg.PeerUploadRate})
	if cfg.Key != nil {
		s.payer = &tally.Payer{Host: cfg.Host, Key: cfg.Key, Store: cfg.StoreTally, Log: cfg.Log}
		s.tally = tally.NewService(cfg.Host, tally.ServiceConfig{
			Key: cfg.Key, Experts: s.server.Meter, Shards: s.shards.Meter, FeedForward: s.feedForward,
			Store: cfg.StoreTally, Log: cfg.Log,
		})
	}
	s.multi = inference.NewMulti(cfg.Engine)
	for _, m := range store.Models() {
		if err := s.load(m); err != nil {
			s.log.Warn("sharded model not served", "model", m.Name, "id", m.ID(), "err", err)
		}
	}
	return s, nil
}

// Backend serves the peer's own engine and every sharded model whose dense
// shard is here.
func (s *Sharding) Backend() inference.Backend { return s.multi }

// CatalogChanged tells sharding the catalog changed, so the index of who
// hosts which expert is rebuilt on its next use.
func (s *Sharding) CatalogChanged() { s.gen.Add(1) }

// Run keeps every spec satisfied and settles the expert calls of this
// peer's generations until ctx ends.
func (s *Sharding) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, spec := range s.cfg.Specs {
		wg.Go(func() { s.host(ctx, spec) })
	}
	if s.payer != nil {
		wg.Go(func() { s.settle(ctx) })
	}
	wg.Wait()
	return nil
}

// settle settles the expert calls of every model this peer runs with their
// hosts: all of them when a generation ended, and every FlushEvery/3 those
// of hosts whose window began moe.FlushEvery ago or more (long
// generations). When ctx ends it settles what is left, for at most
// settleAtExit.
func (s *Sharding) settle(ctx context.Context) {
	tick := time.NewTicker(moe.FlushEvery / 3)
	defer tick.Stop()
	each := func(ctx context.Context, age time.Duration) {
		for _, x := range s.runners() {
			if err := x.SettleOlder(ctx, age); err != nil {
				s.log.Debug("expert tallies", "model", x.Model.String()[:12], "err", err)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleAtExit)
			each(ctx, 0)
			cancel()
			return
		case <-s.due:
			each(ctx, 0)
		case <-tick.C:
			each(ctx, moe.FlushEvery)
		}
	}
}

// settleAtExit bounds the last settlements when Run ends.
const settleAtExit = 2 * time.Second

// generationEnded marks the expert calls of this peer's generations due for
// settling.
func (s *Sharding) generationEnded() {
	select {
	case s.due <- struct{}{}:
	default:
	}
}

// runners returns the Experts of every model this peer runs.
func (s *Sharding) runners() []*moe.Experts {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*moe.Experts
	for _, sm := range s.models {
		if sm.experts != nil {
			out = append(out, sm.experts)
		}
	}
	return out
}

// feedForward returns the experts' hidden size of model (an ID), 0 when
// this peer holds none of it.
func (s *Sharding) feedForward(model string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sm := s.models[model]; sm != nil {
		return sm.man.Shape.FeedForward
	}
	return 0
}

// Close stops serving shards, experts and tallies, then closes the models
// it ran (unmapping their dense shards) once their generations end.
func (s *Sharding) Close() error {
	errs := []error{s.shards.Close(), s.server.Close(), s.client.Close()}
	if s.tally != nil {
		errs = append(errs, s.tally.Close())
	}
	s.mu.Lock()
	var bs []*llama.Backend
	for _, sm := range s.models {
		if sm.backend != nil {
			bs = append(bs, sm.backend)
		}
	}
	s.mu.Unlock()
	for _, b := range bs {
		errs = append(errs, b.Close())
	}
	return errors.Join(errs...)
}

// load serves every shard of m the store holds: the experts to other peers,
// and the model itself when the dense shard is here. Shards already served
// are skipped, so load can run again after a fetch.
func (s *Sharding) load(m *shard.Manifest) error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	return s.loadLocked(m)
}

func (s *Sharding) loadLocked(m *shard.Manifest) error {
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
				RTT:    s.cfg.RTT,
				Trust:  s.cfg.Trust,

				FeedForward: m.Shape.FeedForward,
				Payer:       s.payer,
				Verify:      s.cfg.VerifyExperts,
				Kernels:     func(p peer.ID) string { return s.kernelsOf(sm, p) },
				OnBadHost:   s.cfg.OnBadHost,
				Log:         s.log,
			}
			b := shardedBackend{llama.NewModelBackend(model, llama.BackendOptions{
				Name: m.Name, Capacity: max(1, s.cfg.Capacity), QueueWait: 5 * time.Second, Experts: x,
			}), s.generationEnded}
			s.mu.Lock()
			sm.dense, sm.experts, sm.backend = true, x, b.Backend
			s.mu.Unlock()
			s.multi.Add(b)
		}
	}
	if held > 0 || dense != sm.dense {
		s.log.Info("serving shards", "model", m.Name, "id", m.ID()[:12], "experts", len(s.server.Hosted(key)), "runs_model", sm.dense)
	}
	return errors.Join(errs...)
}

// track returns the entry of m, making it if needed.
func (s *Sharding) track(m *shard.Manifest) (*shardedModel, error) {
	key, err := expert.ParseModelKey(m.ID())
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

// hostsOf returns the remote peers that announce expert (l, e) of sm.
func (s *Sharding) hostsOf(sm *shardedModel, l, e int) []peer.ID {
	sh := sm.man.Shape
	sm.idxMu.Lock()
	defer sm.idxMu.Unlock()
	s.index(sm)
	if l < 0 || l >= sh.Layers || e < 0 || e >= sh.Experts {
		return nil
	}
	return sm.hosts[l*sh.Experts+e]
}

// kernelsOf returns the kernel set remote host p announces for sm's
// experts ("" if it predates the field or hosts none).
func (s *Sharding) kernelsOf(sm *shardedModel, p peer.ID) string {
	sm.idxMu.Lock()
	defer sm.idxMu.Unlock()
	s.index(sm)
	return sm.kernels[p]
}

// index rebuilds sm's index of who hosts which expert, with which kernels,
// when the catalog changed, at most every 250 ms. sm.idxMu is held.
func (s *Sharding) index(sm *shardedModel) {
	gen := s.gen.Load()
	if sm.hosts != nil && (gen == sm.idxGen || time.Since(sm.idxAt) <= 250*time.Millisecond) {
		return
	}
	sh := sm.man.Shape
	hosts := make([][]peer.ID, sh.Layers*sh.Experts)
	kernels := map[peer.ID]string{}
	id := sm.man.ID()
	for _, en := range s.cfg.Catalog.Select(func(en *experts.Entry) bool { _, ok := en.ShardsOf(id); return ok }) {
		sum, _ := en.ShardsOf(id)
		pid, err := peer.Decode(en.Peer)
		if err != nil {
			continue
		}
		kernels[pid] = sum.Kernels
		for i := range hosts {
			if sum.Has(i/sh.Experts, i%sh.Experts) {
				hosts[i] = append(hosts[i], pid)
			}
		}
	}
	sm.hosts, sm.kernels, sm.idxGen, sm.idxAt = hosts, kernels, gen, time.Now()
}

// Summaries are this peer's shard summaries for its announcements.
func (s *Sharding) Summaries() []experts.ShardSummary {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]experts.ShardSummary, 0, len(s.models))
	for _, sm := range s.models {
		sh := sm.man.Shape
		sum := experts.NewShardSummary(sm.man.ID(), sm.man.Name, sh.Layers, sh.Experts)
		sum.Dense = sm.dense
		sum.Kernels = llama.Kernels() // the expert server computes with this process's kernels
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

// DHTKeys are the content keys this peer provides for its shards: every
// shard it holds, and the manifests (fetchable by model ID).
func (s *Sharding) DHTKeys() []string {
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
func (s *Sharding) sources(ctx context.Context, hash string) []peer.ID {
	var out []peer.ID
	seen := map[peer.ID]bool{s.self: true}
	add := func(id peer.ID) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	// Catalog first: those peers are live and usually connected.
	for _, en := range s.cfg.Catalog.Select(func(en *experts.Entry) bool { return len(en.Shards) > 0 }) {
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
	if s.cfg.Providers != nil {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		kind := experts.KindShard
		if s.isModelID(hash) {
			kind = experts.KindModel
		}
		if ais, err := s.cfg.Providers(fctx, kind, hash, 20); err == nil {
			for _, ai := range ais {
				if len(ai.Addrs) > 0 {
					s.cfg.Host.Peerstore().AddAddrs(ai.ID, ai.Addrs, 10*time.Minute)
				}
				add(ai.ID)
			}
		}
	}
	return s.rank(out)
}

// rank orders sources by what the trust store remembers of them: a source
// that recently sent a bad piece or failed goes last.
func (s *Sharding) rank(ids []peer.ID) []peer.ID {
	return trust.RankBy(s.cfg.Trust, ids, peer.ID.String, nil)
}

// summaryHolds reports whether a peer with summary sum holds shard hash.
func (s *Sharding) summaryHolds(sum experts.ShardSummary, hash string) bool {
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

func (s *Sharding) isModelID(h string) bool {
	if _, ok := s.store.Manifest(h); ok {
		return true
	}
	return len(s.cfg.Catalog.Select(func(en *experts.Entry) bool { _, ok := en.ShardsOf(h); return ok })) > 0
}

var (
	errNotHeard  = errors.New("no sharded model of that name or ID heard of yet")
	errAmbiguous = errors.New("ambiguous model")
)

// resolve turns a spec's MODEL into the model ID a fetch is pinned to. An
// ID is taken as it is. A prefix of an ID, or a name, is looked up in the
// store and in the swarm's announcements, which anyone may send: names are
// for display, so a name or prefix that more than one ID answers to is
// refused, listing every ID and who says so, and once a spec resolved, it
// stays pinned to that ID for the life of the peer, whatever is announced
// later.
func (s *Sharding) resolve(model string) (string, error) {
	s.mu.Lock()
	id, ok := s.pinned[model]
	s.mu.Unlock()
	if ok {
		return id, nil
	}
	if shard.ValidHash(model) {
		return s.pin(model, model), nil // an ID: verified against the manifest's hash
	}
	var ids []string
	by := map[string][]string{} // ID → who says model names it
	match := func(id, name, who string) {
		if id != model && (len(model) < 8 || !strings.HasPrefix(id, model)) && name != model {
			return
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
		if len(by[id]) < 3 && !slices.Contains(by[id], who) {
			by[id] = append(by[id], who)
		}
	}
	for _, m := range s.store.Models() {
		match(m.ID(), m.Name, "this peer's store")
	}
	for _, en := range s.cfg.Catalog.Select(func(en *experts.Entry) bool { return len(en.Shards) > 0 }) {
		who := "peer " + en.Peer
		for _, sum := range en.Shards {
			match(sum.Model, sum.Name, who)
		}
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("%w: %q", errNotHeard, model)
	case 1:
		return s.pin(model, ids[0]), nil
	}
	slices.Sort(ids)
	list := make([]string, len(ids))
	for i, id := range ids {
		list[i] = id + " (" + strings.Join(by[id], ", ") + ")"
	}
	return "", fmt.Errorf("%w: %q names %d models: %s; give the model ID instead", errAmbiguous, model, len(ids), strings.Join(list, "; "))
}

// pin remembers that spec model stands for id.
func (s *Sharding) pin(model, id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pinned[model]; !ok {
		s.pinned[model] = id
		if model != id {
			s.log.Info("hosting pinned to a model ID", "spec", model, "id", id)
		}
	}
	return s.pinned[model]
}

// host keeps spec satisfied: it finds the manifest, fetches the shards the
// spec asks for that the store lacks, and serves them. It retries until
// everything is here or ctx ends.
func (s *Sharding) host(ctx context.Context, spec HostSpec) {
	backoff := time.Second
	for {
		err := s.hostOnce(ctx, spec)
		if err == nil || ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNotHeard) && backoff < 8*time.Second {
			s.log.Info("waiting to hear of the model", "spec", spec.String())
		} else {
			s.log.Warn("hosting shards", "spec", spec.String(), "err", err, "retry_in", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (s *Sharding) hostOnce(ctx context.Context, spec HostSpec) error {
	id, err := s.resolve(spec.Model)
	if err != nil {
		return err
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	f := &transfer.Fetcher{Host: s.cfg.Host, Store: s.store, Sources: s.sources, Progress: func(pr transfer.Progress) { s.progress(id, pr) },
		Payer: s.payer}
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
		s.log.Info("fetching shards", "model", m.Name, "id", id[:12], "shards", len(want))
		if err := f.Fetch(ctx, m, want); err != nil {
			return err
		}
	}
	if err := s.loadLocked(m); err != nil {
		return err
	}
	s.setFetch(id, "")
	if s.cfg.Changed != nil {
		s.cfg.Changed(ctx)
	}
	return nil
}

// progress shows a fetch in /api/experts and logs dropped sources and, at
// most every few seconds, how far it got.
func (s *Sharding) progress(id string, pr transfer.Progress) {
	text := fmt.Sprintf("%.1f of %.1f MB verified", float64(pr.TotalDone)/1e6, float64(pr.Total)/1e6)
	if pr.Dropped != "" {
		kind := trust.Failure
		if errors.Is(pr.Err, shard.ErrCorrupt) {
			kind = trust.BadData
		}
		s.cfg.Trust.Observe(pr.Dropped.String(), trust.Event{Kind: kind})
		s.log.Warn("shard source dropped", "model", id[:12], "shard", pr.Shard.String(), "source", pr.Dropped.ShortString(), "err", pr.Err)
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
		s.log.Info("fetching shards", "model", id[:12], "progress", text)
	}
	s.setFetch(id, text)
}

func (s *Sharding) setFetch(id, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sm := s.models[id]; sm != nil {
		sm.fetch = text
	}
}

// shardedBackend is the engine of a sharded model, named as such. When a
// generation ends it says so (ended), so its expert calls are settled.
type shardedBackend struct {
	*llama.Backend
	ended func()
}

func (shardedBackend) Name() string { return EngineSharded }

func (b shardedBackend) Generate(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	f, err := b.Backend.Generate(ctx, req, emit)
	b.ended()
	return f, err
}

// LocalModel is this peer's share of one sharded model, as /api/experts
// shows it.
type LocalModel struct {
	ID, Name                           string
	Layers, Experts, ExpertsUsed       int
	Dense                              bool                 // holds the dense shard: runs the model
	Hosted                             int                  // experts it serves
	Summary                            experts.ShardSummary // as announced
	Announced                          bool                 // Summary is in this peer's announcements
	Fetch                              string               // fetch progress or error
	LocalCalls, RemoteCalls, Failovers uint64               // the model's expert calls (when Dense)
	Checks, Caught                     uint64               // spot-checks made, hosts caught answering wrongly
	Unpaired                           uint64               // calls sampled for a check with no replica of the first host's kernel set
}

// Local is this peer's share of every sharded model it holds some of.
func (s *Sharding) Local() []LocalModel {
	announced := map[string]experts.ShardSummary{}
	for _, sum := range s.Summaries() {
		announced[sum.Model] = sum
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]LocalModel, 0, len(s.models))
	for id, sm := range s.models {
		sh := sm.man.Shape
		lm := LocalModel{ID: id, Name: sm.man.Name, Layers: sh.Layers, Experts: sh.Experts, ExpertsUsed: sh.ExpertsUsed,
			Dense: sm.dense, Hosted: len(s.server.Hosted(sm.key)), Fetch: sm.fetch}
		lm.Summary, lm.Announced = announced[id]
		if x := sm.experts; x != nil {
			lm.LocalCalls, lm.RemoteCalls, lm.Failovers = x.LocalCalls.Load(), x.RemoteCalls.Load(), x.Failovers.Load()
			lm.Checks, lm.Caught, lm.Unpaired = x.Checks.Load(), x.Caught.Load(), x.Unpaired.Load()
		}
		out = append(out, lm)
	}
	slices.SortFunc(out, func(a, b LocalModel) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Counters of the expert protocol: calls this peer served, calls its
// generations made, and the header and row bytes of those calls.
func (s *Sharding) Counters() (served, made, wireBytes uint64) {
	return s.server.Calls.Load(), s.client.Calls.Load(), s.client.BytesOut.Load() + s.client.BytesIn.Load()
}
