package ledger

import (
	"context"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/infer"
	"github.com/mwpeer/mwpeer/receipt"
)

// Accounting ties a ledger to a peer's two paths: the receipts its infer
// service signs for the work it serves and those it countersigns for the
// work it asks of others, and the class of a remote caller when serving
// slots are scarce (contributors first; see inference.Prioritized).
type Accounting struct {
	Ledger *Ledger
	// Writer, when set, stores receipts off the request path; otherwise
	// each is stored before the call it records returns.
	Writer *Writer
	Self   peer.ID
	Key    crypto.PrivKey // the host's key
	// FreeAllowance is the tokens a day a peer without credit with us is
	// served as a newcomer, so a new swarm can start.
	FreeAllowance int64
	Log           *slog.Logger
	Now           func() time.Time // nil: time.Now
}

func (a *Accounting) store(s *receipt.Signed) error {
	if a.Writer != nil {
		return a.Writer.Queue(s)
	}
	_, err := a.Ledger.Put(a.Self, s)
	if err != nil && a.Log != nil {
		a.Log.Warn("receipt not stored", "id", s.ID.String(), "err", err)
	}
	return err
}

// Server is the infer service's receipt configuration: digests and active
// parameters of the models this peer serves (models), receipts into the
// ledger.
func (a *Accounting) Server(models func() []experts.Model) *infer.ServerReceipts {
	find := func(name string) experts.Model {
		for _, m := range models() {
			if m.Name == name {
				return m
			}
		}
		return experts.Model{}
	}
	return &infer.ServerReceipts{
		Key:          a.Key,
		Digest:       func(model string) string { return find(model).Digest },
		ActiveParams: func(model string) int64 { return find(model).Params },
		Store:        a.store,
	}
}

// paramsPerByte bounds the parameters per byte of a model file (2-bit
// quantization), so 4 × its announced size bounds the parameters a server
// may price a token of it by.
const paramsPerByte = 4

// Client is the call options of requests to other peers: receipts are
// checked, countersigned and stored; the price is bounded by the largest
// size the catalog announces for the model (sizes, nil for none).
func (a *Accounting) Client(sizes func(model string) int64) infer.CallOptions {
	opts := infer.CallOptions{Key: a.Key, Store: a.store, Logger: a.Log}
	if sizes != nil {
		opts.ActiveParams = func(model string) int64 { return paramsPerByte * sizes(model) }
	}
	return opts
}

// Class is the scheduling class of a remote caller: contributors (positive
// balance with us) first, then newcomers within the day's free allowance,
// then everyone else. A ledger error classes the caller as Other.
func (a *Accounting) Class(ctx context.Context, _ inference.Request) inference.Class {
	id, ok := inference.Caller(ctx)
	if !ok {
		return inference.ClassLocal
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	b, err := a.Ledger.Balance(id)
	if err != nil {
		return inference.ClassOther
	}
	served, err := a.Ledger.ServedTokens(id, now().Add(-24*time.Hour))
	if err != nil {
		return inference.ClassOther
	}
	return inference.ClassOf(b.Balance, served, a.FreeAllowance)
}
