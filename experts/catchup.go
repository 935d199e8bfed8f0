package experts

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-msgio"
)

// CatchUpProtocol hands a newcomer the signed announcements its neighbour
// holds, so it sees the swarm at once instead of after a heartbeat. The
// requester opens the stream and closes its write side; the responder sends
// its own announcement and then the catalog's, each as one varint-prefixed
// frame, and closes. Every announcement is verified like a gossiped one.
const CatchUpProtocol = "/mwpeer/catalog/1.0.0"

const (
	catchUpService     = "mwpeer.catalog"
	catchUpDeadline    = 10 * time.Second
	catchUpPerPeer     = 10 * time.Second // a requester is served at most this often
	catchUpPerMinute   = 3                // catch-ups this peer starts per minute
	catchUpRepeatAfter = 5 * time.Minute  // before asking the same peer again
)

func (g *Gossip) serveCatchUp(s network.Stream) {
	defer s.Close()
	if err := s.Scope().SetService(catchUpService); err != nil {
		s.Reset()
		return
	}
	// The reply is streamed frame by frame; one frame is the most it buffers.
	if err := s.Scope().ReserveMemory(MaxAnnouncementSize, network.ReservationPriorityLow); err != nil {
		s.Reset()
		return
	}
	defer s.Scope().ReleaseMemory(MaxAnnouncementSize)
	_ = s.SetDeadline(time.Now().Add(catchUpDeadline))

	from := s.Conn().RemotePeer()
	g.mu.Lock()
	if last, ok := g.served[from]; ok && time.Since(last) < catchUpPerPeer {
		g.mu.Unlock()
		s.Reset()
		return
	}
	g.served[from] = time.Now()
	for id, at := range g.served { // keep the map bounded
		if time.Since(at) > catchUpPerPeer {
			delete(g.served, id)
		}
	}
	own, ownBeat := g.lastFull, g.lastBeat
	g.mu.Unlock()

	w := msgio.NewVarintWriter(s)
	for _, env := range [][]byte{own, ownBeat} {
		if env == nil {
			continue
		}
		if err := w.WriteMsg(env); err != nil {
			s.Reset()
			return
		}
	}
	for _, env := range g.cfg.Catalog.Envelopes(g.cfg.CatchUpMax) {
		if env == nil {
			continue
		}
		if err := w.WriteMsg(env); err != nil {
			s.Reset()
			return
		}
	}
}

// CatchUp asks p for the announcements it holds, verifies and applies them,
// and returns how many changed the catalog.
func (g *Gossip) CatchUp(ctx context.Context, p peer.ID) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, catchUpDeadline)
	defer cancel()
	s, err := g.h.NewStream(network.WithNoDial(ctx, "catalog catch-up"), p, CatchUpProtocol)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	if err := s.Scope().SetService(catchUpService); err != nil {
		s.Reset()
		return 0, err
	}
	if err := s.Scope().ReserveMemory(MaxAnnouncementSize, network.ReservationPriorityLow); err != nil {
		s.Reset()
		return 0, err
	}
	defer s.Scope().ReleaseMemory(MaxAnnouncementSize)
	deadline, _ := ctx.Deadline()
	_ = s.SetDeadline(deadline)
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return 0, err
	}
	r := msgio.NewVarintReaderSize(s, MaxAnnouncementSize)
	applied := 0
	for n := 0; n <= 2*g.cfg.CatchUpMax+1; n++ { // a full and a beat per peer, the responder's own on top
		data, err := r.ReadMsg()
		if errors.Is(err, io.EOF) {
			return applied, nil
		}
		if err != nil {
			s.Reset()
			return applied, err
		}
		a, err := OpenRelayed(data, time.Now())
		if err != nil {
			g.count(ReasonOf(err))
			r.ReleaseMsg(data)
			continue
		}
		env := append([]byte(nil), data...)
		r.ReleaseMsg(data)
		if g.cfg.Catalog.Apply(a, env, time.Now()) {
			applied++
		}
	}
	s.Reset() // more than promised: stop reading
	return applied, nil
}

// catchUpNewcomers catches up from peers as they are identified, a few per
// minute, so a new peer fills its catalog from its first neighbours.
func (g *Gossip) catchUpNewcomers(ctx context.Context) {
	defer g.wg.Done()
	sub, err := g.h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted), eventbus.BufSize(256))
	if err != nil {
		g.log.Warn("catch-up disabled", "err", err)
		return
	}
	defer sub.Close()
	var recent []time.Time
	for {
		var ev event.EvtPeerIdentificationCompleted
		select {
		case <-ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			ev = e.(event.EvtPeerIdentificationCompleted)
		}
		if !supports(ev.Protocols, CatchUpProtocol) {
			continue
		}
		now := time.Now()
		kept := recent[:0]
		for _, t := range recent {
			if now.Sub(t) < time.Minute {
				kept = append(kept, t)
			}
		}
		recent = kept
		g.mu.Lock()
		last, asked := g.syncedAt[ev.Peer]
		g.mu.Unlock()
		if len(recent) >= catchUpPerMinute || (asked && now.Sub(last) < catchUpRepeatAfter) {
			continue
		}
		recent = append(recent, now)
		g.mu.Lock()
		g.syncedAt[ev.Peer] = now
		for id, at := range g.syncedAt {
			if now.Sub(at) > catchUpRepeatAfter {
				delete(g.syncedAt, id)
			}
		}
		g.mu.Unlock()
		// Never block the event bus: identify would stall behind us.
		g.wg.Add(1)
		go func(p peer.ID) {
			defer g.wg.Done()
			n, err := g.CatchUp(ctx, p)
			if err != nil {
				g.log.Debug("catch-up failed", "peer", p.ShortString(), "err", err)
				return
			}
			g.log.Debug("caught up", "peer", p.ShortString(), "applied", n)
		}(ev.Peer)
	}
}

func supports[T ~string](protos []T, want string) bool {
	for _, p := range protos {
		if string(p) == want {
			return true
		}
	}
	return false
}
