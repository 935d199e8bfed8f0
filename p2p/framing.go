package p2p

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/libp2p/go-msgio"
)

// WriteJSON writes v as one varint-length-prefixed frame. It refuses to
// write a frame larger than max, so a peer never sends what it would itself
// refuse to read.
func WriteJSON(w io.Writer, v any, max int) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	if len(data) > max {
		return fmt.Errorf("frame of %d bytes exceeds the %d-byte cap", len(data), max)
	}
	return msgio.NewVarintWriter(w).WriteMsg(data)
}

// ReadJSON reads one varint-length-prefixed frame of at most max bytes into v.
func ReadJSON(r msgio.Reader, v any) error {
	data, err := r.ReadMsg()
	if err != nil {
		return err
	}
	defer r.ReleaseMsg(data)
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode frame: %w", err)
	}
	return nil
}

// NewReader returns a frame reader that refuses frames above max bytes.
func NewReader(r io.Reader, max int) msgio.Reader {
	return msgio.NewVarintReaderSize(r, max)
}
