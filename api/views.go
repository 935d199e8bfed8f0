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

// PeersView is GET /api/peers: one page of entries (sorted by peer ID, as
// Catalog.Snapshot gives them), each with its RTT estimate from this peer and
// the kind of connection to it ("direct", "relayed" or "none"). Only the
// page's entries are looked at beyond their ID.
func PeersView(entries []experts.Entry, page Page, rtt func(id string) geo.RTT, conn func(id string) string) Peers {
	from, to := page.bounds(len(entries))
	out := Peers{Peers: make([]PeerInfo, 0, to-from), Total: len(entries), Offset: from, Limit: to - from}
	if page.Limit > 0 {
		out.Limit = min(page.Limit, MaxPageSize)
	}
	if to < len(entries) {
		out.NextOffset = &to
	}
	for _, e := range entries[from:to] {
		info := PeerInfo{
			ID:       e.Peer,
			Addrs:    nonNil(e.Addrs),
			Domains:  nonNil(e.Domains),
			Models:   make([]Model, 0, len(e.Models)),
			Region:   e.Region,
			LastSeen: e.Seen,
			Capacity: e.Capacity,
			Load:     e.Load,
			Version:  e.Version,
			Conn:     conn(e.Peer),
		}
		for _, m := range e.Models {
			info.Models = append(info.Models, Model{Name: m.Name, Digest: m.Digest, Engine: m.Engine, Kernels: m.Kernels, Context: m.Context})
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

// ExpertsView is GET /api/experts: the sharded models this peer (self)
// holds the manifest of (local), with what the announcements of entries say
// of their hosts. A summary announced for any other model is only counted
// (Unverified): its shape and name are a stranger's say-so, and building a
// layer × expert matrix for each would let anyone make this view as large as
// the catalog times 65,536. Without page.Model the models of the page come
// with counts; with it (an ID or a name), that one model with its runners,
// hosts and replica matrix. served is the expert calls this peer answered,
// over every model.
func ExpertsView(self string, local []sharding.LocalModel, served uint64, entries []experts.Entry, page Page) Experts {
	slices.SortFunc(local, func(a, b sharding.LocalModel) int { return strings.Compare(a.Name+a.ID, b.Name+b.ID) })
	verified := make(map[string]bool, len(local))
	for _, lm := range local {
		verified[lm.ID] = true
	}
	unverified := map[string]bool{}
	for _, en := range entries {
		for _, sum := range en.Shards {
			if !verified[sum.Model] && len(unverified) < 1<<16 {
				unverified[sum.Model] = true
			}
		}
	}
	out := Experts{Models: []ShardedModel{}, Unverified: len(unverified)}
	detail := page.Model != ""
	if detail {
		local = slices.DeleteFunc(slices.Clone(local), func(lm sharding.LocalModel) bool { return lm.ID != page.Model && lm.Name != page.Model })
		local = local[:min(len(local), 1)]
	}
	from, to := page.bounds(len(local))
	out.Total, out.Offset, out.Limit = len(local), from, to-from
	if page.Limit > 0 {
		out.Limit = min(page.Limit, MaxPageSize)
	}
	if to < len(local) {
		out.NextOffset = &to
	}
	for _, lm := range local[from:to] {
		out.Models = append(out.Models, shardedModel(self, lm, served, entries, detail))
	}
	return out
}

// shardedModel is the view of one model whose manifest this peer holds.
func shardedModel(self string, lm sharding.LocalModel, served uint64, entries []experts.Entry, detail bool) ShardedModel {
	m := ShardedModel{ID: lm.ID, Name: lm.Name, Layers: lm.Layers, Experts: lm.Experts, ExpertsUsed: lm.ExpertsUsed}
	m.Local = &LocalShards{Dense: lm.Dense, Experts: lm.Hosted, Fetch: lm.Fetch, Served: served,
		LocalCalls: lm.LocalCalls, RemoteCalls: lm.RemoteCalls, Failovers: lm.Failovers}
	replicas := make([][]int, m.Layers)
	for l := range replicas {
		replicas[l] = make([]int, m.Experts)
	}
	var runners []string
	hosts := map[string]int{}
	count := func(who string, sum experts.ShardSummary) {
		if sum.Layers != m.Layers || sum.Experts != m.Experts {
			return // not the shape of the manifest: a wrong or lying summary
		}
		if sum.Dense {
			runners = append(runners, who)
		}
		n := 0
		for l := range m.Layers {
			for e := range m.Experts {
				if sum.Has(l, e) {
					replicas[l][e]++
					n++
				}
			}
		}
		if n > 0 {
			hosts[who] = n
		}
	}
	if lm.Announced {
		count(self, lm.Summary)
	}
	for _, en := range entries {
		if sum, ok := en.ShardsOf(lm.ID); ok {
			count(en.Peer, sum)
		}
	}
	m.MinReplicas = -1
	for l := range replicas {
		for _, n := range replicas[l] {
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
	if len(runners) == 0 {
		m.Warnings = append(m.Warnings, "no peer holds the dense shard: nobody runs this model")
	}
	m.RunnerCount, m.HostCount = len(runners), len(hosts)
	if detail {
		slices.Sort(runners)
		m.Runners = runners[:min(len(runners), MaxPageSize)]
		ids := make([]string, 0, len(hosts))
		for id := range hosts {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		m.Hosts = make(map[string]int, min(len(ids), MaxPageSize))
		for _, id := range ids[:min(len(ids), MaxPageSize)] {
			m.Hosts[id] = hosts[id]
		}
		m.Replicas = replicas
	}
	return m
}

// peerSources is where each field of a PeerInfo came from: the RTT as rtt
// says, the rest from the peer's own announcement.
func peerSources(rtt string) map[string]string {
	const reported = "reported"
	return map[string]string{"rtt": rtt, "addrs": reported, "domains": reported, "models": reported, "region": reported,
		"location": reported, "capacity": reported, "load": reported}
}
