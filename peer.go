package mwpeer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/consent"
	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/infer"
	"github.com/mwpeer/mwpeer/inference/sharding"
	"github.com/mwpeer/mwpeer/internal/lifecycle"
	"github.com/mwpeer/mwpeer/ledger"
	"github.com/mwpeer/mwpeer/p2p"
	"github.com/mwpeer/mwpeer/swarm"
	"github.com/mwpeer/mwpeer/trust"
)

// Version is reported in /api/status.
const Version = "0.1.0-dev"

// Peer is a running member of the swarm.
type Peer struct {
	Host      *p2p.Host
	Catalog   *experts.Catalog
	Latency   *swarm.Latency
	Gossip    *experts.Gossip
	Advertise *experts.Advertiser

	cfg       Config // cfg.Logger names this peer
	started   time.Time
	parts     lifecycle.Stack
	models    atomic.Pointer[[]experts.Model]
	load      atomic.Int64
	generated generated
	backend   inference.Backend  // nil when this peer serves nothing
	sharding  *sharding.Sharding // nil when it takes no part in sharded models
	router    *swarm.Router
	ledger    *ledger.Ledger
	consent   *consent.Enforcer
	policy    *consent.File // nil without a policy file
	registry  *prometheus.Registry
	httpAddr  net.Addr
	// engineNote says how --engine auto chose (empty when an engine was named).
	engineNote string
	// measure, when set, grows the capacity to what Ollama runs at once.
	measure *measure
	// lie, set by tests only, rewrites this peer's announcements of itself:
	// the seam that makes a real peer a liar (liar_test.go).
	lie atomic.Pointer[func(*experts.Announcement)]
}

// Start brings a peer up: identity, host, DHT, gossip, RTT measurement, the
// backend, the infer service and the HTTP API, in that order; Close, or a
// failed start, stops them in reverse. The peer runs until Close; ctx bounds
// only the start-up.
func Start(ctx context.Context, cfg Config) (*Peer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Peer{started: time.Now(), registry: prometheus.NewRegistry()}
	cfg.Engine, p.engineNote = resolveEngine(ctx, cfg, cfg.Logger)
	if cfg.Capacity == 0 {
		switch cfg.Engine {
		case EngineOllama:
			// What Ollama runs at once: more would wait in Ollama's own
			// queue, first come first served, out of reach of ours.
			cfg.Capacity = cfg.OllamaParallel
			if cfg.Capacity == 0 && cfg.Backend == nil {
				cfg.Capacity = MeasuredCapacity // and measured from there
				p.measure = &measure{log: cfg.Logger}
				p.measure.cap.Store(MeasuredCapacity)
			} else if cfg.Capacity == 0 {
				cfg.Capacity = runtime.NumCPU()
			}
		case EngineEmbedded:
			cfg.Capacity = 1 // each generation already uses every core
		default:
			cfg.Capacity = runtime.NumCPU()
		}
	}
	if err := p.start(ctx, cfg); err != nil {
		p.parts.Close()
		return nil, err
	}
	return p, nil
}

