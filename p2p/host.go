package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// DHTPrefix makes mwpeer's DHT its own network: its protocols are
// /mwpeer/kad/1.0.0, so IPFS peers never enter its routing tables.
const DHTPrefix = "/mwpeer"

// DHT modes accepted by Config.DHTMode.
const (
	DHTAuto   = "auto"   // server unless AutoNAT finds the peer unreachable (kad-dht's ModeAutoServer)
	DHTServer = "server" // always answer DHT queries
	DHTClient = "client" // query only; for peers that know they are behind NAT
)

// Config says how to build a Host. The zero value is not useful; the module
// root fills it from mwpeer.Config.
type Config struct {
	Identity      crypto.PrivKey
	ListenAddrs   []ma.Multiaddr
	AnnounceAddrs []ma.Multiaddr // extra addresses to advertise (a public IP behind port forwarding)
	Bootstrap     []peer.AddrInfo
	DHTMode       string
	ConnLow       int  // connection manager low watermark
	ConnHigh      int  // connection manager high watermark
	RelayService  bool // offer circuit relay v2 when publicly reachable
	// Reachability is ReachabilityAuto (AutoNAT decides), ReachabilityPublic
	// or ReachabilityPrivate (the operator knows; see reachabilityOption).
	Reachability string
	Registerer   prometheus.Registerer
	Logger       *slog.Logger
	// GossipOptions are appended to mwpeer's GossipSub options.
	GossipOptions []pubsub.Option
	// PSK, when set, makes the swarm private (see ReadSwarmKey): peers
	// without the same key cannot connect. It runs over TCP only, so QUIC
	// listen and announce addresses are dropped.
	PSK pnet.PSK
	// Limits bound the inbound streams of the protocols' services, in all
	// and per peer, in the resource manager (see ServiceLimit).
	Limits []ServiceLimit
}

// Host is a running libp2p host with its DHT and GossipSub router.
type Host struct {
	host.Host
	DHT       *dht.IpfsDHT
	PubSub    *pubsub.PubSub
	Bandwidth *metrics.BandwidthCounter

	cfg    Config
	log    *slog.Logger
	scores *scores
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu           sync.Mutex
	reachability network.Reachability
	closeOnce    sync.Once
	closeErr     error
}

