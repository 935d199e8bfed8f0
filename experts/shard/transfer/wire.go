package transfer

import (
	"errors"
	"fmt"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/internal/wire"
)

const (
	// ID is the protocol ID.
	ID = "/mwpeer/shard/1.0.0"
	// ServiceName is the resource-manager service of its streams.
	ServiceName = "mwpeer.shard"

	MaxRequestSize = 512
	MaxHeaderSize  = 1024
	MaxLength      = 4 << 20 // bytes served per request
)

// Error codes of header frames.
const (
	CodeNotFound   = "not_found" // shard.ErrNotFound
	CodeBadRequest = "bad_request"
	CodeBusy       = "busy"
	CodeRefused    = "refused" // ErrRefused
	CodeInternal   = wire.CodeInternal
)

// codes maps error codes to the sentinels they stand for.
var codes = wire.Codes{CodeNotFound: shard.ErrNotFound, CodeRefused: ErrRefused}

// ErrRefused: the seeding peer's policy does not upload shards to this peer.
var ErrRefused = errors.New("refused by the seeding peer")

// RemoteError is an error frame from a serving peer. A not_found unwraps to
// shard.ErrNotFound.
type RemoteError = wire.RemoteError

// request is a client's frame.
type request struct {
	Hash   string `json:"hash"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
}

// check returns why r is malformed, or nil.
func (r request) check() error {
	switch {
	case !shard.ValidHash(r.Hash):
		return errors.New("hash is not a lowercase hex SHA-256")
	case r.Length <= 0 || r.Length > MaxLength || r.Offset < 0:
		return fmt.Errorf("offset must be non-negative and length within 1..%d", MaxLength)
	}
	return nil
}

// header is the server's frame before the bytes it promises, or instead of
// them (Error set).
type header struct {
	Size   int64       `json:"size,omitempty"`
	Length int64       `json:"length,omitempty"`
	Error  *errorFrame `json:"error,omitempty"`
}

type errorFrame struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// check returns why h, which is no error frame, does not answer a request
// for n bytes at off, or nil.
func (h header) check(off, n int64) error {
	if h.Length < 0 || h.Length > n || h.Size < 0 || off > h.Size || h.Length > h.Size-off {
		return fmt.Errorf("header promises %d bytes at %d of %d, asked %d", h.Length, off, h.Size, n)
	}
	return nil
}