func (p *Peer) start(ctx context.Context, cfg Config) error {
	listen, _ := p2p.ParseAddrs(cfg.Listen)
	announce, _ := p2p.ParseAddrs(cfg.Announce)
	boot, _ := p2p.ParseBootstrap(cfg.Bootstrap)
	key, err := p2p.LoadOrCreateIdentity(filepath.Join(cfg.DataDir, p2p.IdentityFile))
	if err != nil {
		return err
	}
	// A certified swarm: membership is checked before any other admission.
	mem, err := newMembers(cfg, key, func() *experts.Catalog { return p.Catalog }, cfg.Logger)
	if err != nil {
		return err
	}
	cfg.Serving = mem.serving(cfg.Serving)
	if err := p.openConsent(cfg, key, mem); err != nil {
		return err
	}
	cfg.Serving = withConsent(cfg.Serving, p.consent)
	_, _, relay := p.Policy().Offers() // read at start only
	h, err := p2p.New(p2p.Config{
		Identity: key, ListenAddrs: listen, AnnounceAddrs: announce, Bootstrap: boot,
		DHTMode: cfg.DHTMode, RelayService: cfg.RelayService && relay, Reachability: cfg.Reachability,
		Registerer: p.registry, Logger: cfg.Logger, PSK: cfg.SwarmKey, Limits: StreamLimits,
	})
	if err != nil {
		return err
	}
	p.parts.Defer("host", h.Close)
	cfg.Logger = cfg.Logger.With("peer", h.ID().ShortString())
	log := cfg.Logger
	p.parts.Log = log
	p.cfg, p.Host = cfg, h
	p.Catalog = experts.NewCatalog(h.ID().String(), 0)
	p.Latency = swarm.NewLatency(h, cfg.Ping, cfg.Location, func(id string) *coordinate.Coordinate {
		e, _ := p.Catalog.Get(id)
		return e.Coord
	}, log)
	p.Catalog.SetKeep(p.vouched) // connected or measured: never evicted for a stranger
	p.Catalog.SetPrefixCap(cfg.CatalogPrefixCap)
	p.Catalog.SetMaxBytes(cfg.CatalogMaxBytes)
	empty := []experts.Model{}
	p.models.Store(&empty)
	acct, err := ledger.OpenAccounting(cfg.DataDir, h.ID(), key, cfg.FreeAllowance, log)
	if err != nil {
		return &FieldError{Field: "DataDir", Err: err}
	}
	p.parts.Defer("accounting", acct.Close)
	acct.AuditPrompts = cfg.AuditPrompts
	p.consent.OnRefused(func(caller peer.ID, what, model string, err error) {
		if what != "infer" { // infer refusals reach the chain through acct.Served
			acct.Audit(ledger.AuditEntry{Kind: ledger.AuditRefused, Peer: caller, Model: what + ":" + model, Outcome: consent.Code(err)})
		}
	})
	p.ledger, acct.Credentials = acct.Ledger, mem.credentials()
	if len(cfg.Grants) > 0 {
		w, _ := consent.NewWallet(cfg.Grants) // Validate read them
		acct.Credentials = grants(w, acct.Credentials)
	}
	if api.RequiresKeys(cfg.HTTPAddr) {
		if has, err := p.ledger.HasKeys(); (err != nil || !has) && !cfg.HTTPInsecure {
			return &FieldError{Field: "HTTPAddr", Err: fmt.Errorf("%s is not loopback: serving the API there needs API keys (mwpeer keys add NAME --budget TOKENS); --http-insecure (HTTPInsecure) serves it open", cfg.HTTPAddr)}
		} else if err != nil || !has {
			log.Warn("HTTP API open to the network without API keys (HTTPInsecure): anyone who reaches it can use it", "http", cfg.HTTPAddr)
		}
	}
	store, err := trust.Open(trust.Config{Path: filepath.Join(cfg.DataDir, trust.File), Log: log})
	if err != nil {
		return &FieldError{Field: "DataDir", Err: err}
	}
	p.parts.Go("trust store", store.Run) // saves every minute and when the peer stops
	// Failed pings make suspects, answered ones clear them.
	p.Latency.Watch(store, func(id string) bool { _, ok := p.Catalog.Get(id); return ok })
	policy := &p2p.RelayPolicy{Links: p2p.HostLinks(h), Log: log}
	providers := func(ctx context.Context, kind, name string, n int) ([]peer.AddrInfo, error) {
		return experts.FindProviders(ctx, h.DHT, kind, name, n)
	}
	// The announcement shard widths the domain and model keys are provided
	// and looked up under (experts.Widths: salted by shard when > 0): the
	// gossip's current width and, during a grace period after a change, the
	// previous one (Gossip.Widths). Before the gossip starts, the configured
	// width (0 when automatic: it starts unsharded).
	var gossip atomic.Pointer[experts.Gossip]
	widths := experts.Widths(func() []int {
		if g := gossip.Load(); g != nil {
			return g.Widths()
		}
		return []int{max(cfg.AnnounceShardBits, 0)}
	})
	// The router's DHT fallback, for a model no catalog entry serves: the
	// salted keys of the other shards (experts.Finder).
	serving := experts.Finder{Routing: h.DHT, Self: h.ID(), Widths: widths}

	var onRunning func(int)
	if p.measure != nil {
		onRunning = p.measure.running
	}
	b, err := newBackend(cfg, onRunning)
	if err != nil {
		log.Warn("serving nothing locally: "+err.Error(), "engine", cfg.Engine)
		b = nil
	}
	if c, ok := b.(io.Closer); ok {
		// Closed after everything that calls it (the embedded engine
		// unmaps its model file then).
		p.parts.Defer("backend", c.Close)
	}
	if len(cfg.Shards) > 0 || len(cfg.HostExperts) > 0 {
		dirs := cfg.Shards
		if len(dirs) == 0 {
			dirs = []string{filepath.Join(cfg.DataDir, "shards")}
		}
		p.sharding, err = sharding.Open(sharding.Config{
			Host: h, Dirs: dirs, Specs: cfg.HostExperts, Engine: b, Capacity: cfg.Capacity, Admit: cfg.Serving.AdmitExpert, AdmitShard: p.consent.AdmitShard,
			UploadRate: float64(cfg.ShardUploadRate), PeerUploadRate: float64(cfg.ShardPeerUploadRate),
			Catalog: mem.hosts(p.Catalog), Providers: providers, RTT: p.Latency.To, Trust: store, Log: log, Key: key, StoreTally: acct.StoreTally,
			VerifyExperts: cfg.VerifyExperts, OnBadHost: auditBadHost(acct),
			Prepare: func(ctx context.Context, id peer.ID) (context.Context, error) {
				c, _, err := policy.Prepare(ctx, id, false)
				return c, err
			},
			Changed: func(ctx context.Context) { p.refreshModels(ctx, false); p.Gossip.Changed() },
		})
		if err != nil {
			return &FieldError{Field: "Shards", Err: err}
		}
		p.parts.Defer("sharding", p.sharding.Close)
		b = p.sharding.Backend()
	}
	if b != nil {
		prio := inference.NewPrioritized(b, inference.PriorityConfig{Capacity: cfg.Capacity, QueueWait: cfg.QueueWait, Aging: 5 * time.Second, Class: acct.Class,
			PerPeer: inference.PerPeerSlots(cfg.Capacity)})
		if p.measure != nil {
			p.measure.prio.Store(prio)
			prio.SetCapacity(int(p.measure.cap.Load())) // what was measured before the queue existed
		}
		b = prio
		p.backend = counted{Backend: b, load: &p.load, done: &p.generated}
		sc := infer.DefaultServiceConfig()
		sc.Logger, sc.Admit, sc.Complete = log, cfg.Serving.AdmitInfer, acct.Served(cfg.Serving.CompleteInfer)
		sc.Charge, sc.KeepAnswer = cfg.Serving.ChargeInfer, cfg.AuditPrompts
		sc.DefaultMaxTokens, sc.TokensCap = cfg.RemoteMaxTokens, cfg.RemoteMaxTokensCap
		sc.Receipts = acct.Server(p.Models)
		svc := infer.NewService(h, p.backend, sc)
		p.parts.Defer("infer service", svc.Close)
	}
	p.router = swarm.New(swarm.Config{
		Self: h.ID(), Catalog: p.Catalog, RTT: p.Latency.Estimate, Providers: serving.Find,
		Remote: swarm.HostRemote{Host: h, Policy: policy, Infer: acct.Call(func(m string) int64 { return p.router.ModelSize(m) })},
		Local: swarm.Local{Backend: p.backend, Models: p.Models, Domains: cfg.Domains, Capacity: cfg.Capacity,
			Load: func() int { return int(p.load.Load()) }, Location: cfg.Location},
		Trust: store, Weights: cfg.Weights, MaxK: cfg.MaxK, Log: log, Member: mem.member(), ConnPrefix: p.connPrefix,
		VerifyShare: cfg.VerifyAnswers, Observe: auditOutvoted(acct), Probe: p.Latency.Probe,
	})
	p.Catalog.Watch(p.onCatalogChange)
	p.Gossip, err = experts.JoinGossip(h.PubSub, h, experts.GossipConfig{
		Key: key, Catalog: p.Catalog, Local: p.announcement, Logger: log,
		MinInterval: cfg.AnnounceMin, MaxInterval: cfg.AnnounceMax, TargetRate: cfg.AnnounceRate,
		ShardBits: cfg.AnnounceShardBits, Auto: cfg.autoShard(), Providers: providers, Vouched: p.vouched,
		// The rendezvous key follows the width (and the previous one's
		// during the grace period).
		WidthChanged: func() { p.advertise(p.Models()) },
	})
	if err != nil {
		return err
	}
	p.parts.Defer("gossip", func() error { p.Gossip.Close(); return nil })
	gossip.Store(p.Gossip)
	p.Latency.OnDrift(p.Gossip.Changed, p.Gossip.Interval)
	p.Advertise = experts.NewAdvertiser(h.DHT, log)
	p.Advertise.Self, p.Advertise.Widths = h.ID(), widths
	p.registerMetrics(p.registry)
	if cfg.MDNS {
		m, err := p2p.StartMDNS(h, cfg.MDNSService, log)
		if err != nil {
			// Not fatal: a machine without a multicast interface still
			// joins through --bootstrap.
			log.Warn("no LAN discovery (mDNS): "+err.Error()+"; join other peers with --bootstrap", "err", err)
		} else {
			p.parts.Defer("mdns", m.Close)
		}
	}

	// Read the engine's models before the first announcement, briefly, so
	// the swarm hears what this peer serves from its very first message.
	p.refreshModels(ctx, true)
	p.parts.Go("gossip loops", func(ctx context.Context) error { p.Gossip.Start(ctx); <-ctx.Done(); p.Gossip.Close(); return nil })
	p.parts.Go("dht advertiser", func(ctx context.Context) error { p.Advertise.Run(ctx); return nil })
	p.parts.Go("pinger", p.Latency.Run)
	p.parts.Go("model watch", p.watchModels)
	if p.policy != nil {
		p.parts.Go("policy watch", p.policy.Run)
	}
	if p.sharding != nil {
		p.parts.Go("shard hosting", p.sharding.Run)
	}
	// The API last, so it is the first to stop.
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return &FieldError{Field: "HTTPAddr", Err: err}
		}
		p.httpAddr = ln.Addr()
		h := p.Handler()
		p.parts.Go("http", func(ctx context.Context) error { return api.Serve(ctx, h, ln) })
	}
	p.parts.Defer("leave announcement", func() error { // the first to run on Close
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := p.Gossip.Leave(ctx); err != nil {
			log.Debug("leave announcement", "err", err)
		}
		return nil
	})
	log.Info("peer started", "id", h.ID().String(), "listen", fmt.Sprint(h.Addrs()), "http", p.HTTPAddr(), "bootstrap_peers", len(boot))
	return nil
}

