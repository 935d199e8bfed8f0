package infer

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wire"
	"github.com/mwpeer/mwpeer/receipt"
)

// Timing of the receipt exchange.
const (
	// ReceiptTimeout bounds how long a client waits for the receipt frame
	// after the final one; a server that keeps no receipts closes its side
	// at once instead.
	ReceiptTimeout = 2 * time.Second
	// DefaultAnswerWait is how long a server waits for the requester's
	// countersign or refuse frame (ServerReceipts.Wait).
	DefaultAnswerWait = 5 * time.Second
	// MaxClockSkew is how far a receipt's start may be from when the
	// client began the call before the client refuses it: clocks need not
	// agree, but a statement period must mean something.
	MaxClockSkew = time.Hour
)

// ServerReceipts makes a Service end every successful answer with a receipt
// (see the package comment for the exchange).
type ServerReceipts struct {
	// Key is the serving host's private key; it signs the receipts.
	Key crypto.PrivKey
	// Digest returns the model's digest as this peer announces it ("" or a
	// nil hook: none).
	Digest func(model string) string
	// ActiveParams returns the parameters one token of the model uses (for
	// a Mixture-of-Experts model, the active ones), which price the answer
	// through receipt.Cost. 0 or a nil hook: unknown, priced as 1B.
	ActiveParams func(model string) int64
	// Store keeps every receipt the server issued: with both signatures
	// when the requester countersigned it, with the server's only when it
	// refused, sent a bad signature, or did not answer within Wait. It
	// runs on the handler's goroutine, before Complete.
	Store func(*receipt.Signed) error
	// Wait bounds the wait for the requester's answer (0:
	// DefaultAnswerWait).
	Wait time.Duration
}

// CallOptions turn on receipts for a call made with CallWith.
type CallOptions struct {
	// Key is the calling host's private key. Nil: no receipts, the call is
	// what Call does.
	Key crypto.PrivKey
	// ActiveParams is this peer's view of a model's active parameters: a
	// receipt that costs more than receipt.Cost gives for its tokens at
	// that size (deadline met) is refused. 0 or a nil hook means unknown,
	// and then the cost is not bounded.
	ActiveParams func(model string) int64
	// Store keeps a receipt this peer countersigned, before the signature
	// is sent; an error refuses the receipt instead. Refused receipts are
	// not stored on this side: the server keeps them, unsigned.
	Store func(*receipt.Signed) error
	// Refuse is a test hook: a receipt it returns true for is refused even
	// when it is correct, as a requester that will not pay would.
	Refuse func(*receipt.Receipt) bool
	// Logger hears, at Debug, why a receipt was refused (nil:
	// slog.Default()).
	Logger *slog.Logger
	// Settle, when set, runs the receipt exchange after CallWith has
	// returned the Final, so the answer does not wait for it: it must run
	// the function it is given (in a goroutine its owner waits for on
	// shutdown). Nil: CallWith settles before it returns.
	Settle func(func())
	// Credentials, when set, gives what to present to the serving peer p
	// for model (a consent token, a membership certificate).
	Credentials func(p peer.ID, model string) inference.Credentials
	// MaxBytes caps the frames of the answer (0: ChunkBytes for each chunk
	// the request's max_tokens allows, at most MaxAnswerBytes); beyond it
	// the call ends with ErrAnswerTooLong.
	MaxBytes int
}

// Server side.

// pending is the state of an answer the server may issue a receipt for.
type pending struct {
	caller       peer.ID
	model        string
	final        inference.Final
	start        time.Time
	ttft         time.Duration
	request      receipt.Hash
	answer       receipt.Hash
	missDeadline bool
}

// header is what the handler's watcher read of the client's next frame.
type header struct {
	n   int
	err error
}

