package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Work over relays.
//
// A peer behind NAT is first reached through a circuit relay v2 connection,
// which libp2p marks limited: the relay caps it (by default at 2 minutes and
// 128 KiB each way), too little for answers or expert rows in general. DCUtR
// hole punching then usually replaces it with a direct connection within tens
// of milliseconds. So before sending work to a peer reached only through a
// relay, the RelayPolicy waits up to RelayWait for the direct connection. If
// none comes (a symmetric NAT, say):
//   - when others could do the work, it refuses with ErrRelayOnly and the
//     caller asks another peer; the log says so at Info;
//   - when this is the only peer that can, the work goes over the relayed
//     connection under the relay's limits, with a Warn in the log.
//
// Prompts (/mwpeer/infer) and expert calls (/mwpeer/expert) both obey it.

// RelayWait is how long work waits for a relayed connection to become direct,
// counted from when that connection opened: DCUtR tries when a relayed
// connection opens, so a connection older than this that is still relayed
// will stay so, and later work for that peer does not wait.
const RelayWait = 4 * time.Second

var (
	// ErrUnreachable: no connection to the peer could be made.
	ErrUnreachable = errors.New("peer unreachable")
	// ErrRelayOnly: the peer is reachable only through a relay and others
	// could do the work.
	ErrRelayOnly = errors.New("reachable only through a relay")
)

// Link is one connection to a peer, as the relay policy sees it.
type Link struct {
	Direct bool      // neither limited nor through a relay
	Opened time.Time // when it opened
}

// Links is what the relay policy needs of a host: the connections to a peer,
// a way to make one, and a way to replace the relayed ones with a new one.
type Links interface {
	Links(id peer.ID) []Link
	Connect(ctx context.Context, id peer.ID) error
	Reconnect(ctx context.Context, id peer.ID) error
}

// HostLinks adapts a libp2p host to Links.
func HostLinks(h host.Host) Links { return hostLinks{h} }

type hostLinks struct{ h host.Host }

func (l hostLinks) Links(id peer.ID) []Link {
	conns := l.h.Network().ConnsToPeer(id)
	out := make([]Link, len(conns))
	for i, c := range conns {
		out[i] = Link{Direct: !c.Stat().Limited && !IsRelayed(c.RemoteMultiaddr()), Opened: c.Stat().Opened}
	}
	return out
}

func (l hostLinks) Connect(ctx context.Context, id peer.ID) error {
	return l.h.Connect(ctx, peer.AddrInfo{ID: id})
}

// Reconnect closes the connections to id and makes a new one: over a relay,
// that is a new relayed connection, on which DCUtR tries again.
func (l hostLinks) Reconnect(ctx context.Context, id peer.ID) error {
	_ = l.h.Network().ClosePeer(id)
	return l.h.Connect(ctx, peer.AddrInfo{ID: id})
}

// IsRelayed reports whether a goes through a circuit relay.
func IsRelayed(a ma.Multiaddr) bool {
	for _, c := range a {
		if c.Protocol().Code == ma.P_CIRCUIT {
			return true
		}
	}
	return false
}

// ConnKind is "direct", "relayed" or "none" for the connections conns.
func ConnKind(conns []network.Conn) string {
	kind := "none"
	for _, c := range conns {
		if IsRelayed(c.RemoteMultiaddr()) || c.Stat().Limited {
			kind = "relayed"
			continue
		}
		return "direct"
	}
	return kind
}

// RelayPolicy decides how work reaches a peer; see the comment above
// RelayWait.
type RelayPolicy struct {
	Links Links
	// Wait is how long to wait for a direct connection (0: RelayWait).
	Wait time.Duration
	// Poll is how often to look for one while waiting (0: 20 ms).
	Poll time.Duration
	// Log receives the Info and Warn lines (slog.Default when nil).
	Log *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	mu      sync.Mutex
	retried map[peer.ID]time.Time // peers whose relayed connection was replaced lately
}

// retryAgainAfter is how long a peer whose relayed connection was replaced
// counts as having had its second chance: work for it meanwhile does not
// wait for hole punching again.
const retryAgainAfter = time.Minute

