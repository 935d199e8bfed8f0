package api

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/inference/sharding"
	"github.com/mwpeer/mwpeer/p2p"
)

// The views of GET /api/peers, /api/rtt and /api/experts, built from the
// parts of a peer (its catalog, RTT matrix and shard holdings).

// PeersView is GET /api/peers: every catalog entry with its RTT estimate
// from this peer and the kind of connection to it ("direct", "relayed" or
// "none").
func PeersView(entries []experts.Entry, rtt func(id string) geo.RTT, conn func(id string) string) Peers {
	out := Peers{Peers: make([]PeerInfo, 0, len(entries))}
	for _, e := range entries {
		info := PeerInfo{
			ID:       e.Peer,
			Addrs:    nonNil(e.Addrs),
			Domains:  nonNil(e.Domains),
			Models:   make([]Model, 0, len(e.Models)),
			Region:   e.Region,
			LastSeen: e.Seen,
			Capacity: e.Capacity,
			Load:     e.Load,
			Conn:     conn(e.Peer),
		}
		for _, m := range e.Models {
			info.Models = append(info.Models, Model{Name: m.Name, Digest: m.Digest, Engine: m.Engine})
		}
		if e.Location != nil {
			info.Location = &Location{Lat: e.Location.Lat, Lon: e.Location.Lon}
		}
		r := rtt(e.Peer)
		info.RTTSource = string(r.Source)
		if r.Known() {
			ms := r.Millis()
			info.RTTMs = &ms
		}
		info.RTT = RTTInput{Ms: info.RTTMs, Source: info.RTTSource}
		info.Sources = peerSources(info.RTTSource)
		out.Peers = append(out.Peers, info)
	}
	return out
}

// MaxRTTPeers bounds the peers of GET /api/rtt.
const MaxRTTPeers = 256

// RTTView is GET /api/rtt: the matrix over self and the peers of entries,
// capped at MaxRTTPeers (the nearest by estimate) to bound the answer.
func RTTView(self string, entries []experts.Entry, m *geo.Matrix) RTTMatrix {
	ids := []string{self}
	for _, e := range entries {
		ids = append(ids, e.Peer)
	}
	if len(ids) > MaxRTTPeers {
		rest := ids[1:]
		sort.Slice(rest, func(i, j int) bool {
			a, b := m.Estimate(self, rest[i]), m.Estimate(self, rest[j])
			if a.Known() != b.Known() {
				return a.Known()
			}
			return a.Value < b.Value
		})
		ids = append([]string{self}, rest[:MaxRTTPeers-1]...)
	}
	full := m.Full(ids)
	out := RTTMatrix{Self: self, Peers: ids, RTT: make(map[string]map[string]RTTEntry, len(full))}
	for from, row := range full {
		r := make(map[string]RTTEntry, len(row))
		for to, v := range row {
			r[to] = RTTEntry{Ms: v.Millis(), Source: string(v.Source)}
		}
		out.RTT[from] = r
	}
	return out
}

// ConnectionOf describes a live libp2p connection for /api/status.
func ConnectionOf(c network.Conn) Connection {
	a := c.RemoteMultiaddr()
	return Connection{
		Peer:      c.RemotePeer().String(),
		Addr:      a.String(),
		Transport: p2p.TransportName(a),
		Relayed:   p2p.IsRelayed(a) || c.Stat().Limited,
		Direction: strings.ToLower(c.Stat().Direction.String()),
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// ExpertsView is GET /api/experts: every sharded model this peer (self)
// holds some of (local) or hears of in the announcements of entries. served
// is the expert calls this peer answered, over every model.
func ExpertsView(self string, local []sharding.LocalModel, served uint64, entries []experts.Entry) Experts {
	byID := map[string]*ShardedModel{}
	get := func(id, name string, layers, nexperts int) *ShardedModel {
		m := byID[id]
		if m == nil {
			m = &ShardedModel{ID: id, Name: name, Layers: layers, Experts: nexperts, Hosts: map[string]int{}, Runners: []string{}}
			m.Replicas = make([][]int, layers)
			for l := range m.Replicas {
				m.Replicas[l] = make([]int, nexperts)
			}
			byID[id] = m
		}
		return m
	}
	count := func(m *ShardedModel, who string, sum experts.ShardSummary) {
		if sum.Layers != m.Layers || sum.Experts != m.Experts {
			return
		}
		if sum.Dense {
			m.Runners = append(m.Runners, who)
		}
		if n := sum.Count(); n > 0 {
			m.Hosts[who] = n
		}
		for l := range m.Layers {
			for e := range m.Experts {
				if sum.Has(l, e) {
					m.Replicas[l][e]++
				}
			}
		}
	}
	for _, lm := range local {
		if lm.Announced {
			count(get(lm.ID, lm.Name, lm.Layers, lm.Experts), self, lm.Summary)
		}
	}
	for _, lm := range local {
		m := get(lm.ID, lm.Name, lm.Layers, lm.Experts)
		m.ExpertsUsed = lm.ExpertsUsed
		m.Local = &LocalShards{Dense: lm.Dense, Experts: lm.Hosted, Fetch: lm.Fetch, Served: served,
			LocalCalls: lm.LocalCalls, RemoteCalls: lm.RemoteCalls, Failovers: lm.Failovers}
	}
	for _, en := range entries {
		for _, sum := range en.Shards {
			count(get(sum.Model, sum.Name, sum.Layers, sum.Experts), en.Peer, sum)
		}
	}
	out := Experts{Models: []ShardedModel{}}
	for _, m := range byID {
		m.MinReplicas = -1
		for l := range m.Replicas {
			for _, n := range m.Replicas[l] {
				if n == 0 {
					m.Missing++
				}
				if m.MinReplicas < 0 || n < m.MinReplicas {
					m.MinReplicas = n
				}
			}
		}
		if m.Missing > 0 {
			m.Warnings = append(m.Warnings, fmt.Sprintf("%d of %d experts have no live host: prompts routed to them fail", m.Missing, m.Layers*m.Experts))
		}
		if len(m.Runners) == 0 {
			m.Warnings = append(m.Warnings, "no peer holds the dense shard: nobody runs this model")
		}
		slices.Sort(m.Runners)
		out.Models = append(out.Models, *m)
	}
	slices.SortFunc(out.Models, func(a, b ShardedModel) int { return strings.Compare(a.Name+a.ID, b.Name+b.ID) })
	return out
}

// peerSources is where each field of a PeerInfo came from: the RTT as rtt
// says, the rest from the peer's own announcement.
func peerSources(rtt string) map[string]string {
	const reported = "reported"
	return map[string]string{"rtt": rtt, "addrs": reported, "domains": reported, "models": reported, "region": reported,
		"location": reported, "capacity": reported, "load": reported}
}
