package mwpeer

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
)

// Inference over relays.
//
// A peer behind NAT is first reached through a circuit relay v2 connection,
// which libp2p marks limited: the relay caps it (by default at 2 minutes and
// 128 KiB each way), too little for answers in general. DCUtR hole punching
// then usually replaces it with a direct connection within tens of
// milliseconds. So before sending a prompt to an expert reached only through
// a relay, dispatch waits up to RelayWait for the direct connection. If none
// comes (a symmetric NAT, say):
//   - when other experts could answer the prompt, this one fails with an
//     error wrapping inference.ErrNoExpert and dispatch fails over to the next
//     candidate; the log says so at Info;
//   - when it is the only expert, the prompt goes over the relayed connection
//     under the relay's limits, with a Warn in the log; an answer longer than
//     the relay allows is cut off and reported as a failed call. If that
//     connection cannot be used either, the caller gets ErrNoExpert (503).

// RelayWait is how long dispatch waits for a relayed connection to an expert
// to become direct, counted from when that connection opened: DCUtR tries
// when a relayed connection opens, so a connection older than this that is
// still relayed will stay so, and later prompts to that expert do not wait.
const RelayWait = 4 * time.Second

// callRemote runs req on expert id under the relay policy above; only says
// whether id is the one expert for this prompt.
func (p *Peer) callRemote(ctx context.Context, id peer.ID, req inference.Request, emit func(inference.Chunk) error, only bool) (inference.Final, error) {
	h := p.Host
	if !hasConn(h.Network().ConnsToPeer(id)) {
		if err := h.Connect(ctx, peer.AddrInfo{ID: id}); err != nil {
			return inference.Final{}, fmt.Errorf("%w: dial %s: %v", inference.ErrNoExpert, id.ShortString(), err)
		}
	}
	if conns := h.Network().ConnsToPeer(id); !hasDirect(conns) {
		start := time.Now()
		switch {
		case waitDirect(ctx, h.Network(), id, RelayWait-relayedAge(conns)):
			p.log.Debug("relayed connection became direct before dispatch", "expert", id.ShortString(), "after", time.Since(start).String())
		case ctx.Err() != nil:
			return inference.Final{}, ctx.Err()
		case !only:
			p.log.Info("expert reachable only through a relay; routing to another expert", "expert", id.ShortString(), "waited", time.Since(start).Round(time.Millisecond).String())
			return inference.Final{}, fmt.Errorf("%w: %s is reachable only through a relay", inference.ErrNoExpert, id.ShortString())
		default:
			p.log.Warn("only expert reachable only through a relay; answering over the relayed connection under the relay's limits", "expert", id.ShortString(), "waited", time.Since(start).Round(time.Millisecond).String())
			ctx = network.WithAllowLimitedConn(ctx, "mwpeer inference: only expert")
			f, err := inference.Call(ctx, h, id, req, emit)
			if err != nil && ctx.Err() == nil {
				return f, fmt.Errorf("%w: over a relayed connection: %v", inference.ErrNoExpert, err)
			}
			return f, err
		}
	}
	return inference.Call(ctx, h, id, req, emit)
}

// relayedAge is the age of the oldest of conns (0 if none).
func relayedAge(conns []network.Conn) time.Duration {
	var age time.Duration
	for _, c := range conns {
		age = max(age, time.Since(c.Stat().Opened))
	}
	return age
}

func hasConn(conns []network.Conn) bool { return len(conns) > 0 }

func hasDirect(conns []network.Conn) bool {
	for _, c := range conns {
		if !c.Stat().Limited && !isRelayed(c.RemoteMultiaddr()) {
			return true
		}
	}
	return false
}

// waitDirect polls until id has a direct connection, for at most d; it
// reports whether one came.
func waitDirect(ctx context.Context, n network.Network, id peer.ID, d time.Duration) bool {
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if hasDirect(n.ConnsToPeer(id)) {
			return true
		}
		if len(n.ConnsToPeer(id)) == 0 {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return hasDirect(n.ConnsToPeer(id))
		case <-tick.C:
		}
	}
}