// hadSecondChance reports whether id's relayed connection was replaced
// within retryAgainAfter.
func (rp *RelayPolicy) hadSecondChance(id peer.ID, now time.Time) bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	at, ok := rp.retried[id]
	return ok && now.Sub(at) < retryAgainAfter
}

func (rp *RelayPolicy) noteRetry(id peer.ID, now time.Time) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.retried == nil {
		rp.retried = make(map[peer.ID]time.Time)
	}
	for p, at := range rp.retried { // bounded by the peers retried in a minute
		if now.Sub(at) >= retryAgainAfter {
			delete(rp.retried, p)
		}
	}
	rp.retried[id] = now
}

// Prepare makes id ready for work: it connects when there is no connection
// and waits, when every connection is relayed, for a direct one. only says
// that id is the one peer that can do the work. It returns the context to
// open streams with: ctx itself over a direct connection, or one that allows
// limited connections when id is the only peer and stays relayed; relayed
// then reports that. Errors wrap ErrUnreachable or ErrRelayOnly, or are
// ctx's own.
func (rp *RelayPolicy) Prepare(ctx context.Context, id peer.ID, only bool) (out context.Context, relayed bool, err error) {
	now := rp.Now
	if now == nil {
		now = time.Now
	}
	log := rp.Log
	if log == nil {
		log = slog.Default()
	}
	links := rp.Links.Links(id)
	if len(links) == 0 {
		if err := rp.Links.Connect(ctx, id); err != nil {
			if ctx.Err() != nil {
				return ctx, false, ctx.Err()
			}
			return ctx, false, fmt.Errorf("%w: dial %s: %v", ErrUnreachable, id.ShortString(), err)
		}
		links = rp.Links.Links(id)
	}
	if hasDirect(links) {
		return ctx, false, nil
	}
	start := now()
	wait := rp.Wait
	if wait <= 0 {
		wait = RelayWait
	}
	var oldest time.Time
	for _, l := range links {
		if oldest.IsZero() || l.Opened.Before(oldest) {
			oldest = l.Opened
		}
	}
	if !oldest.IsZero() {
		wait -= start.Sub(oldest)
	}
	if rp.hadSecondChance(id, start) {
		wait = 0
	}
	switch {
	case rp.waitDirect(ctx, id, wait):
		log.Debug("relayed connection became direct before dispatch", "expert", id.ShortString(), "after", now().Sub(start).String())
		return ctx, false, nil
	case ctx.Err() != nil:
		return ctx, false, ctx.Err()
	case !only:
		log.Info("expert reachable only through a relay; routing to another expert", "expert", id.ShortString(), "waited", now().Sub(start).Round(time.Millisecond).String())
		return ctx, false, fmt.Errorf("%w: %s", ErrRelayOnly, id.ShortString())
	}
	log.Warn("only expert reachable only through a relay; answering over the relayed connection under the relay's limits", "expert", id.ShortString(), "waited", now().Sub(start).Round(time.Millisecond).String())
	return network.WithAllowLimitedConn(ctx, "mwpeer: only peer"), true, nil
}

func hasDirect(links []Link) bool {
	for _, l := range links {
		if l.Direct {
			return true
		}
	}
	return false
}

// waitDirect polls until id has a direct connection, for at most d; it
// reports whether one came. It gives up at once when id has no connection
// left. DCUtR tries once, when a relayed connection opens, and that try can
// fail for passing reasons (the other side not yet knowing its public
// address, say): when half the wait has gone by without a direct
// connection, the relayed connection is replaced once, which makes the
// other side try again.
func (rp *RelayPolicy) waitDirect(ctx context.Context, id peer.ID, d time.Duration) bool {
	if d <= 0 {
		return hasDirect(rp.Links.Links(id))
	}
	poll := rp.Poll
	if poll <= 0 {
		poll = 20 * time.Millisecond
	}
	t := time.NewTimer(d / 2) // then the rest, after the one reconnect
	defer t.Stop()
	retried := false
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		links := rp.Links.Links(id)
		if hasDirect(links) {
			return true
		}
		if len(links) == 0 {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			if retried {
				return hasDirect(rp.Links.Links(id))
			}
			retried = true
			rp.noteRetry(id, time.Now())
			if err := rp.Links.Reconnect(ctx, id); err != nil {
				return false
			}
			t.Reset(d - d/2)
		case <-tick.C:
		}
	}
}
