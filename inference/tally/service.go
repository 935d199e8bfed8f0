package tally

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/internal/wire"
	"github.com/mwpeer/mwpeer/receipt"
)

// ServiceConfig is the worker's side of settlements: what it counted, and
// where what it settles goes.
type ServiceConfig struct {
	// Key is the host's private key; it countersigns. Required.
	Key crypto.PrivKey
	// Experts holds the expert calls this peer answered, by caller and
	// model ID (expert.Server.Meter); nil refuses expert tallies.
	Experts *Meter
	// FeedForward returns the hidden size of the experts of a model this
	// peer hosts, which turns counted values into flops (0: not hosted
	// here; the tally is refused).
	FeedForward func(model string) int
	// Shards holds the shard bytes this peer sent, by requester, model ""
	// (transfer.Server.Meter); nil refuses shard tallies.
	Shards *Meter
	// Store keeps every tally this peer settles: countersigned, before the
	// signature is sent (an error refuses the tally instead), or with the
	// payer's signature only when the counts disagree. It runs on the
	// stream's goroutine.
	Store func(*receipt.SignedTally) error
	// CatchUp bounds the wait for this peer's own count to reach the
	// proposal's (0: DefaultCatchUp); Timeout bounds the whole exchange
	// (0: DefaultTimeout).
	CatchUp, Timeout time.Duration
	// MaxStreams bounds settlements served at once (0: 64); more are
	// refused at once.
	MaxStreams int
	Log        *slog.Logger
}

// Service settles tallies proposed to this peer: the protocol's service,
// registered on a host by NewService.
type Service struct {
	h      host.Host
	cfg    ServiceConfig
	slots  chan struct{}
	recent *receipt.Recent

	ctx    context.Context // ends when the Service closes
	cancel context.CancelFunc

	streams wire.Streams
}

// RecentTallies is how many tally IDs a Service remembers having settled,
// to refuse a proposal sent again.
const RecentTallies = 1 << 14

