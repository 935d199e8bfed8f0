package mwpeer

import (
	"bufio"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/geo"
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
		conns = append(conns, connInfo(c))
	}
	sort.Slice(conns, func(i, j int) bool { return conns[i].Peer < conns[j].Peer })
	for _, a := range h.Addrs() {
		if isRelayed(a) {
			relays = append(relays, a.String())
		}
	}
	iv := p.Gossip.Interval()
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
		Announce:       api.AnnounceStatus{IntervalS: iv.Seconds(), TTLS: experts.TTL(iv).Seconds(), Accepted: p.Gossip.Accepted()},
		Rejected:       p.Gossip.Rejected(),
		Domains:        p.cfg.Domains,
		Models:         names,
		Engine:         p.cfg.Engine,
		Region:         p.cfg.Region,
		Connections:    conns,
		Relays:         relays,
		HolePunching:   h.HolePunchReady(),
	}
	if l := p.cfg.Location; l != nil {
		st.Location = &api.Location{Lat: l.Lat, Lon: l.Lon}
	}
	return st
}

// BootstrapAddr is the --bootstrap value another machine would use to join
// through this peer: its first public address if it knows one, else its
// first non-loopback one, else any.
func (p *Peer) BootstrapAddr() string {
	addrs := p.Addrs()
	if len(addrs) == 0 {
		return ""
	}
	best, bestRank := addrs[0], 99
	for _, a := range addrs {
		rank := 3
		switch {
		case isRelayed(a):
			rank = 4
		case manetIsPublic(a):
			rank = 0
		case !manetIsLoopback(a):
			rank = 1
		}
		if rank < bestRank {
			best, bestRank = a, rank
		}
	}
	return best.String()
}

// Peers implements api.Node.
func (p *Peer) Peers() api.Peers {
	self := p.ID().String()
	entries := p.Catalog.Snapshot()
	out := api.Peers{Peers: make([]api.PeerInfo, 0, len(entries))}
	for _, e := range entries {
		info := api.PeerInfo{
			ID:       e.Peer,
			Addrs:    nonNil(e.Addrs),
			Domains:  nonNil(e.Domains),
			Models:   make([]api.Model, 0, len(e.Models)),
			Region:   e.Region,
			LastSeen: e.Seen,
			Capacity: e.Capacity,
			Load:     e.Load,
			Conn:     "none",
		}
		for _, m := range e.Models {
			info.Models = append(info.Models, api.Model{Name: m.Name, Digest: m.Digest, Engine: m.Engine})
		}
		if e.Location != nil {
			info.Location = &api.Location{Lat: e.Location.Lat, Lon: e.Location.Lon}
		}
		r := p.Matrix.Estimate(self, e.Peer)
		info.RTTSource = string(r.Source)
		if r.Known() {
			ms := r.Millis()
			info.RTTMs = &ms
		}
		if id, err := peer.Decode(e.Peer); err == nil {
			info.Conn = connKind(p.Host.Network().ConnsToPeer(id))
		}
		out.Peers = append(out.Peers, info)
	}
	return out
}

// RTT implements api.Node: the matrix over this peer and every catalog
// entry, capped at 256 peers (the nearest by estimate) to bound the answer.
func (p *Peer) RTT() api.RTTMatrix {
	self := p.ID().String()
	ids := []string{self}
	for _, e := range p.Catalog.Snapshot() {
		ids = append(ids, e.Peer)
	}
	if len(ids) > 256 {
		rest := ids[1:]
		sort.Slice(rest, func(i, j int) bool {
			a, b := p.Matrix.Estimate(self, rest[i]), p.Matrix.Estimate(self, rest[j])
			if a.Known() != b.Known() {
				return a.Known()
			}
			return a.Value < b.Value
		})
		ids = append([]string{self}, rest[:255]...)
	}
	full := p.Matrix.Full(ids)
	out := api.RTTMatrix{Self: self, Peers: ids, RTT: make(map[string]map[string]api.RTTEntry, len(full))}
	for from, row := range full {
		r := make(map[string]api.RTTEntry, len(row))
		for to, v := range row {
			r[to] = api.RTTEntry{Ms: v.Millis(), Source: string(v.Source)}
		}
		out.RTT[from] = r
	}
	return out
}

// EstimateRTT is the best RTT estimate from this peer to id.
func (p *Peer) EstimateRTT(id string) geo.RTT { return p.Matrix.Estimate(p.ID().String(), id) }

func connInfo(c network.Conn) api.Connection {
	a := c.RemoteMultiaddr()
	return api.Connection{
		Peer:      c.RemotePeer().String(),
		Addr:      a.String(),
		Transport: p2p.TransportName(a),
		Relayed:   isRelayed(a) || c.Stat().Limited,
		Direction: strings.ToLower(c.Stat().Direction.String()),
	}
}

func connKind(conns []network.Conn) string {
	kind := "none"
	for _, c := range conns {
		if isRelayed(c.RemoteMultiaddr()) || c.Stat().Limited {
			kind = "relayed"
			continue
		}
		return "direct"
	}
	return kind
}

func isRelayed(a ma.Multiaddr) bool {
	for _, c := range a {
		if c.Protocol().Code == ma.P_CIRCUIT {
			return true
		}
	}
	return false
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func promHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

func hardware() experts.Hardware {
	return experts.Hardware{CPUs: runtime.NumCPU(), MemoryMB: memTotalMB(), OS: runtime.GOOS, Arch: runtime.GOARCH}
}

// memTotalMB reads MemTotal from /proc/meminfo; 0 where there is none.
func memTotalMB() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			return kb / 1024
		}
	}
	return 0
}

func manetIsPublic(a ma.Multiaddr) bool   { return manet.IsPublicAddr(a) }
func manetIsLoopback(a ma.Multiaddr) bool { return manet.IsIPLoopback(a) }