// New starts a host listening on cfg.ListenAddrs, its DHT and GossipSub, and
// begins connecting to the bootstrap peers in the background (with backoff;
// an unreachable bootstrap peer is logged, never fatal).
func New(cfg Config) (*Host, error) {
	if cfg.Identity == nil {
		return nil, errors.New("p2p: no identity")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ConnLow <= 0 {
		cfg.ConnLow = 64
	}
	if cfg.ConnHigh <= cfg.ConnLow {
		cfg.ConnHigh = cfg.ConnLow * 3
	}
	var mode dht.ModeOpt
	switch cfg.DHTMode {
	case "", DHTAuto:
		mode = dht.ModeAutoServer
	case DHTServer:
		mode = dht.ModeServer
	case DHTClient:
		mode = dht.ModeClient
	default:
		return nil, fmt.Errorf("p2p: unknown DHT mode %q (want auto, server or client)", cfg.DHTMode)
	}

	cm, err := connmgr.NewConnManager(cfg.ConnLow, cfg.ConnHigh, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	reach, err := reachabilityOption(cfg.Reachability)
	if err != nil {
		return nil, err
	}
	transports := libp2p.ChainOptions(libp2p.Transport(tcp.NewTCPTransport), libp2p.Transport(quic.NewTransport))
	if len(cfg.PSK) > 0 {
		var dropped, d int
		cfg.ListenAddrs, dropped = privateAddrs(cfg.ListenAddrs)
		cfg.AnnounceAddrs, d = privateAddrs(cfg.AnnounceAddrs)
		if len(cfg.ListenAddrs) == 0 {
			return nil, errors.New("p2p: a private swarm runs over TCP only, and no listen address is TCP")
		}
		logPrivate(cfg.Logger, dropped+d)
		transports = libp2p.ChainOptions(libp2p.Transport(tcp.NewTCPTransport), libp2p.PrivateNetwork(cfg.PSK))
	}
	rm, err := resourceManager(cfg.Limits)
	if err != nil {
		return nil, err
	}
	bw := metrics.NewBandwidthCounter()
	opts := []libp2p.Option{
		libp2p.ResourceManager(rm),
		libp2p.Identity(cfg.Identity),
		libp2p.ListenAddrs(cfg.ListenAddrs...),
		transports,
		muxer(),
		libp2p.ConnectionManager(cm),
		libp2p.BandwidthReporter(bw),
		libp2p.UserAgent("mwpeer"),
		libp2p.EnableNATService(),
		libp2p.EnableHolePunching(holepunch.WithTracer(punchLog{log: cfg.Logger})),
		libp2p.EnableRelay(),
	}
	if reach != nil {
		opts = append(opts, reach)
	}
	if cfg.Registerer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Registerer))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	if cfg.RelayService {
		opts = append(opts, libp2p.EnableRelayService())
	}
	if len(cfg.Bootstrap) > 0 {
		opts = append(opts, libp2p.EnableAutoRelayWithStaticRelays(cfg.Bootstrap))
	}
	if len(cfg.AnnounceAddrs) > 0 {
		extra := cfg.AnnounceAddrs
		opts = append(opts, libp2p.AddrsFactory(func(addrs []ma.Multiaddr) []ma.Multiaddr {
			out := append([]ma.Multiaddr(nil), addrs...)
			return append(out, extra...)
		}))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("p2p: start host: %w", err)
	}

	// The DHT and GossipSub live as long as the host, not as long as the
	// caller's start-up context: they stop with runCtx in Close.
	runCtx, cancel := context.WithCancel(context.Background())
	kad, err := dht.New(runCtx, h,
		dht.ProtocolPrefix(DHTPrefix),
		dht.Mode(mode),
		dht.BootstrapPeers(cfg.Bootstrap...),
	)
	if err != nil {
		cancel()
		h.Close()
		return nil, fmt.Errorf("p2p: start DHT: %w", err)
	}
	gp := GossipSubParams()
	sc := &scores{}
	sc.register(cfg.Registerer)
	gossipOpts := append([]pubsub.Option{
		pubsub.WithGossipSubParams(gp),
		// Peer scoring: see score.go. The inspector must come after it.
		pubsub.WithPeerScore(ScoreParams(), ScoreThresholds()),
		pubsub.WithPeerScoreInspect(pubsub.PeerScoreInspectFn(sc.inspect), ScoreInspectPeriod),
		// A busy peer (a bootstrap peer hears everyone) must queue bursts
		// rather than drop them: the defaults are 32 each.
		pubsub.WithValidateQueueSize(256),
		pubsub.WithPeerOutboundQueueSize(128),
		pubsub.WithDiscovery(drouting.NewRoutingDiscovery(kad)),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithPeerExchange(true),
	}, cfg.GossipOptions...)
	ps, err := pubsub.NewGossipSub(runCtx, h, gossipOpts...)
	if err != nil {
		cancel()
		kad.Close()
		h.Close()
		return nil, fmt.Errorf("p2p: start gossipsub: %w", err)
	}

	hst := &Host{
		Host:         h,
		DHT:          kad,
		PubSub:       ps,
		Bandwidth:    bw,
		scores:       sc,
		cfg:          cfg,
		log:          cfg.Logger,
		cancel:       cancel,
		reachability: network.ReachabilityUnknown,
	}
	h.Network().Notify(newUpgradeWatch(cfg.Logger))
	sub, err := h.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		hst.Close()
		return nil, fmt.Errorf("p2p: subscribe to reachability: %w", err)
	}
	hst.wg.Add(2)
	go hst.watchReachability(runCtx, sub)
	go hst.keepBootstrapped(runCtx)
	return hst, nil
}

