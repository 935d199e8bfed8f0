package tally

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/mwpeer/mwpeer/internal/wire"
	"github.com/mwpeer/mwpeer/receipt"
)

// Propose sends s, signed by its payer (h's peer), to its worker and returns
// the worker's signature, checked. A refusal is a *wire.RemoteError that
// wraps ErrRefused and carries the worker's reason; an error wrapping
// ErrNotProposed means the worker surely did not take it (no stream, or
// busy). The exchange is a few hundred bytes, so it may go over a limited
// (relayed) connection.
func Propose(ctx context.Context, h host.Host, s *receipt.SignedTally) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	str, err := wire.Open(network.WithAllowLimitedConn(ctx, "tally"), h, s.Worker, ID, ServiceName)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotProposed, err)
	}
	stop := context.AfterFunc(ctx, func() { str.Reset() })
	defer stop()
	dl, _ := ctx.Deadline()
	str.SetDeadline(dl)
	fail := func(err error) ([]byte, error) {
		str.Reset()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("settle with %s: %w", s.Worker.ShortString(), ctx.Err())
		}
		return nil, fmt.Errorf("settle with %s: %w", s.Worker.ShortString(), err)
	}
	if err := wire.Write(str, s.Marshal(), MaxProposal); err != nil {
		return fail(err)
	}
	if err := str.CloseWrite(); err != nil {
		return fail(err)
	}
	r := wire.NewReader(str, MaxAnswer)
	frame, err := r.ReadMsg()
	if err != nil {
		return fail(fmt.Errorf("read answer: %w", err))
	}
	kind, body, err := decodeAnswer(frame)
	if err != nil {
		return fail(err)
	}
	str.Close()
	switch kind {
	case answerRefuse:
		return nil, codes.Remote(s.Worker, codeRefused, string(body))
	case answerBusy:
		return nil, fmt.Errorf("%w: %s is busy", ErrNotProposed, s.Worker.ShortString())
	}
	sig := append([]byte(nil), body...)
	if err := s.VerifyWorker(sig); err != nil {
		return nil, fmt.Errorf("settle with %s: %w", s.Worker.ShortString(), err)
	}
	return sig, nil
}

// Payer settles work this peer asked of others: it signs its own count as
// the payer, proposes it to the worker and stores the outcome. The payer
// proposes because it knows when its work ends (a generation, a fetch), and
// because it then never signs more than it counted itself; the worker
// countersigns only when its own count agrees exactly.
type Payer struct {
	Host host.Host
	// Key is the host's private key; it signs proposals.
	Key crypto.PrivKey
	// Store keeps every tally this peer proposed: countersigned, or with
	// its own signature only (disputed) when the worker refused it,
	// answered wrongly or not at all.
	Store func(*receipt.SignedTally) error
	// Timeout bounds one exchange (0: DefaultTimeout).
	Timeout time.Duration
	Log     *slog.Logger
}

// Settle proposes t to t.Worker, filling in what the payer decides: its ID
// (when zero), Payer (this host), Cost (the rule's) and the window kept to
// the millisecond. It returns the tally as stored, and an error when it is
// disputed (wrapping ErrRefused when the worker refused it) or could not be
// signed or stored; the window is then closed all the same: what the caller
// took from its Meter is not proposed again. The exception is an error
// wrapping ErrNotProposed, returned with a nil tally: nothing was stored and
// the caller counts the work again for the next settlement.
func (p *Payer) Settle(ctx context.Context, t receipt.Tally) (*receipt.SignedTally, error) {
	if t.ID == (receipt.ID{}) {
		t.ID = receipt.NewID()
	}
	t.Payer = p.Host.ID()
	t.Start, t.End = time.UnixMilli(t.Start.UnixMilli()), time.UnixMilli(t.End.UnixMilli())
	t.Cost = t.Price()
	s, err := receipt.SignPayer(t, p.Key)
	if err != nil {
		return nil, fmt.Errorf("settle with %s: %w", t.Worker.ShortString(), err)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	sig, perr := Propose(pctx, p.Host, s)
	cancel()
	if errors.Is(perr, ErrNotProposed) {
		if p.Log != nil {
			p.Log.Debug("tally not proposed", "peer", t.Worker.ShortString(), "kind", t.Kind, "err", perr)
		}
		return nil, perr
	}
	if perr == nil {
		s.WorkerSig = sig
	}
	var serr error
	if p.Store != nil {
		if serr = p.Store(s); serr != nil {
			serr = fmt.Errorf("store tally %s: %w", s.ID, serr)
		}
	}
	if log := p.Log; log != nil {
		if perr != nil {
			log.Debug("tally disputed", "peer", t.Worker.ShortString(), "kind", t.Kind, "calls", t.Calls, "err", perr)
		} else {
			log.Debug("tally settled", "peer", t.Worker.ShortString(), "kind", t.Kind, "calls", t.Calls, "cost", t.Cost)
		}
		if serr != nil {
			log.Warn("tally not stored", "id", s.ID.String(), "err", serr)
		}
	}
	return s, errors.Join(perr, serr)
}
