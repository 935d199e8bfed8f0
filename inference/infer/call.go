package infer

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wire"
	"github.com/mwpeer/mwpeer/receipt"
)

// RemoteError is what Call returns for an error frame: it unwraps to the
// sentinel of its code (inference.ErrUnknownModel, ErrBusy, ErrRefused,
// ErrInvalidRequest, context.DeadlineExceeded).
type RemoteError = wire.RemoteError

// Call runs req on peer p over ID, calling emit for each chunk. If ctx ends,
// the stream is reset, which cancels the call on the serving peer. Errors
// reported by the peer are *RemoteError.
//
// Call opens the stream with ctx as it is: a caller that accepts a limited
// (relayed) connection says so with network.WithAllowLimitedConn.
//
// Call takes part in no receipt exchange: it closes the stream after the
// final frame, and a server that keeps receipts stores its receipt unsigned.
func Call(ctx context.Context, h host.Host, p peer.ID, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	return CallWith(ctx, h, p, req, emit, CallOptions{})
}

// CallWith is Call with options. With opts.Key set, it reads the receipt
// that may follow the final frame (waiting at most ReceiptTimeout), checks
// it against what it sent and received, and countersigns it (storing it
// with opts.Store first) or refuses it. A receipt never fails the call: once
// the final frame arrived, CallWith returns it, whatever became of the
// receipt. opts.Key must be h's key.
func CallWith(ctx context.Context, h host.Host, p peer.ID, req inference.Request, emit func(inference.Chunk) error, opts CallOptions) (inference.Final, error) {
	if opts.Key != nil {
		if id, err := peer.IDFromPrivateKey(opts.Key); err != nil || id != h.ID() {
			return inference.Final{}, fmt.Errorf("infer: the receipt key is not the key of host %s", h.ID().ShortString())
		}
	}
	begin := time.Now()
	wr := toWireRequest(req)
	if opts.Credentials != nil {
		c := opts.Credentials(p, req.Model)
		wr.Grant, wr.Cert = c.Grant, c.Cert
	}
	deadline, ok := ctx.Deadline()
	if !req.Deadline.IsZero() && (!ok || req.Deadline.Before(deadline)) {
		deadline, ok = req.Deadline, true
	}
	if ok {
		left := time.Until(deadline)
		if left <= 0 {
			return inference.Final{}, context.DeadlineExceeded
		}
		wr.TimeoutMS = int64(math.Ceil(float64(left) / float64(time.Millisecond)))
	}
	data, err := json.Marshal(wr)
	if err != nil {
		return inference.Final{}, fmt.Errorf("encode request: %w", err)
	}
	if len(data) > MaxRequestSize {
		return inference.Final{}, fmt.Errorf("%w: request of %d bytes exceeds the %d-byte cap", inference.ErrInvalidRequest, len(data), MaxRequestSize)
	}

	if !req.Deadline.IsZero() {
		// The server enforces the deadline; this bounds a server that does not.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, req.Deadline.Add(time.Second))
		defer cancel()
	}
	s, err := wire.Open(ctx, h, p, ID, ServiceName)
	if err != nil {
		return inference.Final{}, err
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	fail := func(err error) (inference.Final, error) {
		s.Reset()
		if ctx.Err() != nil {
			return inference.Final{}, ctx.Err()
		}
		return inference.Final{}, err
	}

	_ = s.SetWriteDeadline(time.Now().Add(StreamIdleTimeout))
	// A write error is not final: the peer may have refused the request
	// with an error frame before reading it all.
	werr := wire.Write(s, data, MaxRequestSize)

	var answer hash.Hash // of the text received, for the receipt
	if opts.Key != nil {
		answer = sha256.New()
	}
	r := wire.NewReader(s, MaxFrameSize)
	lim := answerLimit{tokens: req.MaxTokens, bytes: opts.MaxBytes}
	for {
		_ = s.SetReadDeadline(time.Now().Add(StreamIdleTimeout))
		var fr frame
		n, err := readFrame(r, &fr)
		if err != nil {
			if werr != nil {
				err = werr
			}
			return fail(fmt.Errorf("infer %s: read: %w", p.ShortString(), err))
		}
		if err := lim.add(n, fr.Chunk != nil); err != nil {
			return fail(fmt.Errorf("infer %s: %w", p.ShortString(), err))
		}
		switch {
		case fr.Chunk != nil:
			if lim.over() {
				continue // within the slack: dropped
			}
			if answer != nil {
				_, _ = io.WriteString(answer, fr.Chunk.Text)
			}
			if err := emit(fr.Chunk.chunk()); err != nil {
				return fail(err)
			}
		case fr.Final != nil:
			f := fr.Final.final()
			if lim.over() {
				f.FinishReason, f.CompletionTokens = inference.FinishLength, lim.tokens
			}
			if opts.Key == nil {
				_ = s.Close()
				return f, nil
			}
			e := &expected{
				self: h.ID(), server: p, model: req.Model, final: f,
				request: receipt.Sum(data), begin: begin, elapsed: time.Since(begin),
			}
			copy(e.answer[:], answer.Sum(nil))
			if opts.ActiveParams != nil {
				e.params = opts.ActiveParams(req.Model)
			}
			if opts.Settle != nil {
				// The caller's context ends with the answer; the exchange
				// keeps the stream under its own deadlines.
				stop()
				opts.Settle(func() { opts.settle(s, r, e) })
				return f, nil
			}
			opts.settle(s, r, e)
			return f, nil
		case fr.Error != nil:
			_ = s.Close()
			return inference.Final{}, codes.Remote(p, fr.Error.Code, fr.Error.Message)
		default:
			return fail(fmt.Errorf("infer %s: empty frame", p.ShortString()))
		}
	}
}

// Target is a dispatch target that runs requests on peer p.
func Target(h host.Host, p peer.ID) inference.Target {
	return inference.Target{Name: p.String(), Run: func(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
		return Call(ctx, h, p, req, emit)
	}}
}

// Bounds of an answer on the asking side, whatever the server does.
const (
	// TokenSlack is how many chunks past the request's max_tokens an answer
	// may carry before its final (a backend that sends an empty last chunk,
	// or counts a token as two): they are read and dropped, so the text
	// handed on ends at max_tokens.
	TokenSlack = 8
	// ChunkBytes and MaxAnswerBytes make the default cap on the frames of
	// one answer (CallOptions.MaxBytes): ChunkBytes for each chunk it may
	// hold (a token with 20 top log-probabilities is about 1.2 KiB of
	// JSON), at most MaxAnswerBytes in all.
	ChunkBytes     = 4 << 10
	MaxAnswerBytes = 64 << 20
)

// ErrAnswerTooLong is returned when a server sends more than an answer may
// hold: more chunks than the request's max_tokens (MaxTokens when it set
// none) plus TokenSlack, or more than the byte cap. The call has handed on
// the answer up to max_tokens and reset the stream, which cancels the
// remote work; a dispatch ends the answer there (finish reason "length").
var ErrAnswerTooLong = errors.New("answer longer than asked for")

// answerLimit counts what a server sent against what was asked.
type answerLimit struct {
	tokens int // the request's max_tokens (0: MaxTokens)
	bytes  int // the byte cap (0: ChunkBytes a chunk, at most MaxAnswerBytes)

	chunks int
	read   int
}

// add counts a frame of n bytes, a chunk or not.
func (l *answerLimit) add(n int, chunk bool) error {
	if l.tokens <= 0 {
		l.tokens = MaxTokens
	}
	if l.bytes <= 0 {
		l.bytes = min(MaxAnswerBytes, (l.tokens+TokenSlack)*ChunkBytes)
	}
	l.read += n
	if chunk {
		l.chunks++
	}
	switch {
	case l.chunks > l.tokens+TokenSlack:
		return fmt.Errorf("%w: more than %d chunks for max_tokens %d", ErrAnswerTooLong, l.tokens+TokenSlack, l.tokens)
	case l.read > l.bytes:
		return fmt.Errorf("%w: more than %d bytes", ErrAnswerTooLong, l.bytes)
	}
	return nil
}

// over reports whether the chunks counted went past max_tokens (within the
// slack).
func (l *answerLimit) over() bool { return l.chunks > l.tokens }

// readFrame reads one frame into fr and returns its size.
func readFrame(r wire.Reader, fr *frame) (int, error) {
	data, err := r.ReadMsg()
	if err != nil {
		return 0, err
	}
	defer r.ReleaseMsg(data)
	if err := json.Unmarshal(data, fr); err != nil {
		return 0, fmt.Errorf("%w: %w", wire.ErrMalformed, err)
	}
	return len(data), nil
}