// Handler is the peer's HTTP API.
func (p *Peer) Handler() http.Handler {
	s := api.NewServer(p, p.router, p.cfg.Logger)
	s.Handle("GET /metrics", promHandler(p.registry))
	s.SetLedger(p.ledger)
	s.SetKeys(api.LedgerKeys(p.ledger))
	_ = s.SetGuard(api.Guard{Listen: p.HTTPAddr(), Hosts: p.cfg.AllowedHosts, Origins: p.cfg.AllowedOrigins}) // Validate checked the origins
	return s
}

// Router is the peer's router: what its HTTP API asks the swarm through.
func (p *Peer) Router() *swarm.Router { return p.router }

// ID is the peer's libp2p ID.
func (p *Peer) ID() peer.ID { return p.Host.ID() }

// HTTPAddr is the address the HTTP API listens on ("" when it does not).
func (p *Peer) HTTPAddr() string {
	if p.httpAddr == nil {
		return ""
	}
	return p.httpAddr.String()
}

// Addrs are the peer's addresses with /p2p/<id>, as another peer would
// pass them to --bootstrap.
func (p *Peer) Addrs() []ma.Multiaddr {
	ai := peer.AddrInfo{ID: p.ID(), Addrs: p.Host.Addrs()}
	out, _ := peer.AddrInfoToP2pAddrs(&ai)
	return out
}

