package mwpeer

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/ledger"
)

// auditOutvoted is the router's observer that appends to the audit chain
// every peer outvoted on a verified answer (the trust store has already
// convicted it; see swarm.Router's observe).
func auditOutvoted(acct *ledger.Accounting) func(expert, model string, ev inference.ExpertEvent) {
	return func(expert, model string, ev inference.ExpertEvent) {
		if ev.Kind != inference.EventOutvoted {
			return
		}
		id, _ := peer.Decode(expert) // "" for a name that is no peer ID
		outcome := "outvoted"
		if ev.Err != nil {
			outcome = ev.Err.Error()
		}
		acct.Audit(ledger.AuditEntry{Kind: ledger.AuditOutvoted, Peer: id, Model: model, Tokens: int64(ev.Tokens), Outcome: outcome})
	}
}

// auditBadHost appends to the audit chain every expert host caught
// computing wrongly (sharding.Config.OnBadHost; the trust store has already
// convicted it).
func auditBadHost(acct *ledger.Accounting) func(host peer.ID, model, reason string) {
	return func(host peer.ID, model, reason string) {
		acct.Audit(ledger.AuditEntry{Kind: ledger.AuditBadExpert, Peer: host, Model: model, Outcome: reason})
	}
}
