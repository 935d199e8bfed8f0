package ledger

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/infer"
	"github.com/mwpeer/mwpeer/internal/lifecycle"
	"github.com/mwpeer/mwpeer/receipt"
)

// Accounting ties a ledger to a peer's two paths: the receipts its infer
// service signs for the work it serves and those it countersigns for the
// work it asks of others (and the tallies of expert calls and shard bytes,
// StoreTally), and the class of a remote caller when serving slots are
// scarce (contributors first; see inference.Prioritized).
type Accounting struct {
	Ledger *Ledger
	// Exchanges, when set, runs receipt exchanges after the answers they
	// record have been returned (see infer.CallOptions.Settle).
	Exchanges *lifecycle.Tasks
	// Writer, when set, stores receipts and tallies off the request path;
	// otherwise each is stored before the call it records returns.
	Writer *Writer
	Self   peer.ID
	Key    crypto.PrivKey // the host's key
	// FreeAllowance is the tokens a day a peer without credit with us is
	// served as a newcomer, so a new swarm can start.
	FreeAllowance int64
	Log           *slog.Logger
	Now           func() time.Time // nil: time.Now
	// Credentials, when set, is what this peer presents to the peers it
	// asks (infer.CallOptions.Credentials: its membership certificate).
	Credentials func(p peer.ID, model string) inference.Credentials

	// Chain, when set, is the audit chain that Served, Call, StoreTally and
	// Audit append to: through the Writer when it is set (never waiting),
	// otherwise directly.
	Chain *Chain
	// AuditPrompts keeps the request and the answer text in audit entries,
	// not only their hashes. Set it before the Accounting is used.
	AuditPrompts bool
}

// OpenAccounting opens the ledger in dataDir for the peer self (whose key
// is key) with an async Writer and a Tasks for receipt exchanges; Close
// undoes it.
func OpenAccounting(dataDir string, self peer.ID, key crypto.PrivKey, allowance int64, log *slog.Logger) (*Accounting, error) {
	l, err := Open(filepath.Join(dataDir, File))
	if err != nil {
		return nil, err
	}
	chain, err := NewChain(l, key)
	if err != nil {
		l.Close()
		return nil, err
	}
	return &Accounting{Ledger: l, Exchanges: &lifecycle.Tasks{}, Writer: NewAuditWriter(l, self, chain, log),
		Self: self, Key: key, FreeAllowance: allowance, Log: log, Chain: chain}, nil
}

// Close waits for receipt exchanges, commits what the Writer holds, and
// closes the ledger.
func (a *Accounting) Close() error {
	if a.Exchanges != nil {
		a.Exchanges.Close()
	}
	if a.Writer != nil {
		a.Writer.Close()
	}
	return a.Ledger.Close()
}

// Call is infer.CallWith with this peer's receipt options: the client side
// of every request to another peer.
func (a *Accounting) Call(sizes func(model string) int64) func(ctx context.Context, h host.Host, p peer.ID, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	return func(ctx context.Context, h host.Host, p peer.ID, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
		opts := a.Client(sizes)
		if a.Exchanges != nil {
			opts.Settle = a.Exchanges.Go
		}
		if a.Chain == nil {
			return infer.CallWith(ctx, h, p, req, emit, opts)
		}
		answer := sha256.New()
		var text strings.Builder
		f, err := infer.CallWith(ctx, h, p, req, func(c inference.Chunk) error {
			_, _ = io.WriteString(answer, c.Text)
			if a.AuditPrompts {
				text.WriteString(c.Text)
			}
			return emit(c)
		}, opts)
		e := AuditEntry{Kind: AuditRequested, Peer: p, Model: req.Model, Tokens: int64(f.PromptTokens) + int64(f.CompletionTokens),
			Outcome: outcomeOf(err)}
		var raw []byte
		e.RequestHash, raw = RequestHash(req)
		copy(e.AnswerHash[:], answer.Sum(nil))
		if a.AuditPrompts {
			e.Prompt, e.HasPrompt, e.Answer, e.HasAnswer = string(raw), true, text.String(), true
		}
		a.Audit(e)
		return f, err
	}
}

