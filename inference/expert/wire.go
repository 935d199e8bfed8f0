package expert

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"unsafe"

	"github.com/mwpeer/mwpeer/inference/tally"
)

const (
	// ID is the libp2p protocol of remote expert calls.
	ID = "/mwpeer/expert/1.0.0"
	// ServiceName is the resource-manager service of its streams. A server
	// reserves each call's rows, in and out, in it before reading them.
	ServiceName = "mwpeer.expert"
)

// Limits of one call, checked by both ends.
const (
	// MaxRows bounds the rows of one call (a forward batch is at most 64
	// tokens; a prompt batch sends each expert only the rows routed to it).
	MaxRows = 1024
	// MaxDim bounds the row length (the model's embedding size).
	MaxDim = 65536
	// MaxPayload bounds the row bytes of one call either way.
	MaxPayload = 32 << 20
	// maxMessage bounds an error message in an answer.
	maxMessage = 1024
)

// headerSize is the request header: magic, model ID, layer, expert, rows, dim.
const headerSize = 4 + 32 + 4 + 4 + 4 + 4

// bufferSize is the size of each of a stream's read and write buffers.
const bufferSize = 64 << 10

var magic = [4]byte{'m', 'w', 'x', '1'}

// Statuses of an answer (RemoteError.Status for all but StatusOK).
const (
	StatusOK       = 0
	StatusNotFound = 1 // the peer does not host this expert
	StatusBad      = 2 // malformed request
	StatusBusy     = 3 // too many calls in progress
	StatusFailed   = 4 // the expert failed
	StatusRefused  = 5 // the host's policy does not serve the caller (consent, membership)
)

// ModelKey is a model ID (64 hex digits, a SHA-256) as 32 bytes.
type ModelKey [32]byte

// ParseModelKey parses a model ID.
func ParseModelKey(id string) (ModelKey, error) {
	var k ModelKey
	b, err := hex.DecodeString(id)
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("model ID %q is not 64 hex digits", trunc(id))
	}
	copy(k[:], b)
	return k, nil
}

func (k ModelKey) String() string { return hex.EncodeToString(k[:]) }

type header struct {
	model         ModelKey
	layer, expert int
	rows, dim     int
}

func (h header) payload() int { return h.rows * h.dim * 4 }

// work is one call as a tally counts it.
func (h header) work() tally.Work {
	return tally.Work{Calls: 1, Rows: uint64(h.rows), Values: uint64(h.rows) * uint64(h.dim)}
}

func (h header) check() error {
	switch {
	case h.layer < 0 || h.layer > math.MaxUint16 || h.expert < 0 || h.expert > math.MaxUint16:
		return fmt.Errorf("layer %d expert %d out of range", h.layer, h.expert)
	case h.rows <= 0 || h.rows > MaxRows:
		return fmt.Errorf("%d rows (1..%d)", h.rows, MaxRows)
	case h.dim <= 0 || h.dim > MaxDim:
		return fmt.Errorf("row length %d (1..%d)", h.dim, MaxDim)
	case h.payload() > MaxPayload:
		return fmt.Errorf("%d bytes of rows (max %d)", h.payload(), MaxPayload)
	}
	return nil
}

func (h header) marshal(b []byte) {
	copy(b, magic[:])
	copy(b[4:], h.model[:])
	binary.LittleEndian.PutUint32(b[36:], uint32(h.layer))
	binary.LittleEndian.PutUint32(b[40:], uint32(h.expert))
	binary.LittleEndian.PutUint32(b[44:], uint32(h.rows))
	binary.LittleEndian.PutUint32(b[48:], uint32(h.dim))
}

// errBad is wrapped by readHeader's errors about the request itself (as
// opposed to the stream).
var errBad = errors.New("bad expert call")

func readHeader(r io.Reader, buf []byte) (header, error) {
	var h header
	if _, err := io.ReadFull(r, buf[:headerSize]); err != nil {
		return h, err
	}
	if [4]byte(buf[:4]) != magic {
		return h, fmt.Errorf("%w: not an expert call", errBad)
	}
	copy(h.model[:], buf[4:36])
	h.layer = int(binary.LittleEndian.Uint32(buf[36:]))
	h.expert = int(binary.LittleEndian.Uint32(buf[40:]))
	h.rows = int(binary.LittleEndian.Uint32(buf[44:]))
	h.dim = int(binary.LittleEndian.Uint32(buf[48:]))
	if err := h.check(); err != nil {
		return h, fmt.Errorf("%w: %w", errBad, err)
	}
	return h, nil
}

// littleEndian is true on the machines where float32 rows can be written and
// read as they are in memory.
var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

// writeRows writes rows as little-endian float32, using buf as scratch.
func writeRows(w io.Writer, rows [][]float32, buf []byte) error {
	for _, r := range rows {
		if littleEndian && len(r) > 0 {
			if _, err := w.Write(unsafe.Slice((*byte)(unsafe.Pointer(&r[0])), 4*len(r))); err != nil {
				return err
			}
			continue
		}
		if len(buf) < 4*len(r) {
			buf = make([]byte, 4*len(r))
		}
		b := buf[:4*len(r)]
		for i, v := range r {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// readRows fills rows (each already of its length) from r.
func readRows(r io.Reader, rows [][]float32, buf []byte) error {
	for _, row := range rows {
		if littleEndian && len(row) > 0 {
			if _, err := io.ReadFull(r, unsafe.Slice((*byte)(unsafe.Pointer(&row[0])), 4*len(row))); err != nil {
				return err
			}
			continue
		}
		if len(buf) < 4*len(row) {
			buf = make([]byte, 4*len(row))
		}
		b := buf[:4*len(row)]
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		for i := range row {
			row[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	}
	return nil
}

// writeStatus writes an answer's status and message.
func writeStatus(w io.Writer, status byte, msg string) error {
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	b := make([]byte, 3+len(msg))
	b[0] = status
	binary.LittleEndian.PutUint16(b[1:], uint16(len(msg)))
	copy(b[3:], msg)
	_, err := w.Write(b)
	return err
}

// readStatus reads an answer's status and message.
func readStatus(r io.Reader) (byte, string, error) {
	var b [3]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, "", err
	}
	n := int(binary.LittleEndian.Uint16(b[1:]))
	if n > maxMessage {
		return 0, "", fmt.Errorf("answer message of %d bytes", n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return 0, "", err
	}
	return b[0], string(msg), nil
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
