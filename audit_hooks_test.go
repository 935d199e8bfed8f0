package mwpeer

import (
	"context"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/ledger"
)

// TestConvictionsReachTheAuditChain: an outvoted answer and an expert host
// caught computing wrongly are each one entry of the audit chain, naming
// the peer, the model and why.
func TestConvictionsReachTheAuditChain(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := peer.IDFromPrivateKey(key)
	liar := newTestID(t)
	acct, err := ledger.OpenAccounting(t.TempDir(), self, key, 0, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	auditOutvoted(acct)(liar.String(), "syn-a", inference.ExpertEvent{Kind: inference.EventOutvoted, Tokens: 7, Err: errors.New("differs at token 2")})
	auditOutvoted(acct)(liar.String(), "syn-a", inference.ExpertEvent{Kind: inference.EventDone}) // not a conviction
	auditBadHost(acct)(liar, "moe-x", "not finite")
	l := acct.Ledger
	if err := acct.Writer.Close(); err != nil { // commits what it holds
		t.Fatal(err)
	}
	got, err := l.AuditTail(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d entries, want 2: %+v", len(got), got)
	}
	if e := got[0]; e.Kind != ledger.AuditOutvoted || e.Peer != liar || e.Model != "syn-a" || e.Tokens != 7 || e.Outcome != "differs at token 2" {
		t.Errorf("outvoted entry %+v", e)
	}
	if e := got[1]; e.Kind != ledger.AuditBadExpert || e.Peer != liar || e.Model != "moe-x" || e.Outcome != "not finite" {
		t.Errorf("bad expert entry %+v", e)
	}
	acct.Writer = nil
	if err := acct.Close(); err != nil {
		t.Fatal(err)
	}
}
