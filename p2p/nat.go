package p2p

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
)

// Reachability settings accepted by Config.Reachability.
const (
	ReachabilityAuto    = "auto"    // AutoNAT decides (the default)
	ReachabilityPublic  = "public"  // the operator knows the peer is dialable: relay service starts at once
	ReachabilityPrivate = "private" // the operator knows the peer is behind NAT: reserve relay slots at once
)

// reachabilityOption maps Config.Reachability to a libp2p option. Under
// AutoNAT a NAT'd peer needs several dial-backs (~17 s in tests) before it
// knows it is private, and autorelay reserves no slot until then; forcing
// private reserves a slot with the static relays at once.
func reachabilityOption(r string) (libp2p.Option, error) {
	switch r {
	case "", ReachabilityAuto:
		return nil, nil
	case ReachabilityPublic:
		return libp2p.ForceReachabilityPublic(), nil
	case ReachabilityPrivate:
		return libp2p.ForceReachabilityPrivate(), nil
	}
	return nil, fmt.Errorf("p2p: unknown reachability %q (want auto, public or private)", r)
}

// HolePunchReady reports whether DCUtR hole punching is ready on this host:
// libp2p registers its protocol only once the host knows a public address of
// its own, and a relayed connection made before that is never punched.
func (h *Host) HolePunchReady() bool {
	return slices.Contains(h.Mux().Protocols(), holepunch.Protocol)
}

// punchLog logs the outcome of each DCUtR hole punch. It is a
// holepunch.EventTracer.
type punchLog struct{ log *slog.Logger }

func (t punchLog) Trace(e *holepunch.Event) {
	if e.Type != holepunch.EndHolePunchEvtT {
		return
	}
	end, ok := e.Evt.(*holepunch.EndHolePunchEvt)
	if !ok {
		return
	}
	if end.Success {
		t.log.Info("hole punch succeeded", "remote", e.Remote.ShortString(), "took", end.EllapsedTime.String())
		return
	}
	t.log.Info("hole punch failed", "remote", e.Remote.ShortString(), "took", end.EllapsedTime.String(), "err", end.Error)
}

// upgradeWatch notices when a peer reached only through a relay (a limited
// connection) gains a direct connection, and logs how long that took: the
// figure that says whether hole punching works for this peer's NAT.
type upgradeWatch struct {
	log *slog.Logger

	mu      sync.Mutex
	relayed map[peer.ID]time.Time // first limited connection per peer still waiting for a direct one
}

func newUpgradeWatch(log *slog.Logger) *upgradeWatch {
	return &upgradeWatch{log: log, relayed: make(map[peer.ID]time.Time)}
}

func (w *upgradeWatch) Connected(n network.Network, c network.Conn) {
	p := c.RemotePeer()
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.Stat().Limited {
		if _, ok := w.relayed[p]; !ok {
			w.relayed[p] = time.Now()
			w.log.Debug("relayed connection", "remote", p.ShortString(), "addr", c.RemoteMultiaddr().String())
		}
		return
	}
	since, ok := w.relayed[p]
	if !ok {
		return
	}
	delete(w.relayed, p)
	w.log.Info("relayed connection upgraded to direct", "remote", p.ShortString(),
		"transport", TransportName(c.RemoteMultiaddr()), "after", time.Since(since).String())
	// The relayed connection is of no more use, but it holds one of the
	// relay's few circuit slots for the peer behind NAT (16 by default) for
	// up to the relay's time limit: give it back once the hole punch has
	// finished with it.
	time.AfterFunc(relayedGrace, func() { closeRelayed(n, p) })
}

// relayedGrace is how long a relayed connection is kept after a direct one
// to the same peer appeared, for streams on it to finish.
const relayedGrace = 5 * time.Second

// closeRelayed closes the limited connections to p if a direct one exists.
func closeRelayed(n network.Network, p peer.ID) {
	conns := n.ConnsToPeer(p)
	direct := slices.ContainsFunc(conns, func(c network.Conn) bool { return !c.Stat().Limited })
	if !direct {
		return
	}
	for _, c := range conns {
		if c.Stat().Limited {
			_ = c.Close()
		}
	}
}

func (w *upgradeWatch) Disconnected(n network.Network, c network.Conn) {
	p := c.RemotePeer()
	if n.Connectedness(p) == network.Connected {
		return
	}
	w.mu.Lock()
	delete(w.relayed, p)
	w.mu.Unlock()
}

func (w *upgradeWatch) Listen(network.Network, ma.Multiaddr)      {}
func (w *upgradeWatch) ListenClose(network.Network, ma.Multiaddr) {}

// TransportName is "tcp", "quic" or "other" for a connection's address.
func TransportName(a ma.Multiaddr) string {
	for _, c := range a {
		switch c.Protocol().Code {
		case ma.P_QUIC_V1, ma.P_QUIC:
			return "quic"
		case ma.P_TCP:
			return "tcp"
		}
	}
	return "other"
}