// Close stops the host, its DHT and GossipSub. It is safe to call twice.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.cancel()
		h.wg.Wait()
		err1 := h.DHT.Close()
		err2 := h.Host.Close()
		h.closeErr = errors.Join(err1, err2)
	})
	return h.closeErr
}

// Reachability is AutoNAT's latest verdict on this host.
func (h *Host) Reachability() network.Reachability {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reachability
}

func (h *Host) watchReachability(ctx context.Context, sub event.Subscription) {
	defer h.wg.Done()
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			r := e.(event.EvtLocalReachabilityChanged).Reachability
			h.mu.Lock()
			h.reachability = r
			h.mu.Unlock()
			h.log.Info("reachability changed", "reachability", r.String())
		}
	}
}

// Bootstrap backoff: first retry after 1 s, doubling up to 1 minute.
const (
	bootstrapMinBackoff = time.Second
	bootstrapMaxBackoff = time.Minute
	bootstrapDialTime   = 10 * time.Second
)

// keepBootstrapped dials every bootstrap peer we are not connected to,
// retrying each with its own exponential backoff, and refreshes the DHT after
// a (re)connection. It keeps running for the life of the host so that a peer
// started before its bootstrap peers, or one whose bootstrap peers restart,
// joins as soon as they are back.
func (h *Host) keepBootstrapped(ctx context.Context) {
	defer h.wg.Done()
	type state struct {
		next    time.Time
		backoff time.Duration
		failed  bool
	}
	states := make(map[peer.ID]*state, len(h.cfg.Bootstrap))
	for _, ai := range h.cfg.Bootstrap {
		states[ai.ID] = &state{backoff: bootstrapMinBackoff}
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		now := time.Now()
		joined := false
		for _, ai := range h.cfg.Bootstrap {
			if ai.ID == h.ID() {
				continue
			}
			st := states[ai.ID]
			if h.Network().Connectedness(ai.ID) == network.Connected || now.Before(st.next) {
				continue
			}
			dctx, cancel := context.WithTimeout(ctx, bootstrapDialTime)
			err := h.Connect(dctx, ai)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				st.next = time.Now().Add(st.backoff)
				h.log.Warn("bootstrap peer unreachable; will retry", "peer", ai.ID.ShortString(), "retry_in", st.backoff.String(), "err", err)
				st.backoff = min(st.backoff*2, bootstrapMaxBackoff)
				st.failed = true
				continue
			}
			if st.failed {
				h.log.Info("bootstrap peer reachable again", "peer", ai.ID.ShortString())
			} else {
				h.log.Debug("connected to bootstrap peer", "peer", ai.ID.ShortString())
			}
			// Keep bootstrap connections: they are how this peer hears the swarm.
			h.ConnManager().Protect(ai.ID, "bootstrap")
			st.backoff, st.failed = bootstrapMinBackoff, false
			joined = true
		}
		if joined {
			if err := h.DHT.Bootstrap(ctx); err != nil {
				h.log.Debug("DHT bootstrap", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// GossipSubParams are the GossipSub parameters every peer runs with. A
// sparser mesh than GossipSub's default (D=6, 5..12) halves the duplicate
// copies each peer receives of every announcement, which dominate gossip
// bytes; 4 (3..8) keeps the mesh connected and propagation within a few
// hops, and lazy gossip (IHAVE) covers gaps. (Dout must stay below Dlo and
// at most D/2.) The scale model (internal/scale) reads them too.
func GossipSubParams() pubsub.GossipSubParams {
	gp := pubsub.DefaultGossipSubParams()
	gp.D, gp.Dlo, gp.Dhi, gp.Dout, gp.Dlazy = 4, 3, 8, 1, 4
	gp.IDontWantMessageThreshold = 512 // our full announcements are 1-3 KiB
	return gp
}
