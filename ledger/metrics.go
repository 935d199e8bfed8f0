package ledger

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mwpeer/mwpeer/receipt"
)

// Collectors are the ledger's Prometheus metrics, read at scrape time from
// its running totals: receipts stored signed and unsigned, tallies signed
// and disputed, and credits earned and spent.
func (l *Ledger) Collectors() []prometheus.Collector {
	gauge := func(name, help string, v func(Totals) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return v(l.Counters()) })
	}
	return []prometheus.Collector{
		gauge("mwpeer_receipts_signed", "Receipts in the ledger signed by both peers.", func(t Totals) float64 { return float64(t.Receipts) }),
		gauge("mwpeer_receipts_unsigned", "Receipts in the ledger the requester did not countersign (they count for nothing).", func(t Totals) float64 { return float64(t.Unsigned) }),
		gauge("mwpeer_tallies_signed", "Tallies of expert calls and shard bytes in the ledger signed by both peers.", func(t Totals) float64 { return float64(t.Tallies) }),
		gauge("mwpeer_tallies_disputed", "Tallies in the ledger the worker did not countersign (they count for nothing).", func(t Totals) float64 { return float64(t.Disputed) }),
		gauge("mwpeer_credits_earned", "Credits earned serving other peers (signed receipts and tallies).", func(t Totals) float64 { return float64(t.Earned) / receipt.Micro }),
		gauge("mwpeer_credits_spent", "Credits spent on other peers' work (signed receipts and tallies).", func(t Totals) float64 { return float64(t.Spent) / receipt.Micro }),
	}
}
