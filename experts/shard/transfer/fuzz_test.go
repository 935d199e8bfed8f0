package transfer

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
	"github.com/mwpeer/mwpeer/internal/wire"
)

const fuzzHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func frames(tb testing.TB, max int, vs ...any) []byte {
	var b bytes.Buffer
	for _, v := range vs {
		if err := wire.WriteJSON(&b, v, max); err != nil {
			tb.Fatal(err)
		}
	}
	return b.Bytes()
}

// FuzzRequest reads a fetcher's requests as the server does: each is a
// request, or ErrMalformed or ErrTooLarge (a bad_request) or the end of the
// stream; one the server serves names a valid hash and a range within
// MaxLength, and encodes to a frame it would read again.
func FuzzRequest(f *testing.F) {
	fuzzcorpus.Add(f, frames(f, MaxRequestSize, request{Hash: fuzzHash, Offset: 0, Length: 1 << 20}, request{Hash: fuzzHash, Offset: 1 << 20, Length: 4096}))
	fuzzcorpus.Add(f, frames(f, MaxRequestSize, request{Hash: fuzzHash, Offset: -1, Length: 10}))
	fuzzcorpus.Add(f, frames(f, MaxRequestSize, request{Hash: fuzzHash, Length: MaxLength + 1}))
	fuzzcorpus.Add(f, frames(f, MaxRequestSize, request{Hash: "../../etc/passwd", Length: 10}))
	fuzzcorpus.Add(f, frames(f, 1<<20, request{Hash: string(bytes.Repeat([]byte("a"), 600)), Length: 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := wire.NewReader(bytes.NewReader(data), MaxRequestSize)
		for {
			var req request
			err := wire.ReadJSON(r, &req)
			if err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrTooLarge) {
					return
				}
				return // a broken stream: the server resets it
			}
			if req.check() != nil {
				return // a bad_request ends the stream
			}
			if !shard.ValidHash(req.Hash) || req.Offset < 0 || req.Length <= 0 || req.Length > MaxLength {
				t.Fatalf("would serve %+v", req)
			}
			b := frames(t, MaxRequestSize, req)
			var back request
			if err := wire.ReadJSON(wire.NewReader(bytes.NewReader(b), MaxRequestSize), &back); err != nil || back != req {
				t.Fatalf("round trip: %+v, %v; want %+v", back, err, req)
			}
		}
	})
}

// FuzzHeader reads a server's header as the fetcher does for a request of
// length bytes at offset: an error frame unwraps to its sentinel, and a
// header accepted promises no more than was asked, inside the file.
func FuzzHeader(f *testing.F) {
	fuzzcorpus.Add(f, frames(f, MaxHeaderSize, header{Size: 3 << 20, Length: 1 << 20}), int64(1<<20), int64(1<<20))
	fuzzcorpus.Add(f, frames(f, MaxHeaderSize, header{Size: 100, Length: 0}), int64(100), int64(4096))
	fuzzcorpus.Add(f, frames(f, MaxHeaderSize, header{Error: &errorFrame{Code: CodeNotFound, Message: fuzzHash}}), int64(0), int64(4096))
	fuzzcorpus.Add(f, frames(f, MaxHeaderSize, header{Error: &errorFrame{Code: CodeRefused, Message: "not a member"}}), int64(0), int64(4096))
	fuzzcorpus.Add(f, frames(f, MaxHeaderSize, header{Size: 9223372036854775807, Length: 4096}), int64(9223372036854775000), int64(4096))
	f.Fuzz(func(t *testing.T, data []byte, off, n int64) {
		if off < 0 || n <= 0 || n > MaxLength {
			return // the fetcher asks for no such range
		}
		var hd header
		if err := wire.ReadJSON(wire.NewReader(bytes.NewReader(data), MaxHeaderSize), &hd); err != nil {
			return
		}
		if hd.Error != nil {
			re := codes.Remote("", hd.Error.Code, hd.Error.Message)
			if hd.Error.Code == CodeNotFound && !errors.Is(re, shard.ErrNotFound) || hd.Error.Code == CodeRefused && !errors.Is(re, ErrRefused) {
				t.Fatalf("%s does not unwrap to its sentinel", hd.Error.Code)
			}
			if len(re.Message) > wire.MaxMessage {
				t.Fatalf("message of %d bytes", len(re.Message))
			}
			return
		}
		if err := hd.check(off, n); err != nil {
			return
		}
		if hd.Length < 0 || hd.Length > n || off+hd.Length > hd.Size || off+hd.Length < off {
			t.Fatalf("accepted %+v for %d bytes at %d", hd, n, off)
		}
		if _, err := json.Marshal(hd); err != nil {
			t.Fatal(err)
		}
	})
}
