package experts

import (
	"context"
	"errors"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"

	"github.com/mwpeer/mwpeer/internal/wire"
)

// The catalog catch-up protocol hands a newcomer the signed announcements its
// neighbour holds, so it sees the swarm at once instead of after a heartbeat.
// The requester opens the stream, sends one frame, {"peers":[...]} (empty for
// everything, or up to 64 peer IDs it lacks), and closes its write side; the
// responder sends its own announcement and then the catalog's (or just the
// peers asked for), each as one varint-prefixed frame, and closes. Every
// announcement is verified like a gossiped one. Gossip serves it (JoinGossip
// registers the handler) and asks for it (CatchUp).
const (
	// CatchUpID is the protocol ID.
	CatchUpID = "/mwpeer/catalog/1.0.0"
	// CatchUpServiceName is the resource-manager service of its streams.
	CatchUpServiceName = "mwpeer.catalog"
)

const (
	catchUpDeadline    = 10 * time.Second
	catchUpPerPeer     = 10 * time.Second // a requester is served at most this often
	catchUpPerMinute   = 3                // catch-ups this peer starts per minute
	catchUpRepeatAfter = 5 * time.Minute  // before asking the same peer again
	catchUpRequestMax  = 8 << 10          // bytes of a request frame
	catchUpMaxWanted   = 64               // peer IDs one request may name
	fetchPerPeer       = time.Second      // targeted requests served per requester, and sent per source
)

// catchUpRequest is the requester's frame.
type catchUpRequest struct {
	Peers []string `json:"peers,omitempty"`
}

func (g *Gossip) serveCatchUp(s network.Stream) {
	defer s.Close()
	// The reply is streamed frame by frame; one frame is the most it buffers.
	if err := wire.Attach(s, CatchUpServiceName, MaxAnnouncementSize, network.ReservationPriorityLow); err != nil {
		g.log.Debug("catch-up stream refused", "peer", s.Conn().RemotePeer().ShortString(), "err", err)
		return
	}
	_ = s.SetDeadline(time.Now().Add(catchUpDeadline))

	var req catchUpRequest
	if err := wire.ReadJSON(wire.NewReader(s, catchUpRequestMax), &req); err == nil {
		if len(req.Peers) > catchUpMaxWanted {
			s.Reset()
			return
		}
	} else if !errors.Is(err, io.EOF) {
		s.Reset()
		return
	}
	targeted := len(req.Peers) > 0
	from := s.Conn().RemotePeer()
	limit, served := catchUpPerPeer, g.served
	if targeted {
		limit, served = fetchPerPeer, g.fetched
	}
	g.mu.Lock()
	if last, ok := served[from]; ok && time.Since(last) < limit {
		g.mu.Unlock()
		s.Reset()
		return
	}
	served[from] = time.Now()
	for id, at := range served { // keep the map bounded
		if time.Since(at) > limit {
			delete(served, id)
		}
	}
	own, ownBeat := g.lastFull, g.lastBeat
	g.mu.Unlock()
	if targeted && !slices.Contains(req.Peers, g.self.String()) {
		own, ownBeat = nil, nil
	}
	envs := g.cfg.Catalog.EnvelopesOf(req.Peers)
	if !targeted {
		envs = g.cfg.Catalog.Envelopes(g.cfg.CatchUpMax)
	}

	for _, env := range append([][]byte{own, ownBeat}, envs...) {
		if env == nil {
			continue
		}
		if err := wire.Write(s, env, MaxAnnouncementSize); err != nil {
			s.Reset()
			return
		}
	}
}

// CatchUp asks p for the announcements it holds, verifies and applies them,
// and returns how many changed the catalog.
func (g *Gossip) CatchUp(ctx context.Context, p peer.ID) (int, error) {
	return g.catchUp(ctx, p, nil)
}

// catchUp asks p for the announcements of the given peers (all when nil).
func (g *Gossip) catchUp(ctx context.Context, p peer.ID, wanted []string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, catchUpDeadline)
	defer cancel()
	s, err := wire.Open(network.WithNoDial(ctx, "catalog catch-up"), g.h, p, CatchUpID, CatchUpServiceName)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	release, err := wire.Reserve(s, MaxAnnouncementSize, network.ReservationPriorityLow)
	if err != nil {
		s.Reset()
		return 0, err
	}
	defer release()
	deadline, _ := ctx.Deadline()
	_ = s.SetDeadline(deadline)
	if err := wire.WriteJSON(s, catchUpRequest{Peers: wanted}, catchUpRequestMax); err != nil {
		s.Reset()
		return 0, err
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return 0, err
	}
	r := wire.NewReader(s, MaxAnnouncementSize)
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
		if !supports(ev.Protocols, CatchUpID) {
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

// want notes that a beat came from author, a peer this catalog does not
// know, through the neighbour via: the next fetch round asks via for it.
func (g *Gossip) want(author string, via peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	set := g.wanted[via]
	if set == nil {
		if len(g.wanted) >= 64 {
			return
		}
		set = make(map[string]bool)
		g.wanted[via] = set
	}
	if len(set) < catchUpMaxWanted {
		set[author] = true
	}
}

// fetchWanted asks neighbours, at most once a second each, for the full
// announcements of peers heard only through beats, so that a peer whose
// full announcement was missed joins the catalog without waiting for its
// next one.
func (g *Gossip) fetchWanted(ctx context.Context) {
	defer g.wg.Done()
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	asked := map[peer.ID]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		g.mu.Lock()
		batch := map[peer.ID][]string{}
		for via, set := range g.wanted {
			if now.Sub(asked[via]) < fetchPerPeer {
				continue
			}
			for id := range set {
				if !g.cfg.Catalog.Has(id) {
					batch[via] = append(batch[via], id)
				}
			}
			delete(g.wanted, via)
		}
		g.mu.Unlock()
		for id, at := range asked {
			if now.Sub(at) > fetchPerPeer {
				delete(asked, id)
			}
		}
		for via, ids := range batch {
			if len(ids) == 0 {
				continue
			}
			asked[via] = now
			g.wg.Add(1)
			go func(via peer.ID, ids []string) {
				defer g.wg.Done()
				if n, err := g.catchUp(ctx, via, ids); err != nil {
					g.log.Debug("fetch of missed announcements failed", "via", via.ShortString(), "err", err)
				} else {
					g.recovered.Add(uint64(n))
					g.log.Debug("fetched missed announcements", "via", via.ShortString(), "asked", len(ids), "applied", n)
				}
			}(via, ids)
		}
	}
}

// Recovered counts announcements recovered by fetching after a beat from an
// unknown peer.
func (g *Gossip) Recovered() uint64 { return g.recovered.Load() }
