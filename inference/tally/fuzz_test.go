package tally

import (
	"bytes"
	"errors"
	"testing"

	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
	"github.com/mwpeer/mwpeer/internal/wire"
)

// FuzzAnswer reads a worker's answer to a proposal as the payer does: it
// is ErrMalformed, or one of the three kinds within its size, and encodes
// back to the same frame.
func FuzzAnswer(f *testing.F) {
	fuzzcorpus.Add(f, encodeAnswer(answerCountersign, bytes.Repeat([]byte{0xab}, 64)))
	fuzzcorpus.Add(f, encodeAnswer(answerRefuse, []byte("counted 119 calls, proposal says 120")))
	fuzzcorpus.Add(f, encodeAnswer(answerBusy, nil))
	fuzzcorpus.Add(f, encodeAnswer(answerCountersign, nil))
	fuzzcorpus.Add(f, encodeAnswer(answerRefuse, bytes.Repeat([]byte("x"), MaxReason+1)))
	fuzzcorpus.Add(f, []byte("z"))
	f.Fuzz(func(t *testing.T, frame []byte) {
		kind, body, err := decodeAnswer(frame)
		if err != nil {
			if !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("refused with %v, want ErrMalformed", err)
			}
			return
		}
		switch kind {
		case answerCountersign:
			if len(body) == 0 || len(body) > maxSignature {
				t.Fatalf("signature of %d bytes", len(body))
			}
		case answerRefuse:
			if len(body) > MaxReason {
				t.Fatalf("reason of %d bytes", len(body))
			}
		case answerBusy:
			if len(body) != 0 {
				t.Fatalf("busy with %d bytes", len(body))
			}
		default:
			t.Fatalf("kind %q", kind)
		}
		if len(frame) > MaxAnswer || !bytes.Equal(encodeAnswer(kind, body), frame) {
			t.Fatalf("answer of %d bytes does not encode back to itself", len(frame))
		}
	})
}