// Models returns what this peer serves now.
func (p *Peer) Models() []experts.Model { return *p.models.Load() }

// Close leaves the swarm (a leave announcement), then stops every part in
// the reverse order of Start. It returns within a few seconds.
func (p *Peer) Close() error {
	err := p.parts.Close()
	p.cfg.Logger.Info("peer stopped")
	return err
}

// announcement is what this peer says about itself now.
func (p *Peer) announcement() experts.Announcement {
	models := p.shared(p.Models())
	p.generated.speed.fill(models)
	rtt, coord := p.Latency.Own(experts.MaxRTTRow)
	addrs := p.Host.Addrs()
	if len(addrs) > experts.MaxAddrs {
		addrs = addrs[:experts.MaxAddrs]
	}
	strs := make([]string, len(addrs))
	for i, a := range addrs {
		strs[i] = a.String()
	}
	a := experts.Announcement{
		Addrs: strs, Models: models, Domains: p.cfg.Domains, Hardware: experts.LocalHardware(),
		Capacity: p.capacity(), Load: int(p.load.Load()), Location: p.cfg.Location, Region: p.cfg.Region, Version: Version,
		RTT: rtt, Coord: coord, Cert: p.cfg.Cert,
	}
	if len(models) == 0 {
		a.Capacity = 0
	}
	if p.sharding != nil {
		a.Shards = p.sharding.Summaries()
	}
	p.rewrite(&a)
	return a
}

