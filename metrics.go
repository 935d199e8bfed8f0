package mwpeer

import (
	"errors"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mwpeer/mwpeer/experts/catchup"
)

// gossipIn is the bytes received on GossipSub (announcements, IHAVE and the
// rest of its control traffic) and catch-up streams.
func (p *Peer) gossipIn() int64 {
	var n int64
	for proto, st := range p.Host.Bandwidth.GetBandwidthByProtocol() {
		if strings.HasPrefix(string(proto), "/meshsub/") || proto == catchup.ID {
			n += st.TotalIn
		}
	}
	return n
}

// registerMetrics exposes the peer's own state next to libp2p's metrics.
// Values are read at scrape time from the counters the peer keeps anyway.
func (p *Peer) registerMetrics(reg prometheus.Registerer) {
	rejected := prometheus.NewDesc("mwpeer_announcements_rejected_total",
		"Announcements refused by the validator, by reason.", []string{"reason"}, nil)
	// The runtime's and the process's own: goroutines, resident memory,
	// open files (the soak test reads their slopes).
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			p.cfg.Logger.Debug("runtime metrics", "err", err)
		}
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mwpeer_catalog_peers", Help: "Peers in this peer's catalog."},
			func() float64 { return float64(p.Catalog.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mwpeer_catalog_bytes",
			Help: "Bytes the catalog counts its entries as holding (experts.EntryBytes: envelopes, decoded announcements, overhead), held within mwpeer_catalog_max_bytes."},
			func() float64 { held, _ := p.Catalog.Bytes(); return float64(held) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mwpeer_catalog_max_bytes", Help: "The catalog's byte budget (--catalog-max-bytes)."},
			func() float64 { _, budget := p.Catalog.Bytes(); return float64(budget) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mwpeer_suspect_peers", Help: "Peers suspected of being frozen or gone (a failed ping, a stall), routed around until they answer."},
			func() float64 { return float64(len(p.router.Trust().Suspects(0))) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mwpeer_connected_peers", Help: "Peers with a live libp2p connection."},
			func() float64 { return float64(len(p.Host.Network().Peers())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mwpeer_requests_in_progress", Help: "Requests this peer's backend is serving."},
			func() float64 { return float64(p.load.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mwpeer_announce_interval_seconds", Help: "Current heartbeat interval."},
			func() float64 { return p.Gossip.Interval().Seconds() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mwpeer_announcements_accepted_total", Help: "Announcements accepted from other peers."},
			func() float64 { return float64(p.Gossip.Accepted()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mwpeer_gossip_received_bytes_total",
			Help: "Bytes received on GossipSub and catch-up streams: what announcing the swarm costs this peer."},
			func() float64 { return float64(p.gossipIn()) }),
		collectorFunc{desc: rejected, collect: func(ch chan<- prometheus.Metric) {
			for reason, n := range p.Gossip.Rejected() {
				ch <- prometheus.MustNewConstMetric(rejected, prometheus.CounterValue, float64(n), reason)
			}
		}},
	)
	reg.MustRegister(p.ledger.Collectors()...)
	if s := p.sharding; s != nil {
		counter := func(i int) func() float64 {
			return func() float64 { c := [3]uint64{}; c[0], c[1], c[2] = s.Counters(); return float64(c[i]) }
		}
		reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mwpeer_expert_calls_served_total", Help: "Remote expert calls this peer answered."}, counter(0)),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mwpeer_expert_calls_made_total", Help: "Expert calls this peer's generations sent to other peers."}, counter(1)),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mwpeer_expert_wire_bytes_total", Help: "Header and row bytes of expert calls sent and received."}, counter(2)),
		)
	}
}

// collectorFunc is a prometheus.Collector of one description.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