// issue signs a receipt for p, sends it, waits (at most Wait) for the
// requester's answer, read as a frame from r once next says one arrived,
// and stores the receipt with or without the requester's signature. It
// returns the receipt stored, or nil if none could be signed.
func (s *Service) issue(str network.Stream, r wire.Reader, next <-chan header, p pending, log *slog.Logger) *receipt.Signed {
	cfg := s.cfg.Receipts
	rc := receipt.Receipt{
		ID:               receipt.NewID(),
		Requester:        p.caller,
		Server:           s.h.ID(),
		Model:            p.model,
		PromptTokens:     count(p.final.PromptTokens),
		CompletionTokens: count(p.final.CompletionTokens),
		// As the binary form keeps them, so that what is stored here is
		// what the requester decodes.
		Start:       time.UnixMilli(p.start.UnixMilli()),
		TTFT:        p.ttft.Truncate(time.Microsecond),
		RequestHash: p.request,
		AnswerHash:  p.answer,
	}
	if cfg.Digest != nil {
		rc.Digest = cfg.Digest(p.model)
	}
	var params int64
	if cfg.ActiveParams != nil {
		params = cfg.ActiveParams(p.model)
	}
	rc.Cost = receipt.Cost(int(rc.PromptTokens), int(rc.CompletionTokens), params, p.missDeadline)
	signed, err := receipt.SignServer(rc, cfg.Key)
	if err != nil {
		log.Warn("infer: sign receipt", "model", p.model, "err", err)
		return nil
	}

	wait := cfg.Wait
	wire.Default(&wait, DefaultAnswerWait)
	_ = str.SetReadDeadline(time.Now().Add(wait))
	_ = str.SetWriteDeadline(time.Now().Add(wait))
	sig, err := func() ([]byte, error) {
		if err := wire.WriteJSON(str, frame{Receipt: signed.Marshal()}, MaxReceiptFrameSize); err != nil {
			return nil, fmt.Errorf("send receipt: %w", err)
		}
		var h header
		select {
		case h = <-next:
		case <-s.ctx.Done():
			str.Reset()
			return nil, errors.New("service closed")
		}
		return s.countersignature(str, r, h)
	}()
	if err == nil {
		err = signed.VerifyRequester(sig)
	}
	if err == nil {
		signed.RequesterSig = sig
		log.Debug("infer: receipt countersigned", "id", signed.ID, "cost", signed.Cost)
	} else {
		log.Debug("infer: receipt not countersigned", "id", signed.ID, "err", err)
	}
	if cfg.Store != nil {
		if err := cfg.Store(signed); err != nil {
			log.Warn("infer: store receipt", "id", signed.ID, "err", err)
		}
	}
	return signed
}

// countersignature reads the requester's answer, whose header h the
// watcher read, and returns its signature (not yet verified).
func (s *Service) countersignature(str network.Stream, r wire.Reader, h header) ([]byte, error) {
	switch {
	case h.err == io.EOF:
		return nil, errors.New("the requester closed its side without answering")
	case h.err != nil:
		return nil, fmt.Errorf("read answer: %w", h.err)
	case h.n > MaxAnswerFrameSize:
		str.Reset()
		return nil, fmt.Errorf("answer of %d bytes exceeds the %d-byte cap", h.n, MaxAnswerFrameSize)
	}
	release, err := wire.Reserve(str, h.n, network.ReservationPriorityMedium)
	if err != nil {
		str.Reset()
		return nil, fmt.Errorf("reserve answer: %w", err)
	}
	defer release()
	var a answer
	if err := wire.ReadJSON(r, &a); err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	switch {
	case len(a.Countersign) > 0:
		return a.Countersign, nil
	case a.Refuse != "":
		return nil, fmt.Errorf("refused: %.*s", MaxRefuseReason, a.Refuse)
	}
	return nil, errors.New("empty answer")
}

// missed reports whether an answer that ended after ended missed the
// request's deadline of timeoutMS milliseconds (0: none). A huge timeoutMS,
// which the client chooses, must not overflow into a missed deadline and
// halve the price.
func missed(timeoutMS int64, ended time.Duration) bool {
	return timeoutMS > 0 && timeoutMS <= int64(ended/time.Millisecond) && ended > time.Duration(timeoutMS)*time.Millisecond
}

// count is n as a receipt holds it.
func count(n int) uint32 {
	return uint32(min(max(n, 0), 1<<32-1))
}

// Client side.

// expected is what a client saw of a call, which its receipt must match.
type expected struct {
	self, server peer.ID
	model        string
	final        inference.Final
	request      receipt.Hash // of the request frame it sent
	answer       receipt.Hash // of the text it received
	begin        time.Time    // before the stream was opened
	elapsed      time.Duration
	params       int64 // active parameters of model (0: unknown)
}

