package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
)

// FuzzReader reads length-prefixed frames from bytes a stranger sent: no
// frame is longer than the cap, a longer one is ErrTooLarge before any of
// it is read, and the frames read encode and decode back to themselves.
func FuzzReader(f *testing.F) {
	frames := func(max int, msgs ...[]byte) []byte {
		var b bytes.Buffer
		for _, m := range msgs {
			if err := Write(&b, m, max); err != nil {
				f.Fatal(err)
			}
		}
		return b.Bytes()
	}
	fuzzcorpus.Add(f, frames(64, []byte(`{"a":"b"}`), []byte(`{}`)), 64)
	fuzzcorpus.Add(f, frames(8, []byte("12345678")), 8)
	fuzzcorpus.Add(f, frames(300, bytes.Repeat([]byte("x"), 300), nil), 300)
	fuzzcorpus.Add(f, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, 64) // varint overflow
	fuzzcorpus.Add(f, []byte{0x81, 0x00}, 64)                                                 // not minimal
	fuzzcorpus.Add(f, []byte{0x41, 'a'}, 64)                                                  // truncated
	fuzzcorpus.Add(f, []byte{0xff, 0xff, 0xff, 0xff, 0x0f}, 64)                               // 4 GiB claimed
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		if max <= 0 || max > 1<<16 {
			max = 1 << 10
		}
		r := NewReader(bytes.NewReader(data), max)
		var again bytes.Buffer
		var got [][]byte
		for {
			n, nerr := r.NextMsgLen()
			msg, err := r.ReadMsg()
			if err != nil {
				if nerr == nil && n > max && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("frame of %d bytes, cap %d: %v, want ErrTooLarge", n, max, err)
				}
				break
			}
			if len(msg) > max {
				t.Fatalf("read a frame of %d bytes, cap %d", len(msg), max)
			}
			got = append(got, append([]byte(nil), msg...))
			if err := Write(&again, msg, max); err != nil {
				t.Fatalf("write back a frame read: %v", err)
			}
			r.ReleaseMsg(msg)
		}
		// Lengths may come in non-minimal varints, so the frames may
		// re-encode shorter than they came, never longer.
		if again.Len() > len(data) {
			t.Fatalf("frames re-encode to %d bytes, from %d", again.Len(), len(data))
		}
		r2 := NewReader(&again, max)
		for i, want := range got {
			msg, err := r2.ReadMsg()
			if err != nil || !bytes.Equal(msg, want) {
				t.Fatalf("frame %d after a round trip: %q, %v; want %q", i, msg, err, want)
			}
		}
		if _, err := r2.ReadMsg(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the frames: %v, want EOF", err)
		}
	})
}

// FuzzReadJSON decodes a JSON frame: a frame that is not the JSON it
// should be is ErrMalformed, never a panic.
func FuzzReadJSON(f *testing.F) {
	var b bytes.Buffer
	_ = WriteJSON(&b, map[string]any{"code": "busy", "message": "too many streams"}, 1024)
	fuzzcorpus.Add(f, b.Bytes())
	fuzzcorpus.Add(f, []byte{0x02, '{', '}'})
	fuzzcorpus.Add(f, []byte{0x02, '{', '"'})
	fuzzcorpus.Add(f, []byte{0x04, 'n', 'u', 'l', 'l'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var v struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		r := NewReader(bytes.NewReader(data), 1024)
		n, nerr := r.NextMsgLen()
		err := ReadJSON(r, &v)
		if err == nil || nerr != nil || n > 1024 || len(data) < n+len(binary.AppendUvarint(nil, uint64(n))) {
			return
		}
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("a whole frame that does not decode: %v, want ErrMalformed", err)
		}
	})
}
