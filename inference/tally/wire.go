package tally

import (
	"errors"
	"fmt"
	"time"

	"github.com/mwpeer/mwpeer/internal/wire"
	"github.com/mwpeer/mwpeer/receipt"
)

const (
	// ID is the libp2p protocol of settlements.
	ID = "/mwpeer/tally/1.0.0"
	// ServiceName is the resource-manager service of its streams. A worker
	// reserves a proposal and its answer in it before reading.
	ServiceName = "mwpeer.tally"
)

// Limits and timing of the exchange.
const (
	// MaxProposal bounds the proposal frame: one receipt.SignedTally.
	MaxProposal = receipt.MaxTallySize
	// MaxReason bounds the reason of a refusal.
	MaxReason = wire.MaxMessage
	// MaxAnswer bounds the answer frame: a kind byte and a signature or a
	// reason.
	MaxAnswer = 1 + max(maxSignature, MaxReason)
	// maxSignature bounds a worker's signature (Ed25519's are 64 bytes, RSA
	// 4096's 512).
	maxSignature = 1024

	// DefaultTimeout bounds a whole exchange on either side.
	DefaultTimeout = 10 * time.Second
	// DefaultCatchUp is how long a worker waits for its own count to reach
	// the proposal's before it compares them.
	DefaultCatchUp = time.Second
	// MaxClockSkew is how far a proposal's window may end from the worker's
	// clock.
	MaxClockSkew = time.Hour
)

// Answer kinds, the first byte of the answer frame.
const (
	answerCountersign = 'c' // then the worker's signature
	answerRefuse      = 'r' // then the reason, UTF-8
	answerBusy        = 'b' // nothing else: the worker took nothing, propose later
)

// ErrRefused is wrapped by the error of a settlement the worker refused; the
// tally is then disputed. The worker's reason is the error's message.
var ErrRefused = errors.New("tally refused")

// ErrNotProposed is wrapped when the proposal surely did not reach the
// worker's count: no stream could be opened, or the worker was busy. Nothing
// is stored and the work is still owed: the caller counts it again
// (Meter.Add) for the next settlement.
var ErrNotProposed = errors.New("tally not proposed")

// codeRefused is the code of a refusal as a wire.RemoteError.
const codeRefused = "refused"

var codes = wire.Codes{codeRefused: ErrRefused}

// encodeAnswer builds an answer frame.
func encodeAnswer(kind byte, body []byte) []byte {
	out := make([]byte, 0, 1+len(body))
	out = append(out, kind)
	return append(out, body...)
}

// decodeAnswer splits an answer frame.
func decodeAnswer(frame []byte) (kind byte, body []byte, err error) {
	if len(frame) == 0 {
		return 0, nil, fmt.Errorf("%w: empty answer", wire.ErrMalformed)
	}
	switch frame[0] {
	case answerCountersign:
		if len(frame) == 1 || len(frame)-1 > maxSignature {
			return 0, nil, fmt.Errorf("%w: signature of %d bytes", wire.ErrMalformed, len(frame)-1)
		}
	case answerRefuse:
		if len(frame)-1 > MaxReason {
			return 0, nil, fmt.Errorf("%w: reason of %d bytes", wire.ErrMalformed, len(frame)-1)
		}
	case answerBusy:
		if len(frame) != 1 {
			return 0, nil, fmt.Errorf("%w: busy answer of %d bytes", wire.ErrMalformed, len(frame))
		}
	default:
		return 0, nil, fmt.Errorf("%w: answer of kind %q", wire.ErrMalformed, frame[0])
	}
	return frame[0], frame[1:], nil
}
