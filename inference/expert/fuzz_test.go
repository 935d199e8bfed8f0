package expert

import (
	"bytes"
	"errors"
	"io"
	"math"
	"testing"

	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
)

// FuzzHeader reads an expert call's header and rows as the server does: a
// header is within every limit or errBad (or a short read), its rows are
// exactly its payload, and it encodes back to the bytes it came from.
func FuzzHeader(f *testing.F) {
	call := func(h header, rows [][]float32) []byte {
		b := make([]byte, headerSize)
		h.marshal(b)
		var buf bytes.Buffer
		buf.Write(b)
		if err := writeRows(&buf, rows, nil); err != nil {
			f.Fatal(err)
		}
		return buf.Bytes()
	}
	key, _ := ParseModelKey("a3f1c0de00000000000000000000000000000000000000000000000000000001")
	fuzzcorpus.Add(f, call(header{model: key, layer: 1, expert: 3, rows: 2, dim: 4}, [][]float32{{1, 2, 3, 4}, {-1, 0.5, float32(math.Inf(1)), 0}}))
	fuzzcorpus.Add(f, call(header{model: key, layer: 0, expert: 0, rows: 1, dim: 1}, [][]float32{{float32(math.NaN())}}))
	fuzzcorpus.Add(f, call(header{model: key, layer: 65536, expert: 0, rows: 1, dim: 1}, nil))
	fuzzcorpus.Add(f, call(header{model: key, layer: 2, expert: 1, rows: MaxRows, dim: MaxDim}, nil))
	fuzzcorpus.Add(f, call(header{model: key, layer: 2, expert: 1, rows: -1, dim: 8}, nil))
	fuzzcorpus.Add(f, []byte("mwx0"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		buf := make([]byte, headerSize)
		h, err := readHeader(r, buf)
		if err != nil {
			if !errors.Is(err, errBad) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("header: %v, want errBad or a short read", err)
			}
			if errors.Is(err, errBad) && len(data) < headerSize {
				t.Fatalf("errBad from %d bytes", len(data))
			}
			return
		}
		if h.check() != nil || h.rows <= 0 || h.rows > MaxRows || h.dim <= 0 || h.dim > MaxDim || h.payload() > MaxPayload || h.payload() <= 0 {
			t.Fatalf("accepted header %+v", h)
		}
		if w := h.work(); w.Rows != uint64(h.rows) || w.Values != uint64(h.rows*h.dim) {
			t.Fatalf("work %+v of header %+v", w, h)
		}
		again := make([]byte, headerSize)
		h.marshal(again)
		if !bytes.Equal(again, data[:headerSize]) {
			t.Fatalf("header re-encodes to %x, came as %x", again, data[:headerSize])
		}
		// The server reads the rows only when they all came; a test input
		// stands for a stream, so cap what it would allocate.
		if h.payload() > len(data)-headerSize {
			return
		}
		rows := make([][]float32, h.rows)
		for i := range rows {
			rows[i] = make([]float32, h.dim)
		}
		if err := readRows(r, rows, nil); err != nil {
			t.Fatalf("rows of %d bytes from %d: %v", h.payload(), len(data)-headerSize, err)
		}
		var out bytes.Buffer
		if err := writeRows(&out, rows, nil); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data[headerSize:headerSize+h.payload()]) {
			t.Fatal("rows re-encode to other bytes")
		}
	})
}

// FuzzStatus reads an answer's status and message as the client does: a
// message is at most maxMessage bytes, and what is read writes back the
// same.
func FuzzStatus(f *testing.F) {
	for _, c := range []struct {
		status byte
		msg    string
	}{{StatusOK, ""}, {StatusNotFound, "expert 1/3 of a3f1 not hosted"}, {StatusBusy, "busy"}, {StatusRefused, string(bytes.Repeat([]byte("x"), maxMessage))}} {
		var b bytes.Buffer
		if err := writeStatus(&b, c.status, c.msg); err != nil {
			f.Fatal(err)
		}
		fuzzcorpus.Add(f, b.Bytes())
	}
	fuzzcorpus.Add(f, []byte{StatusBad, 0xff, 0xff})
	fuzzcorpus.Add(f, []byte{StatusFailed, 0x05, 0x00, 'a'})
	f.Fuzz(func(t *testing.T, data []byte) {
		status, msg, err := readStatus(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(msg) > maxMessage {
			t.Fatalf("message of %d bytes", len(msg))
		}
		var b bytes.Buffer
		if err := writeStatus(&b, status, msg); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Bytes(), data[:3+len(msg)]) {
			t.Fatalf("status re-encodes to %x, came as %x", b.Bytes(), data[:3+len(msg)])
		}
	})
}