// outcomeOf is the outcome of a call to another peer as the audit chain
// records it: ok, or the error code the error stands for.
func outcomeOf(err error) string {
	switch {
	case err == nil:
		return infer.OutcomeOK
	case errors.Is(err, context.Canceled):
		return infer.OutcomeCancelled
	case errors.Is(err, context.DeadlineExceeded):
		return infer.CodeTimeout
	case errors.Is(err, inference.ErrConsentRefused):
		return infer.CodeConsent
	case errors.Is(err, inference.ErrQuotaExceeded):
		return infer.CodeQuota
	case errors.Is(err, inference.ErrRefused):
		return infer.CodeRefused
	case errors.Is(err, inference.ErrBusy):
		return infer.CodeBusy
	case errors.Is(err, inference.ErrUnknownModel):
		return infer.CodeUnknownModel
	case errors.Is(err, inference.ErrInvalidRequest):
		return infer.CodeInvalidRequest
	}
	return "error"
}

// Audit appends e to the audit chain: the hook for what other parts of the
// peer must record (a refusal by the consent policy: Kind AuditRefused,
// Peer the caller, Model, Outcome the error code). It never blocks on the
// disk and never fails the caller: with a Writer the entry is handed over
// (see Writer.Audit); without one it is appended at once and an error is
// logged. Without a Chain it does nothing.
func (a *Accounting) Audit(e AuditEntry) {
	switch {
	case a.Chain == nil:
	case a.Writer != nil:
		a.Writer.Audit(e)
	default:
		if err := a.Chain.Append(e); err != nil && a.Log != nil {
			a.Log.Warn("audit entry not stored", "kind", e.Kind, "err", err)
		}
	}
}

// Served wraps the infer service's completion hook (next, which may be
// nil): every call served is appended to the audit chain, as AuditServed
// with its outcome, or as AuditRefused when this peer refused it by policy
// (refused, consent_refused, quota_exceeded). Calls refused as busy or
// invalid are not: they are neither served nor a decision about the caller,
// and any stranger could fill the chain with them.
func (a *Accounting) Served(next func(ctx context.Context, c infer.Completion)) func(ctx context.Context, c infer.Completion) {
	return func(ctx context.Context, c infer.Completion) {
		kind := AuditServed
		switch c.Outcome {
		case infer.CodeBusy, infer.CodeInvalidRequest:
			kind = ""
		case infer.CodeRefused, infer.CodeConsent, infer.CodeQuota:
			kind = AuditRefused
		}
		if kind != "" && a.Chain != nil {
			e := AuditEntry{Kind: kind, Peer: c.Caller, Model: c.Model, Tokens: int64(c.PromptTokens) + int64(c.CompletionTokens),
				Outcome: c.Outcome, AnswerHash: c.AnswerHash}
			var raw []byte
			e.RequestHash, raw = RequestHash(c.Request)
			if a.AuditPrompts {
				e.Prompt, e.HasPrompt = string(raw), true
				if kind == AuditServed {
					e.Answer, e.HasAnswer = c.Answer, true
				}
			}
			a.Audit(e)
		}
		if next != nil {
			next(ctx, c)
		}
	}
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

// StoreTally stores a tally this peer settled, as payer or worker: the
// Store hook of the tally protocol (tally.Payer.Store,
// tally.ServiceConfig.Store), which verifies the signatures before it
// stores. Off the request path when a Writer is set.
//
// Each tally stored is appended to the audit chain too: Peer the other
// party, Tokens its expert calls or shard bytes, Outcome its kind and
// whether this peer did the work ("expert/worked", "shard/paid"),
// RequestHash receipt.Sum of its content.
func (a *Accounting) StoreTally(st *receipt.SignedTally) error {
	var err error
	if a.Writer != nil {
		err = a.Writer.QueueTally(st)
	} else if _, err = a.Ledger.PutTally(a.Self, st); err != nil && a.Log != nil {
		a.Log.Warn("tally not stored", "id", tallyID(st), "err", err)
	}
	if err == nil && st != nil && a.Chain != nil {
		e := AuditEntry{Kind: AuditTally, Peer: st.Worker, Model: st.Model, Tokens: int64(min(st.Calls, MaxCost)),
			Outcome: st.Kind.String() + "/paid", RequestHash: receipt.Sum(st.Tally.Marshal())}
		if st.Worker == a.Self {
			e.Peer, e.Outcome = st.Payer, st.Kind.String()+"/worked"
		}
		if st.Kind == receipt.KindShard {
			e.Tokens = int64(min(st.Bytes, MaxCost))
		}
		a.Audit(e)
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
	opts := infer.CallOptions{Key: a.Key, Store: a.store, Logger: a.Log, Credentials: a.Credentials}
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
