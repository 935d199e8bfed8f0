package mwpeer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/p2p"
)

// Version is reported in /api/status.
const Version = "0.1.0-dev"

// Peer is a running member of the swarm.
type Peer struct {
	cfg     Config
	log     *slog.Logger
	key     crypto.PrivKey
	started time.Time

	Host      *p2p.Host
	Catalog   *experts.Catalog
	Matrix    *geo.Matrix
	Gossip    *experts.Gossip
	Advertise *experts.Advertiser
	pinger    *p2p.Pinger
	vivaldi   *coordinate.Client
	registry  *prometheus.Registry

	models   atomic.Pointer[[]experts.Model]
	load     atomic.Int64
	backend  inference.Backend // nil when this peer serves nothing
	sharding *sharding         // nil when it takes no part in sharded models
	service  *inference.Service
	dispatch inference.DispatchConfig
	stats    *expertStats
	httpSrv  *http.Server
	httpAddr net.Addr

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start brings a peer up: identity, host, DHT, gossip, RTT measurement and
// the HTTP API. The peer runs until Close; ctx bounds only the start-up.
func Start(ctx context.Context, cfg Config) (*Peer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = runtime.NumCPU()
		if cfg.Engine == EngineEmbedded {
			cfg.Capacity = 1 // each generation already uses every core
		}
	}
	listen, _ := ParseMultiaddrs(cfg.Listen)
	announce, _ := ParseMultiaddrs(cfg.Announce)
	boot, _ := ParseBootstrap(cfg.Bootstrap)

	key, err := p2p.LoadOrCreateIdentity(filepath.Join(cfg.DataDir, p2p.IdentityFile))
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	h, err := p2p.New(p2p.Config{
		Identity:      key,
		ListenAddrs:   listen,
		AnnounceAddrs: announce,
		Bootstrap:     boot,
		DHTMode:       cfg.DHTMode,
		RelayService:  cfg.RelayService,
		Reachability:  cfg.Reachability,
		Registerer:    reg,
		Logger:        cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("peer", h.ID().ShortString())
	p := &Peer{
		cfg:      cfg,
		log:      log,
		key:      key,
		started:  time.Now(),
		Host:     h,
		Catalog:  experts.NewCatalog(h.ID().String(), 0),
		Matrix:   geo.NewMatrix(),
		vivaldi:  geo.NewCoordinateClient(),
		registry: reg,
	}
	empty := []experts.Model{}
	p.models.Store(&empty)
	p.stats = newExpertStats()
	p.dispatch = inference.DefaultDispatchConfig()
	b, err := newBackend(cfg)
	if err != nil {
		log.Warn("serving nothing locally: "+err.Error(), "engine", cfg.Engine)
		b = nil
	}
	if p.sharding, err = startSharding(p, b); err != nil {
		h.Close()
		return nil, err
	}
	if p.sharding != nil {
		b = p.sharding.multi
	}
	if b != nil {
		p.backend = counted{Backend: b, load: &p.load}
		sc := inference.DefaultServiceConfig()
		sc.Logger = log
		p.service = inference.NewService(h, p.backend, sc)
	}
	p.Matrix.SetLocation(h.ID().String(), cfg.Location)
	p.Catalog.Watch(p.onCatalogChange)
	p.pinger = p2p.NewPinger(h, p2p.PingerConfig{Interval: cfg.Ping, OnSample: p.onRTTSample})

	p.Gossip, err = experts.JoinGossip(h.PubSub, h, experts.GossipConfig{
		Key:         key,
		Catalog:     p.Catalog,
		Local:       p.announcement,
		MinInterval: cfg.AnnounceMin,
		MaxInterval: cfg.AnnounceMax,
		TargetRate:  cfg.AnnounceRate,
		Logger:      log,
	})
	if err != nil {
		h.Close()
		return nil, err
	}
	p.Advertise = experts.NewAdvertiser(h.DHT, log)
	p.registerMetrics(reg)

	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			p.Gossip.Close()
			h.Close()
			return nil, fmt.Errorf("--http %s: %w", cfg.HTTPAddr, err)
		}
		p.httpAddr = ln.Addr()
		p.httpSrv = api.NewHTTPServer(p.Handler())
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := p.httpSrv.Serve(ln); err != nil && !api.IsClosed(err) {
				log.Error("HTTP server stopped", "err", err)
			}
		}()
	}

	runCtx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	// Read the engine's models before the first announcement, briefly, so
	// the swarm hears what this peer serves from its very first message.
	p.refreshModels(ctx, true)
	p.Gossip.Start(runCtx)
	p.wg.Add(3)
	go func() { defer p.wg.Done(); p.Advertise.Run(runCtx) }()
	go func() { defer p.wg.Done(); p.pinger.Run(runCtx) }()
	go func() { defer p.wg.Done(); p.watchModels(runCtx) }()
	if p.sharding != nil {
		for _, spec := range cfg.HostExperts {
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.sharding.host(runCtx, spec) }()
		}
	}

	log.Info("peer started", "id", h.ID().String(), "listen", fmt.Sprint(h.Addrs()), "http", p.HTTPAddr(), "bootstrap_peers", len(boot))
	return p, nil
}

// Handler is the peer's HTTP API.
func (p *Peer) Handler() http.Handler {
	s := api.NewServer(p, p, p.log)
	s.Handle("GET /metrics", promHandler(p.registry))
	return s
}

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