// check says why r does not match what the client saw, or nil. It does not
// check signatures.
func (e *expected) check(r *receipt.Receipt) error {
	switch {
	case r.Requester != e.self:
		return fmt.Errorf("receipt for requester %s", r.Requester.ShortString())
	case r.Server != e.server:
		return fmt.Errorf("receipt from server %s", r.Server.ShortString())
	case r.Model != e.model:
		return fmt.Errorf("receipt for model %.64q", r.Model)
	case int64(r.PromptTokens) != int64(e.final.PromptTokens):
		return fmt.Errorf("receipt counts %d prompt tokens, the final %d", r.PromptTokens, e.final.PromptTokens)
	case int64(r.CompletionTokens) != int64(e.final.CompletionTokens):
		return fmt.Errorf("receipt counts %d completion tokens, the final %d", r.CompletionTokens, e.final.CompletionTokens)
	case r.RequestHash != e.request:
		return errors.New("receipt hashes another request")
	case r.AnswerHash != e.answer:
		return errors.New("receipt hashes another answer")
	case r.TTFT > e.elapsed:
		return fmt.Errorf("receipt's time to first token %v exceeds the whole call's %v", r.TTFT, e.elapsed)
	case r.Start.Sub(e.begin).Abs() > MaxClockSkew:
		return fmt.Errorf("receipt starts at %s, the call at %s", r.Start.UTC().Format(time.RFC3339), e.begin.UTC().Format(time.RFC3339))
	}
	if e.params > 0 {
		if most := receipt.Cost(e.final.PromptTokens, e.final.CompletionTokens, e.params, false); r.Cost > most {
			return fmt.Errorf("receipt costs %d, at most %d for these tokens", r.Cost, most)
		}
	}
	return nil
}

// settle reads the receipt that may follow a final on s, checks it against
// e, and countersigns or refuses it. Whatever happens, the stream is done
// with when it returns.
func (o *CallOptions) settle(s network.Stream, r wire.Reader, e *expected) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("peer", e.server.ShortString())
	_ = s.SetReadDeadline(time.Now().Add(ReceiptTimeout))
	n, err := r.NextMsgLen()
	switch {
	case err == io.EOF:
		_ = s.Close() // the server keeps no receipts
		return
	case err != nil:
		log.Debug("infer: no receipt", "err", err)
		s.Reset()
		return
	case n > MaxReceiptFrameSize:
		log.Debug("infer: receipt refused", "err", fmt.Sprintf("frame of %d bytes exceeds the %d-byte cap", n, MaxReceiptFrameSize))
		s.Reset()
		return
	}
	var fr frame
	if err := wire.ReadJSON(r, &fr); err != nil {
		log.Debug("infer: receipt refused", "err", err)
		s.Reset()
		return
	}
	sig, err := o.countersign(fr, e)
	a := answer{Countersign: sig}
	if err != nil {
		log.Debug("infer: receipt refused", "err", err)
		a = answer{Refuse: truncate(err.Error(), MaxRefuseReason)}
	}
	_ = s.SetWriteDeadline(time.Now().Add(ReceiptTimeout))
	if err := wire.WriteJSON(s, a, MaxAnswerFrameSize); err != nil {
		log.Debug("infer: send receipt answer", "err", err)
		s.Reset()
		return
	}
	_ = s.Close()
}

// countersign returns this peer's signature of the receipt in fr, having
// stored the receipt, or why it refuses it.
func (o *CallOptions) countersign(fr frame, e *expected) ([]byte, error) {
	if len(fr.Receipt) == 0 {
		return nil, errors.New("expected a receipt frame")
	}
	sr, err := receipt.UnmarshalSigned(fr.Receipt)
	if err != nil {
		return nil, err
	}
	if len(sr.RequesterSig) != 0 {
		return nil, errors.New("receipt already carries a requester signature")
	}
	if err := e.check(&sr.Receipt); err != nil {
		return nil, err
	}
	if o.Refuse != nil && o.Refuse(&sr.Receipt) {
		return nil, errors.New("declined")
	}
	if !countersigned.Add(sr.ID) {
		return nil, fmt.Errorf("receipt %s was countersigned already", sr.ID)
	}
	if err := sr.Countersign(o.Key); err != nil { // checks the server's signature first
		countersigned.Forget(sr.ID)
		return nil, err
	}
	if o.Store != nil {
		if err := o.Store(sr); err != nil {
			return nil, fmt.Errorf("cannot store the receipt: %w", err)
		}
	}
	return sr.RequesterSig, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// RecentReceipts is how many receipt IDs a process remembers having
// countersigned, to refuse a server that sends one again.
const RecentReceipts = 1 << 14

// countersigned holds the IDs of the receipts this process countersigned
// most recently.
var countersigned = receipt.NewRecent(RecentReceipts)