// capacity is the requests this peer serves at once: as configured, or as
// measured from its Ollama.
func (p *Peer) capacity() int {
	if p.measure != nil {
		return int(p.measure.cap.Load())
	}
	return p.cfg.Capacity
}

// onCatalogChange keeps the RTT matrix and the shard host index in step with
// the catalog.
func (p *Peer) onCatalogChange(c experts.Change) {
	if p.sharding != nil {
		p.sharding.CatalogChanged()
	}
	if c.Removed {
		p.Latency.Forget(c.Peer)
		return
	}
	if e, ok := p.Catalog.Get(c.Peer); ok {
		p.Latency.Heard(e)
	}
	if c.Reason == "joined" {
		p.cfg.Logger.Debug("peer joined", "other", c.Peer)
	}
}

func (p *Peer) watchModels(ctx context.Context) error {
	t := time.NewTicker(p.cfg.ModelRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			p.refreshModels(ctx, false)
		}
	}
}

// refreshModels re-reads the engine's models and, when they changed,
// re-announces and re-advertises.
func (p *Peer) refreshModels(ctx context.Context, first bool) {
	log := p.cfg.Logger
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	models, err := swarm.ListModels(lctx, p.backend, p.cfg.Engine)
	cancel()
	if err != nil {
		if first {
			hint := ""
			if p.cfg.Engine == EngineOllama {
				hint = "; start Ollama (ollama serve) or pass --ollama URL, or run with --engine auto to serve a built-in test model without it"
			}
			log.Warn("serving nothing locally: "+err.Error()+hint, "engine", p.cfg.Engine)
		}
		models = nil
	} else if first && len(models) == 0 {
		hint := ""
		if p.cfg.Engine == EngineOllama {
			hint = "; pull one (ollama pull llama3.2:1b) and this peer serves it within " + p.cfg.ModelRefresh.String()
		}
		log.Warn("serving nothing locally: the engine lists no models"+hint, "engine", p.cfg.Engine)
	}
	if len(p.cfg.Models) > 0 {
		models = slices.DeleteFunc(models, func(m experts.Model) bool { return !slices.Contains(p.cfg.Models, m.Name) })
	}
	if len(models) > experts.MaxModels {
		models = models[:experts.MaxModels]
	}
	if !first && slices.EqualFunc(p.Models(), models, experts.Model.Equal) {
		return
	}
	if models == nil {
		models = []experts.Model{}
	}
	p.models.Store(&models)
	if first && len(models) > 0 {
		names := make([]string, len(models))
		for i, m := range models {
			names[i] = m.Name
		}
		log.Info("serving", "models", names, "domains", p.cfg.Domains, "engine", p.cfg.Engine)
	}
	p.advertise(models)
	if !first {
		p.Gossip.Changed()
	}
}

// advertise puts this peer in the DHT under what it shares of models: its
// domains and models under keys salted by its announcement shard, its
// expert shards, MoE manifests and shard rendezvous key as they are (few
// providers each).
func (p *Peer) advertise(models []experts.Model) {
	var keys []string
	if p.sharding != nil {
		keys = append(keys, p.sharding.DHTKeys()...)
	}
	for _, bits := range p.Gossip.Widths() {
		if bits > 0 {
			// So that the others of its announcement shard find it, at the
			// width it uses and, during a grace period, the one before.
			keys = append(keys, experts.KindAnnounceShard+"/"+experts.AnnounceShardKey(bits, experts.AnnounceShard(p.ID(), bits)))
		}
	}
	p.Advertise.Set(keys, experts.ServingKeys(p.cfg.Domains, p.shared(models)))
}
