package wire

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
)

// ErrMalformed is wrapped by ReadJSON for a frame that is not the JSON it
// should be: the peer's fault, not the stream's.
var ErrMalformed = errors.New("malformed frame")

// ErrTooLarge is returned by a Reader for a frame above its cap, and wrapped
// by Write and WriteJSON for one they refuse to send.
var ErrTooLarge = msgio.ErrMsgTooLarge

// Reader reads frames. NextMsgLen returns a frame's length without checking
// the cap, so a server can refuse or budget it before reading the body;
// ReadMsg returns ErrTooLarge for a frame above the cap.
type Reader = msgio.Reader

// NewReader returns a Reader of frames of at most max bytes.
func NewReader(r io.Reader, max int) Reader { return msgio.NewVarintReaderSize(r, max) }

// Write writes data as one frame. It refuses a frame above max bytes, so a
// peer never sends what it would itself refuse to read.
func Write(w io.Writer, data []byte, max int) error {
	if len(data) > max {
		return fmt.Errorf("frame of %d bytes exceeds the %d-byte cap: %w", len(data), max, ErrTooLarge)
	}
	return msgio.NewVarintWriter(w).WriteMsg(data)
}

// WriteJSON writes v as one JSON frame of at most max bytes.
func WriteJSON(w io.Writer, v any, max int) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	return Write(w, data, max)
}

// ReadJSON reads one frame from r into v. A frame that does not decode is
// an error wrapping ErrMalformed.
func ReadJSON(r Reader, v any) error {
	data, err := r.ReadMsg()
	if err != nil {
		return err
	}
	defer r.ReleaseMsg(data)
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

// MaxMessage bounds the message of a RemoteError, on either side.
const MaxMessage = 1024

// CodeInternal is the code of an error that stands for no sentinel.
const CodeInternal = "internal"

// RemoteError is an error a serving peer reported: its code, which the
// protocol's Codes map to a sentinel, and a message for people.
type RemoteError struct {
	Peer    peer.ID // who reported it (set by the client, never taken from the wire)
	Code    string
	Message string

	sentinel error
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("peer %s: %s: %s", e.Peer.ShortString(), e.Code, e.Message)
}

// Unwrap returns the sentinel Code stands for in the protocol's Codes, or nil.
func (e *RemoteError) Unwrap() error { return e.sentinel }

// Codes maps the error codes of one protocol to the sentinel errors they
// stand for. A code that stands for no sentinel maps to nil.
type Codes map[string]error

// Remote returns the error peer p reported with code and msg (cut to
// MaxMessage bytes).
func (c Codes) Remote(p peer.ID, code, msg string) *RemoteError {
	return &RemoteError{Peer: p, Code: code, Message: Truncate(msg), sentinel: c[code]}
}

// CodeOf returns the code of the sentinel err wraps, or CodeInternal. Codes
// are tried in sorted order, so an error that wraps two sentinels always
// gets the same code.
func (c Codes) CodeOf(err error) string {
	codes := make([]string, 0, len(c))
	for code, s := range c {
		if s != nil {
			codes = append(codes, code)
		}
	}
	slices.Sort(codes)
	for _, code := range codes {
		if errors.Is(err, c[code]) {
			return code
		}
	}
	return CodeInternal
}

// Truncate cuts msg to at most MaxMessage bytes.
func Truncate(msg string) string {
	if len(msg) > MaxMessage {
		return msg[:MaxMessage]
	}
	return msg
}

// Attach puts str in the resource manager's scope of service and, if n > 0,
// reserves n bytes of memory for it at priority prio (see
// network.ReservationPriorityLow and its siblings). The reservation is the
// stream's until it is closed or reset; the resource manager then releases
// it. On error the stream is reset.
//
// A handler calls it first, before it allocates or reads anything, as
// go-libp2p's ping does.
func Attach(str network.Stream, service string, n int, prio uint8) error {
	if err := str.Scope().SetService(service); err != nil {
		str.Reset()
		return fmt.Errorf("attach stream to %s: %w", service, err)
	}
	if n > 0 {
		if err := str.Scope().ReserveMemory(n, prio); err != nil {
			str.Reset()
			return fmt.Errorf("reserve %d bytes for %s: %w", n, service, err)
		}
	}
	return nil
}

// Reserve reserves n more bytes for str at priority prio, until release is
// called (or the stream ends). It is for streams that carry calls of
// different sizes one after the other; the stream is left as it was on error.
func Reserve(str network.Stream, n int, prio uint8) (release func(), err error) {
	if n <= 0 {
		return func() {}, nil
	}
	if err := str.Scope().ReserveMemory(n, prio); err != nil {
		return nil, err
	}
	return func() { str.Scope().ReleaseMemory(n) }, nil
}

// Open opens a stream to p for protocol id and puts it in the scope of
// service.
func Open(ctx context.Context, h host.Host, p peer.ID, id protocol.ID, service string) (network.Stream, error) {
	str, err := h.NewStream(ctx, p, id)
	if err != nil {
		return nil, fmt.Errorf("open %s stream to %s: %w", id, p.ShortString(), err)
	}
	if err := Attach(str, service, 0, 0); err != nil {
		return nil, err
	}
	return str, nil
}

// Default sets *v to def when *v is zero or below: every config field that
// has a default treats a negative value as unset too.
func Default[T cmp.Ordered](v *T, def T) {
	var zero T
	if *v <= zero {
		*v = def
	}
}