// Close leaves the swarm (a leave announcement), then stops gossip, the
// API, the DHT and the host. It returns within a few seconds.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := p.Gossip.Leave(ctx); err != nil {
			p.log.Debug("leave announcement", "err", err)
		}
		p.cancel()
		var errs []error
		if p.httpSrv != nil {
			sctx, scancel := context.WithTimeout(context.Background(), time.Second)
			if err := p.httpSrv.Shutdown(sctx); err != nil {
				p.httpSrv.Close()
			}
			scancel()
		}
		p.Gossip.Close()
		p.wg.Wait()
		if p.service != nil {
			p.service.Close()
		}
		if p.sharding != nil {
			p.sharding.close()
		}
		errs = append(errs, p.Host.Close())
		p.closeErr = errors.Join(errs...)
		p.log.Info("peer stopped")
	})
	return p.closeErr
}

// announcement is what this peer says about itself now.
func (p *Peer) announcement() experts.Announcement {
	models := p.Models()
	row := p.pinger.Row(experts.MaxRTTRow)
	rtt := make(map[string]float64, len(row))
	mrow := make(map[string]time.Duration, len(row))
	for id, d := range row {
		rtt[id.String()] = float64(d.Microseconds()) / 1000
		mrow[id.String()] = d
	}
	self := p.ID().String()
	p.Matrix.SetRow(self, mrow)
	// Shared even untrained, so others can train against it; the matrix
	// trusts a coordinate only once its error estimate has come down.
	coord := p.vivaldi.GetCoordinate()
	p.Matrix.SetCoordinate(self, coord)
	addrs := p.Host.Addrs()
	if len(addrs) > experts.MaxAddrs {
		addrs = addrs[:experts.MaxAddrs]
	}
	strs := make([]string, len(addrs))
	for i, a := range addrs {
		strs[i] = a.String()
	}
	a := experts.Announcement{
		Addrs:    strs,
		Models:   models,
		Domains:  p.cfg.Domains,
		Hardware: hardware(),
		Capacity: p.cfg.Capacity,
		Load:     int(p.load.Load()),
		Location: p.cfg.Location,
		Region:   p.cfg.Region,
		RTT:      rtt,
		Coord:    coord,
	}
	if len(models) == 0 {
		a.Capacity = 0
	}
	if p.sharding != nil {
		a.Shards = p.sharding.summaries()
	}
	return a
}

// onCatalogChange keeps the RTT matrix in step with the catalog.
func (p *Peer) onCatalogChange(c experts.Change) {
	if p.sharding != nil {
		p.sharding.gen.Add(1)
	}
	if c.Removed {
		p.Matrix.Forget(c.Peer)
		return
	}
	e, ok := p.Catalog.Get(c.Peer)
	if !ok {
		return
	}
	row := make(map[string]time.Duration, len(e.RTT))
	for id, ms := range e.RTT {
		row[id] = time.Duration(ms * float64(time.Millisecond))
	}
	p.Matrix.SetRow(c.Peer, row)
	p.Matrix.SetCoordinate(c.Peer, e.Coord)
	p.Matrix.SetLocation(c.Peer, e.Location)
	if c.Reason == "joined" {
		p.log.Debug("peer joined", "other", c.Peer)
	}
}

// onRTTSample trains this peer's network coordinate on a ping result.
func (p *Peer) onRTTSample(id peer.ID, rtt time.Duration) {
	e, ok := p.Catalog.Get(id.String())
	if !ok || e.Coord == nil {
		return
	}
	if _, err := p.vivaldi.Update(id.String(), e.Coord, rtt); err != nil {
		p.log.Debug("coordinate update", "other", id.ShortString(), "err", err)
		return
	}

}

func (p *Peer) watchModels(ctx context.Context) {
	t := time.NewTicker(p.cfg.ModelRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.refreshModels(ctx, false)
		}
	}
}

// refreshModels re-reads the engine's models and, when they changed,
// re-announces and re-advertises.
func (p *Peer) refreshModels(ctx context.Context, first bool) {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	models, err := listModels(lctx, p.backend, p.cfg.Engine)
	cancel()
	if err != nil {
		if first {
			p.log.Warn("serving nothing locally: "+err.Error(), "engine", p.cfg.Engine)
		}
		models = nil
	} else if first && len(models) == 0 {
		p.log.Warn("serving nothing locally: the engine lists no models", "engine", p.cfg.Engine)
	}
	if len(p.cfg.Models) > 0 {
		models = slices.DeleteFunc(models, func(m experts.Model) bool { return !slices.Contains(p.cfg.Models, m.Name) })
	}
	if len(models) > experts.MaxModels {
		models = models[:experts.MaxModels]
	}
	old := p.Models()
	if !first && slices.EqualFunc(old, models, func(a, b experts.Model) bool { return a == b }) {
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
		p.log.Info("serving", "models", names, "domains", p.cfg.Domains, "engine", p.cfg.Engine)
	}
	var keys []string
	if len(models) > 0 {
		for _, d := range p.cfg.Domains {
			keys = append(keys, experts.KindDomain+"/"+d)
		}
		for _, m := range models {
			keys = append(keys, experts.KindModel+"/"+m.Name)
		}
	}
	if p.sharding != nil {
		keys = append(keys, p.sharding.dhtKeys()...)
	}
	p.Advertise.Set(keys)
	if !first {
		p.Gossip.Changed()
	}
}
