package experts

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/mwpeer/mwpeer/experts/catchup"
	"github.com/mwpeer/mwpeer/p2p"
)

// The catalog catch-up protocol (package catchup) hands a newcomer the
// signed announcements its neighbour holds, so it sees the swarm at once
// instead of after a heartbeat, and fetches the announcements of peers heard
// of only through beats. Gossip serves it (JoinGossip registers the service,
// which answers with this peer's own announcement and then the catalog's) and
// asks for it (CatchUp); here are the decisions: whom to answer and how
// often, whom to ask, and every announcement received verified like a
// gossiped one before it reaches the catalog.
const (
	catchUpPerPeer     = 10 * time.Second // a requester is served at most this often
	catchUpPerMinute   = 3                // catch-ups this peer starts per minute
	catchUpRepeatAfter = 5 * time.Minute  // before asking the same peer again
	fetchPerPeer       = time.Second      // targeted requests served per requester, and sent per source
	// catchUpQuiet: after a full catch-up that brought little news (less
	// than 1/catchUpNews of what it received), this peer holds what its
	// neighbours hold and starts no full catch-up for so long. New
	// connections keep coming for as long as a peer runs (DHT lookups,
	// the connection manager trimming), and a full catch-up on each, up to
	// catchUpPerMinute of them, cost every peer of a churning swarm up to
	// three catalogs a minute: 110-230 KB/s at 10,000-100,000 peers
	// (internal/scale), over the gossip goal on its own. Gossip carries the
	// news from then on, and a full announcement missed is fetched alone
	// after its author's next beat (fetchWanted).
	catchUpQuiet = 30 * time.Minute
	catchUpNews  = 8
)

// DefaultCatchUpPerPrefix bounds the catch-ups answered for the requesters
// of one network prefix (p2p.Prefix: a /24, a /48, or a relay's): so many
// full ones per catchUpPerPeer and so many targeted ones per fetchPerPeer.
// A full answer is up to CatchUpMax envelopes (megabytes); per peer ID alone
// a host with a thousand fresh keys could ask for it a thousand times every
// 10 s. Eight newcomers from one /24 in 10 s is more than honest joins make;
// loopback requesters (tests, the operator's own peers) are not limited.
const DefaultCatchUpPerPrefix = 8

// A catch-up frame carries any announcement gossip accepts (this fails to
// compile otherwise).
const _ = uint(catchup.MaxFrameSize - MaxAnnouncementSize)

// errTooSoon refuses a requester served less than its limit ago.
var errTooSoon = errors.New("catch-up asked again too soon")

// errPrefixBusy refuses a requester whose network prefix used its share.
var errPrefixBusy = errors.New("catch-up asked too often from this network prefix")

// errOtherShard refuses a requester of another announcement shard: this
// catalog holds none of the announcements it could use.
var errOtherShard = errors.New("catch-up asked from another announcement shard")

// admitCatchUp serves a requester at most every catchUpPerPeer, or every
// fetchPerPeer for a targeted request (wanted not empty), and the
// requesters of one network prefix CatchUpPerPrefix times as often.
func (g *Gossip) admitCatchUp(from peer.ID, wanted []string) error {
	if !g.inShardID(from) {
		return errOtherShard
	}
	return g.admitCatchUpAt(from, g.remotePrefix(from), len(wanted) > 0, time.Now())
}

// remotePrefix is the network prefix of the connection from p ("" for
// loopback or none, which are not limited by prefix).
func (g *Gossip) remotePrefix(p peer.ID) string {
	for _, c := range g.h.Network().ConnsToPeer(p) {
		a := c.RemoteMultiaddr()
		if manet.IsIPLoopback(a) {
			return ""
		}
		if pre := p2p.Prefix(a); pre != "" {
			return pre
		}
	}
	return ""
}

