package p2p

import (
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
)

// PingerConfig tunes RTT measurement.
type PingerConfig struct {
	Interval time.Duration // between rounds; each round is jittered by ±20%
	MaxPeers int           // peers pinged per round; the least recently measured go first
	Timeout  time.Duration // per ping
	Forget   time.Duration // drop a peer's average after this long without a sample
	// OnSample, when set, is called after each successful ping with the
	// peer's round trip as RTT reports it, the least of its recent samples,
	// not the raw sample (from the pinger's goroutines; it must not block
	// for long).
	OnSample func(p peer.ID, rtt time.Duration)
	// OnFailure, when set, is called after each failed ping, except one cut
	// short because Run ended (from the pinger's goroutines; it must not
	// block for long).
	OnFailure func(p peer.ID, err error)
	// CloseAfter is how many pings in a row a connected peer may fail
	// before its connections are closed (negative: never). A frozen peer
	// (SIGSTOP, a closed lid, a machine swapping) answers nothing, yet its
	// kernel keeps TCP up; this closes it in about CloseAfter rounds
	// whatever the transport, where yamux's keepalive takes 15 s and
	// QUIC's idle timeout 30 s.
	CloseAfter int
	// Probe, when set, lists peers to ping every round even without a
	// connection, dialing them (at most MaxProbes): suspects, whose answer
	// clears them once they are back.
	Probe func() []peer.ID
}

// MaxProbes bounds the peers PingerConfig.Probe dials in one round.
const MaxProbes = 8

// DefaultPingerConfig pings up to 32 connected peers every 10 s, each
// within 5 s, and closes the connections to a peer that failed 2 in a row.
func DefaultPingerConfig() PingerConfig {
	return PingerConfig{Interval: 10 * time.Second, MaxPeers: 32, Timeout: 5 * time.Second, Forget: 10 * time.Minute, CloseAfter: 2}
}

// Pinger keeps the round trips of libp2p pings to connected peers: for
// each peer, the least of its last RTTWindow samples. It never dials on its
// own round: only live connections are measured (and peers asked for with
// Probe or Measure).
//
// A windowed minimum, as TCP keeps its min RTT, rather than a mean:
// queueing, a busy CPU at either end and a stalled goroutine only ever add
// to a round trip, so the least recent sample is the one nearest the
// path's own delay and the steadiest to rank peers by; a path that really
// got slower is followed within RTTWindow pings. On a 2-core machine
// running a world of peers under load, an EWMA read 1.4 times the true
// round trip at the median (internal/worldtest).
type Pinger struct {
	h   host.Host
	cfg PingerConfig

	mu    sync.Mutex
	peers map[peer.ID]*pingState
	fails map[peer.ID]int // pings failed in a row
}

// RTTWindow is how many recent samples a peer's round trip is the least of.
const RTTWindow = 5

type pingState struct {
	recent [RTTWindow]time.Duration // a ring of the latest samples
	n      int                      // samples recorded
	last   time.Time
}

func (st *pingState) add(rtt time.Duration) {
	st.recent[st.n%RTTWindow] = rtt
	st.n++
}

// value is the least recent sample.
func (st *pingState) value() (time.Duration, bool) {
	if st.n == 0 {
		return 0, false
	}
	v := st.recent[0]
	for _, x := range st.recent[1:min(st.n, RTTWindow)] {
		v = min(v, x)
	}
	return v, true
}