// NewService registers the handler of ID on h.
func NewService(h host.Host, cfg ServiceConfig) *Service {
	wire.Default(&cfg.CatchUp, DefaultCatchUp)
	wire.Default(&cfg.Timeout, DefaultTimeout)
	wire.Default(&cfg.MaxStreams, 64)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Service{h: h, cfg: cfg, slots: make(chan struct{}, cfg.MaxStreams), recent: receipt.NewRecent(RecentTallies)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	h.SetStreamHandler(ID, s.handle)
	return s
}

// Close removes the handler, resets the streams being served and waits for
// their handlers to return.
func (s *Service) Close() error {
	s.h.RemoveStreamHandler(ID)
	s.cancel()
	s.streams.Close()
	return nil
}

// handle reads one proposal, judges it and answers. The stream joins the
// ServiceName scope and reserves the proposal and the answer first.
func (s *Service) handle(str network.Stream) {
	if !s.streams.Track(str) {
		str.Reset()
		return
	}
	defer s.streams.Untrack(str)
	payer := str.Conn().RemotePeer()
	log := s.cfg.Log.With("peer", payer.ShortString())
	if err := wire.Attach(str, ServiceName, MaxProposal+MaxAnswer, network.ReservationPriorityLow); err != nil {
		log.Debug("tally stream refused", "err", err)
		return
	}
	str.SetDeadline(time.Now().Add(s.cfg.Timeout))
	answer := func(kind byte, body []byte) {
		if err := wire.Write(str, encodeAnswer(kind, body), MaxAnswer); err != nil {
			str.Reset()
			return
		}
		str.Close()
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		answer(answerBusy, nil)
		return
	}
	r := wire.NewReader(str, MaxProposal)
	data, err := r.ReadMsg()
	if err != nil {
		log.Debug("tally proposal not read", "err", err)
		str.Reset()
		return
	}
	st, err := receipt.UnmarshalSignedTally(data)
	r.ReleaseMsg(data)
	if err != nil {
		answer(answerRefuse, []byte(wire.Truncate(err.Error())))
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
	defer cancel()
	sig, reason := s.judge(ctx, payer, st)
	if sig == nil {
		log.Debug("tally refused", "kind", st.Kind, "model", st.Model, "reason", reason)
		answer(answerRefuse, []byte(wire.Truncate(reason)))
		return
	}
	log.Debug("tally settled", "kind", st.Kind, "model", st.Model, "calls", st.Calls, "cost", st.Cost)
	answer(answerCountersign, sig)
}

// judge checks a proposal from payer against this peer's own count and
// returns the worker's signature, or why it refuses. A proposal that stands
// for real work but disagrees with the count is stored, disputed.
func (s *Service) judge(ctx context.Context, payer peer.ID, st *receipt.SignedTally) (sig []byte, reason string) {
	st.WorkerSig = nil
	self := s.h.ID()
	switch {
	case st.Payer != payer:
		return nil, fmt.Sprintf("proposed by %s for payer %s", payer, st.Payer)
	case st.Worker != self:
		return nil, fmt.Sprintf("proposed to %s for worker %s", self, st.Worker)
	}
	if err := st.VerifyPayer(); err != nil {
		return nil, err.Error()
	}
	if d := time.Since(st.End); d > MaxClockSkew || d < -MaxClockSkew {
		return nil, fmt.Sprintf("window ends %s, %s from this peer's clock", st.End.UTC().Format(time.RFC3339), d.Round(time.Second))
	}
	var meter *Meter
	var want Work
	switch st.Kind {
	case receipt.KindExpert:
		meter, want = s.cfg.Experts, Work{Calls: st.Calls, Rows: st.Rows}
	case receipt.KindShard:
		meter, want = s.cfg.Shards, Work{Calls: st.Calls, Bytes: st.Bytes}
	}
	if meter == nil {
		return nil, fmt.Sprintf("no %s work counted here", st.Kind)
	}
	ff := 0
	if st.Kind == receipt.KindExpert {
		if s.cfg.FeedForward != nil {
			ff = s.cfg.FeedForward(st.Model)
		}
		if ff <= 0 {
			return nil, fmt.Sprintf("model %s is not hosted here", st.Model)
		}
	}
	if !s.recent.Add(st.ID) {
		return nil, fmt.Sprintf("tally %s settled already", st.ID)
	}
	// The payer counts a call when it has read the answer, this peer once
	// it has sent it: give its count a moment to catch up.
	wctx, cancel := context.WithTimeout(ctx, s.cfg.CatchUp)
	meter.Wait(wctx, payer, st.Model, want)
	cancel()
	have, _, ok := meter.Take(payer, st.Model)
	if !ok {
		return nil, fmt.Sprintf("no %s work of yours counted here since the last settlement", st.Kind)
	}
	mine := receipt.Tally{Kind: st.Kind, Calls: have.Calls, Rows: have.Rows, Bytes: have.Bytes}
	if st.Kind == receipt.KindExpert {
		mine.Flops = receipt.ExpertFlops(have.Values, ff)
	}
	if mine.Calls != st.Calls || mine.Rows != st.Rows || mine.Flops != st.Flops || mine.Bytes != st.Bytes {
		reason := fmt.Sprintf("counts disagree: proposed %s, counted here %s", counts(&st.Tally), counts(&mine))
		s.store(st, "disputed")
		return nil, reason
	}
	if err := st.Countersign(s.cfg.Key); err != nil {
		return nil, "cannot countersign: " + err.Error()
	}
	if err := s.store(st, "countersigned"); err != nil {
		return nil, "not stored: " + err.Error()
	}
	return bytes.Clone(st.WorkerSig), ""
}

func (s *Service) store(st *receipt.SignedTally, what string) error {
	if s.cfg.Store == nil {
		return nil
	}
	err := s.cfg.Store(st)
	if err != nil {
		s.cfg.Log.Warn("tally not stored", "id", st.ID.String(), "state", what, "err", err)
	}
	return err
}

// counts describes a tally's counts for a refusal.
func counts(t *receipt.Tally) string {
	if t.Kind == receipt.KindShard {
		return fmt.Sprintf("%d calls, %d bytes", t.Calls, t.Bytes)
	}
	return fmt.Sprintf("%d calls, %d rows, %d flops", t.Calls, t.Rows, t.Flops)
}
