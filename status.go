package mwpeer

import (
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference/sharding"
	"github.com/mwpeer/mwpeer/p2p"
)

// Status implements api.Node.
func (p *Peer) Status() api.Status {
	h := p.Host
	listen := make([]string, 0)
	for _, a := range h.Network().ListenAddresses() {
		listen = append(listen, a.String())
	}
	announced := make([]string, 0)
	for _, a := range h.Addrs() {
		announced = append(announced, a.String())
	}
	names := make([]string, 0)
	for _, m := range p.Models() {
		names = append(names, m.Name)
	}
	var relays []string
	conns := make([]api.Connection, 0)
	for _, c := range h.Network().Conns() {
		conns = append(conns, api.ConnectionOf(c))
	}
	sort.Slice(conns, func(i, j int) bool { return conns[i].Peer < conns[j].Peer })
	for _, a := range h.Addrs() {
		if p2p.IsRelayed(a) {
			relays = append(relays, a.String())
		}
	}
	iv := p.Gossip.Interval()
	bits, shard := p.Gossip.Shard()
	width := p.Gossip.WidthStatus()
	st := api.Status{
		ID:             p.ID().String(),
		Version:        Version,
		ListenAddrs:    listen,
		AnnouncedAddrs: announced,
		Bootstrap:      p.BootstrapAddr(),
		Uptime:         time.Since(p.started).Seconds(),
		Started:        p.started,
		ConnectedPeers: len(h.Network().Peers()),
		CatalogSize:    p.Catalog.Len(),
		Reachability:   strings.ToLower(strings.TrimPrefix(h.Reachability().String(), "Reachability")),
		DHTMode:        p.cfg.DHTMode,
		DHTPeers:       h.DHT.RoutingTable().Size(),
		Announce: api.AnnounceStatus{IntervalS: iv.Seconds(), TTLS: experts.TTL(iv).Seconds(), Accepted: p.Gossip.Accepted(),
			Topic: p.Gossip.TopicName(), ShardBits: bits, Shard: shard, ShardAuto: width.Auto, ShardAuthors: width.Authors,
			ShardEstimate: width.Estimate, ShardChanged: width.Changed, ShardReason: width.Reason},
		Rejected:     p.Gossip.Rejected(),
		Domains:      p.cfg.Domains,
		Models:       names,
		Engine:       p.cfg.Engine,
		EngineNote:   p.engineNote,
		Region:       p.cfg.Region,
		Connections:  conns,
		Relays:       relays,
		HolePunching: h.HolePunchReady(),
		Generated:    api.Generated{Requests: p.generated.requests.Load(), Tokens: p.generated.tokens.Load()},
	}
	if !width.GraceEnd.IsZero() {
		st.Announce.PreviousShardBits, st.Announce.ShardGraceS = width.Previous, max(time.Until(width.GraceEnd).Seconds(), 0)
	}
	if l := p.cfg.Location; l != nil {
		st.Location = &api.Location{Lat: l.Lat, Lon: l.Lon}
	}
	st.CatalogBytes, st.CatalogMaxBytes = p.Catalog.Bytes()
	return st
}

// BootstrapAddr is the --bootstrap value another machine would use to join
// through this peer (see p2p.BootstrapAddr).
func (p *Peer) BootstrapAddr() string { return p2p.BootstrapAddr(p.Addrs()) }

// Peers implements api.Node: the first page of PeersPage.
func (p *Peer) Peers() api.Peers { return p.PeersPage(api.Page{}) }

// PeersPage implements api.PagedNode.
func (p *Peer) PeersPage(page api.Page) api.Peers {
	v := api.PeersView(p.Catalog.Snapshot(), page, p.Latency.Estimate, func(id string) string {
		pid, err := peer.Decode(id)
		if err != nil {
			return "none"
		}
		return p2p.ConnKind(p.Host.Network().ConnsToPeer(pid))
	})
	for i := range v.Peers {
		sc := p.router.Trust().Score(v.Peers[i].ID)
		v.Peers[i].Trust = &sc
	}
	return v
}

// RTT implements api.Node: the matrix over this peer and every catalog entry.
func (p *Peer) RTT() api.RTTMatrix {
	return api.RTTView(p.ID().String(), p.Catalog.Snapshot(), p.Latency.Matrix)
}

// Experts implements api.Node: the first page of ExpertsPage.
func (p *Peer) Experts() api.Experts { return p.ExpertsPage(api.Page{}) }

// ExpertsPage implements api.PagedNode: the sharded models this peer holds
// the manifest of, with what the catalog says of their hosts.
func (p *Peer) ExpertsPage(page api.Page) api.Experts {
	var local []sharding.LocalModel
	var served uint64
	if p.sharding != nil {
		local = p.sharding.Local()
		served, _, _ = p.sharding.Counters()
	}
	return api.ExpertsView(p.ID().String(), local, served,
		p.Catalog.Select(func(en *experts.Entry) bool { return len(en.Shards) > 0 }), page)
}

func promHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