func (g *Gossip) admitCatchUpAt(from peer.ID, prefix string, targeted bool, now time.Time) error {
	limit, served, kind := catchUpPerPeer, g.served, "full/"
	if targeted {
		limit, served, kind = fetchPerPeer, g.fetched, "targeted/"
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if last, ok := served[from]; ok && now.Sub(last) < limit {
		return errTooSoon
	}
	if prefix != "" {
		key := kind + prefix
		recent := g.prefixes[key][:0]
		for _, at := range g.prefixes[key] {
			if now.Sub(at) < limit {
				recent = append(recent, at)
			}
		}
		if len(recent) >= g.cfg.CatchUpPerPrefix {
			g.prefixes[key] = recent
			return errPrefixBusy
		}
		g.prefixes[key] = append(recent, now)
		if len(g.prefixes) > 1024 { // keep the map bounded
			for k, times := range g.prefixes {
				if len(times) == 0 || now.Sub(times[len(times)-1]) >= catchUpPerPeer {
					delete(g.prefixes, k)
				}
			}
		}
	}
	served[from] = now
	for id, at := range served { // keep the map bounded
		if now.Sub(at) > limit {
			delete(served, id)
		}
	}
	return nil
}

// catchUpSource is what this peer hands out over catch-up: its own latest
// announcement (full, then beat) and then the catalog's.
type catchUpSource struct{ g *Gossip }

func (s catchUpSource) own() [][]byte {
	s.g.mu.Lock()
	full, beat := s.g.lastFull, s.g.lastBeat
	s.g.mu.Unlock()
	var out [][]byte
	for _, env := range [][]byte{full, beat} {
		if env != nil {
			out = append(out, env)
		}
	}
	return out
}

func (s catchUpSource) Envelopes(max int) [][]byte {
	return append(s.own(), s.g.cfg.Catalog.Envelopes(max)...)
}

func (s catchUpSource) EnvelopesOf(ids []string) [][]byte {
	var own [][]byte
	if slices.Contains(ids, s.g.self.String()) {
		own = s.own()
	}
	return append(own, s.g.cfg.Catalog.EnvelopesOf(ids)...)
}

// CatchUp asks p for the announcements it holds, verifies and applies them,
// and returns how many changed the catalog.
func (g *Gossip) CatchUp(ctx context.Context, p peer.ID) (int, error) {
	return g.catchUp(ctx, p, nil)
}

// catchUp asks p for the announcements of the given peers (all when nil),
// and applies those that verify, even when the exchange ended in an error.
func (g *Gossip) catchUp(ctx context.Context, p peer.ID, wanted []string) (int, error) {
	applied, _, err := g.catchUpCounted(ctx, p, wanted)
	return applied, err
}

// catchUpCounted is catchUp that also returns how many envelopes arrived.
func (g *Gossip) catchUpCounted(ctx context.Context, p peer.ID, wanted []string) (applied, received int, err error) {
	envs, err := catchup.Fetch(ctx, g.h, p, wanted, g.cfg.CatchUpMax)
	for _, env := range envs {
		a, err := OpenRelayed(env, time.Now())
		if err != nil {
			g.count(ReasonOf(err))
			continue
		}
		if !g.inShard(a.Peer) {
			// The catalog holds this peer's shard only; a neighbour
			// handing others is not following the protocol, but this one
			// costs nothing more than its bytes.
			g.count(RejectWrongShard)
			continue
		}
		if g.cfg.Catalog.Apply(a, env, time.Now()) {
			applied++
		}
	}
	return applied, len(envs), err
}

// quietAfter notes a full catch-up that applied applied of received
// envelopes at now: when that was little news, full catch-ups pause for
// catchUpQuiet (see catchUpQuiet).
func (g *Gossip) quietAfter(applied, received int, now time.Time) {
	if received == 0 || applied*catchUpNews >= received {
		return
	}
	g.mu.Lock()
	g.quietUntil = now.Add(catchUpQuiet)
	g.mu.Unlock()
}

// catchUpNewcomers catches up from peers as they are identified, a few per
// minute, so a new peer fills its catalog from its first neighbours, until
// a catch-up brings little news (see catchUpQuiet).
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
		if !supports(ev.Protocols, catchup.ID) || !g.inShardID(ev.Peer) {
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
		quiet := now.Before(g.quietUntil)
		g.mu.Unlock()
		if quiet || len(recent) >= catchUpPerMinute || (asked && now.Sub(last) < catchUpRepeatAfter) {
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
			n, got, err := g.catchUpCounted(ctx, p, nil)
			if err != nil {
				g.log.Debug("catch-up failed", "other", p.ShortString(), "err", err)
				return
			}
			g.quietAfter(n, got, time.Now())
			g.log.Debug("caught up", "other", p.ShortString(), "applied", n, "received", got)
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
	if len(set) < catchup.MaxWanted {
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

// mend repairs, once a heartbeat interval, what a loaded process loses:
//   - a connected mwpeer peer missing from the catalog (its announcements
//     went astray) is asked for its own announcement directly;
//   - GossipSub gives up on a peer whose stream fails to open (under load,
//     say) until a new connection to it appears. A peer with fewer than
//     minTopicPeers peers on the announce topic hears almost nothing, so it
//     connects to catalog peers it is not connected to, and reconnects one
//     connected mwpeer peer that stayed outside the topic for two rounds.
func (g *Gossip) mend(ctx context.Context) {
	defer g.wg.Done()
	outside := map[peer.ID]int{} // rounds a connected peer was not in the topic
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(g.Interval()):
		}
		cur, _ := g.topics()
		topicPeers := cur.topic.ListPeers()
		inTopic := map[peer.ID]bool{}
		for _, p := range topicPeers {
			inTopic[p] = true
		}
		seen := map[peer.ID]bool{}
		var stuck []peer.ID
		for _, p := range g.h.Network().Peers() {
			if ok, err := g.h.Peerstore().SupportsProtocols(p, catchup.ID); err != nil || len(ok) == 0 {
				continue
			}
			if !g.inShardID(p) {
				// Another shard's peer (connected for the DHT or a prompt)
				// is outside this topic by design.
				continue
			}
			seen[p] = true
			if p2p.ConnKind(g.h.Network().ConnsToPeer(p)) != "direct" {
				// Over a relay (limited) GossipSub opens no stream and
				// catch-up is not asked: such a peer is outside the topic
				// by design, and closing its connection would cut hole
				// punching short.
				delete(outside, p)
				continue
			}
			if !g.cfg.Catalog.Has(p.String()) {
				g.want(p.String(), p)
			}
			if inTopic[p] {
				delete(outside, p)
			} else if outside[p]++; outside[p] >= 3 {
				stuck = append(stuck, p)
			}
		}
		for p := range outside {
			if !seen[p] {
				delete(outside, p)
			}
		}
		if len(topicPeers) >= minTopicPeers {
			continue
		}
		var dial []peer.AddrInfo
		if len(stuck) > 0 {
			p := stuck[0]
			delete(outside, p)
			g.log.Info("peer connected but outside the announce topic; reconnecting it", "other", p.ShortString(), "topic_peers", len(topicPeers))
			_ = g.h.Network().ClosePeer(p) // GossipSub retries on the new connection
			dial = append(dial, peer.AddrInfo{ID: p})
		}
		for _, e := range g.cfg.Catalog.Select(func(e *Entry) bool { return len(e.Addrs) > 0 }) {
			if len(dial) >= mendDials {
				break
			}
			id, err := peer.Decode(e.Peer)
			if err != nil || seen[id] {
				continue
			}
			ai := peer.AddrInfo{ID: id}
			for _, a := range e.Addrs {
				if m, err := ma.NewMultiaddr(a); err == nil {
					ai.Addrs = append(ai.Addrs, m)
				}
			}
			dial = append(dial, ai)
		}
		if len(dial) < mendDials {
			dial = append(dial, g.shardProviders(ctx, seen, mendDials-len(dial))...)
		}
		if len(dial) > 0 {
			g.log.Debug("few peers on the announce topic; connecting to more", "topic_peers", len(topicPeers), "dialing", len(dial))
		}
		for _, ai := range dial {
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if err := g.h.Connect(dctx, ai); err != nil {
					g.log.Debug("connection for gossip failed", "other", ai.ID.ShortString(), "err", err)
				}
			}()
		}
	}
}

// shardProviders looks up, when the swarm is sharded, up to n peers of this
// peer's shard on the DHT that it is not connected to: in a sharded swarm
// its bootstrap and DHT neighbours are mostly of other shards, and its
// catalog may know none of its own yet.
func (g *Gossip) shardProviders(ctx context.Context, connected map[peer.ID]bool, n int) []peer.AddrInfo {
	cur, _ := g.topics()
	if cur.bits == 0 || g.cfg.Providers == nil {
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	found, err := g.cfg.Providers(lctx, KindAnnounceShard, AnnounceShardKey(cur.bits, cur.shard), 4*n)
	if err != nil {
		g.log.Debug("lookup of this shard's peers failed", "err", err)
	}
	var out []peer.AddrInfo
	for _, ai := range found {
		if len(out) < n && ai.ID != g.self && !connected[ai.ID] && g.inShardID(ai.ID) {
			out = append(out, ai)
		}
	}
	return out
}

// A peer with fewer than minTopicPeers on the announce topic widens its
// connections, mendDials at a time.
const (
	minTopicPeers = 3
	mendDials     = 3
)

// Recovered counts announcements recovered by fetching after a beat from an
// unknown peer.
func (g *Gossip) Recovered() uint64 { return g.recovered.Load() }