// NewPinger returns a pinger for h; call Run to start it.
func NewPinger(h host.Host, cfg PingerConfig) *Pinger {
	d := DefaultPingerConfig()
	if cfg.Interval <= 0 {
		cfg.Interval = d.Interval
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = d.MaxPeers
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.Forget <= 0 {
		cfg.Forget = d.Forget
	}
	if cfg.CloseAfter == 0 {
		cfg.CloseAfter = d.CloseAfter
	}
	return &Pinger{h: h, cfg: cfg, peers: make(map[peer.ID]*pingState), fails: make(map[peer.ID]int)}
}

// Run measures until ctx ends. The first round starts at once, and every
// newly identified peer is measured right away rather than at the next round.
func (p *Pinger) Run(ctx context.Context) {
	sub, err := p.h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted), eventbus.BufSize(256))
	if err == nil {
		var wg sync.WaitGroup
		defer wg.Wait()
		defer sub.Close()
		sem := make(chan struct{}, 4)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case e, ok := <-sub.Out():
					if !ok {
						return
					}
					id := e.(event.EvtPeerIdentificationCompleted).Peer
					select {
					case sem <- struct{}{}:
					default:
						continue // busy: the next round will measure it
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer func() { <-sem }()
						p.pingOnce(ctx, id, false)
					}()
				}
			}
		}()
	}
	for {
		p.Round(ctx)
		jitter := time.Duration((rand.Float64()*0.4 - 0.2) * float64(p.cfg.Interval))
		t := time.NewTimer(p.cfg.Interval + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Round pings up to MaxPeers connected peers in parallel (at most 8 at a
// time), and the peers to probe, and waits for them.
func (p *Pinger) Round(ctx context.Context) {
	conns := p.h.Network().Peers()
	connected := make(map[peer.ID]bool, len(conns))
	for _, id := range conns {
		connected[id] = true
	}
	var probes []peer.ID
	if p.cfg.Probe != nil {
		for _, id := range p.cfg.Probe() {
			if !connected[id] && id != p.h.ID() && len(probes) < MaxProbes {
				probes = append(probes, id)
			}
		}
	}
	p.mu.Lock()
	now := time.Now()
	for id, st := range p.peers {
		if now.Sub(st.last) > p.cfg.Forget {
			delete(p.peers, id)
		}
	}
	for id := range p.fails {
		if !connected[id] {
			delete(p.fails, id)
		}
	}
	sort.Slice(conns, func(i, j int) bool { return p.lastLocked(conns[i]).Before(p.lastLocked(conns[j])) })
	p.mu.Unlock()
	if len(conns) > p.cfg.MaxPeers {
		conns = conns[:p.cfg.MaxPeers]
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, id := range append(conns, probes...) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func(id peer.ID, dial bool) {
			defer wg.Done()
			defer func() { <-sem }()
			p.pingOnce(ctx, id, dial)
		}(id, i >= len(conns))
	}
	wg.Wait()
}

func (p *Pinger) lastLocked(id peer.ID) time.Time {
	if st, ok := p.peers[id]; ok {
		return st.last
	}
	return time.Time{}
}

// pingOnce pings id over a live connection, or, with dial, over a new one
// if need be. A failure is reported (OnFailure), and the CloseAfter-th in a
// row over a live connection closes it.
func (p *Pinger) pingOnce(ctx context.Context, id peer.ID, dial bool) {
	pctx := ctx
	if !dial {
		pctx = network.WithNoDial(ctx, "rtt measurement")
	}
	pctx, cancel := context.WithTimeout(pctx, p.cfg.Timeout)
	defer cancel()
	res, ok := <-ping.Ping(pctx, p.h, id)
	if ok && res.Error == nil {
		p.Record(id, res.RTT)
		return
	}
	if ctx.Err() != nil {
		return // Run ended: not the peer's fault
	}
	err := context.DeadlineExceeded
	if ok && res.Error != nil {
		err = res.Error
	}
	if errors.Is(err, network.ErrLimitedConn) || (!dial && !p.unlimited(id)) {
		return // a relayed connection ping may not use: no evidence either way
	}
	if p.cfg.OnFailure != nil {
		p.cfg.OnFailure(id, err)
	}
	if dial || p.cfg.CloseAfter < 0 {
		return
	}
	p.mu.Lock()
	p.fails[id]++
	closing := p.fails[id] >= p.cfg.CloseAfter
	if closing {
		delete(p.fails, id)
	}
	p.mu.Unlock()
	if closing && p.h.Network().Connectedness(id) == network.Connected {
		_ = p.h.Network().ClosePeer(id)
	}
}

// Measure pings id once, dialing it at addrs (kept a few minutes in the
// peerstore) or the addresses known of it if there is no connection, and
// folds the result in (see Record). A router calls it for a peer it may
// send work to but has not measured; the connection it opens is then
// pinged every round like any other.
func (p *Pinger) Measure(ctx context.Context, id peer.ID, addrs ...ma.Multiaddr) error {
	if len(addrs) > 0 {
		p.h.Peerstore().AddAddrs(id, addrs, peerstore.TempAddrTTL)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	res, ok := <-ping.Ping(ctx, p.h, id)
	if !ok {
		return ctx.Err()
	}
	if res.Error != nil {
		return res.Error
	}
	p.Record(id, res.RTT)
	return nil
}

// unlimited reports whether id has a connection that is not limited (not
// a circuit relay's).
func (p *Pinger) unlimited(id peer.ID) bool {
	for _, c := range p.h.Network().ConnsToPeer(id) {
		if !c.Stat().Limited {
			return true
		}
	}
	return false
}

// Record adds one RTT sample for id.
func (p *Pinger) Record(id peer.ID, rtt time.Duration) {
	p.mu.Lock()
	st, ok := p.peers[id]
	if !ok {
		st = &pingState{}
		p.peers[id] = st
	}
	st.add(rtt)
	st.last = time.Now()
	least, _ := st.value()
	delete(p.fails, id)
	p.mu.Unlock()
	if p.cfg.OnSample != nil {
		p.cfg.OnSample(id, least)
	}
}

// RTT returns the round trip to id (the least of its recent samples), if
// measured.
func (p *Pinger) RTT(id peer.ID) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, ok := p.peers[id]
	if !ok {
		return 0, false
	}
	return st.value()
}

// Row returns up to max round trips (see RTT), nearest first (max <= 0:
// all).
func (p *Pinger) Row(max int) map[peer.ID]time.Duration {
	p.mu.Lock()
	type kv struct {
		id  peer.ID
		rtt time.Duration
	}
	all := make([]kv, 0, len(p.peers))
	for id, st := range p.peers {
		if v, ok := st.value(); ok {
			all = append(all, kv{id, v})
		}
	}
	p.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].rtt < all[j].rtt })
	if max > 0 && len(all) > max {
		all = all[:max]
	}
	out := make(map[peer.ID]time.Duration, len(all))
	for _, e := range all {
		out[e.id] = e.rtt
	}
	return out
}
