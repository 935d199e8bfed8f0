package infer

import (
	"context"
	"crypto/sha256"
	"encoding/json"
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
	for {
		_ = s.SetReadDeadline(time.Now().Add(StreamIdleTimeout))
		var fr frame
		if err := wire.ReadJSON(r, &fr); err != nil {
			if werr != nil {
				err = werr
			}
			return fail(fmt.Errorf("infer %s: read: %w", p.ShortString(), err))
		}
		switch {
		case fr.Chunk != nil:
			if answer != nil {
				_, _ = io.WriteString(answer, fr.Chunk.Text)
			}
			if err := emit(fr.Chunk.chunk()); err != nil {
				return fail(err)
			}
		case fr.Final != nil:
			f := fr.Final.final()
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
