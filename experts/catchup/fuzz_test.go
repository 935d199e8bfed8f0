package catchup

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
	"github.com/mwpeer/mwpeer/internal/wire"
)

// FuzzReply reads a catch-up reply as Fetch does: it keeps at most a full
// announcement and a beat per peer asked for plus the responder's own, each
// within MaxFrameSize and budgeted before it is kept; a reply cut short is
// an error that keeps what came before; and the envelopes kept are the
// frames that were sent.
func FuzzReply(f *testing.F) {
	reply := func(envs ...[]byte) []byte {
		var b bytes.Buffer
		for _, e := range envs {
			if err := wire.Write(&b, e, MaxFrameSize); err != nil {
				f.Fatal(err)
			}
		}
		return b.Bytes()
	}
	env := bytes.Repeat([]byte{0x0a, 0x24, 0x08, 0x01, 0x12, 0x20}, 40) // the shape of a signed envelope
	fuzzcorpus.Add(f, reply(env, env[:100]), 1)
	fuzzcorpus.Add(f, reply(env, env, env, env, env), 1) // more than promised
	fuzzcorpus.Add(f, reply(), 0)
	fuzzcorpus.Add(f, reply(make([]byte, 2000)), 4)
	fuzzcorpus.Add(f, []byte{0x81, 0x80, 0x02}, 4) // a frame above the cap
	fuzzcorpus.Add(f, reply(env)[:50], 4)          // cut short
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		if max <= 0 || max > 64 {
			max = 4
		}
		kept := 0
		envs, more, err := readEnvelopes(wire.NewReader(bytes.NewReader(data), MaxFrameSize), max, func(n int) error {
			if n > MaxFrameSize {
				t.Fatalf("asked to keep %d bytes, cap %d", n, MaxFrameSize)
			}
			kept += n
			return nil
		})
		if len(envs) > 2*max+2 {
			t.Fatalf("kept %d envelopes for %d peers", len(envs), max)
		}
		if more && (err != nil || len(envs) != 2*max+2) {
			t.Fatalf("more with %d envelopes and %v", len(envs), err)
		}
		if errors.Is(err, io.EOF) {
			t.Fatalf("the end of a reply is not an error: %v", err)
		}
		total := 0
		var again bytes.Buffer
		for _, e := range envs {
			total += len(e)
			_ = wire.Write(&again, e, MaxFrameSize)
		}
		if total != kept {
			t.Fatalf("kept %d bytes, budgeted %d", total, kept)
		}
		back, _, err2 := readEnvelopes(wire.NewReader(&again, MaxFrameSize), max, func(int) error { return nil })
		if err2 != nil || len(back) != len(envs) {
			t.Fatalf("round trip: %d envelopes, %v; want %d", len(back), err2, len(envs))
		}
		for i := range back {
			if !bytes.Equal(back[i], envs[i]) {
				t.Fatalf("envelope %d changed in a round trip", i)
			}
		}
		// A budget that refuses stops at once and keeps nothing more.
		envs, _, err = readEnvelopes(wire.NewReader(bytes.NewReader(data), MaxFrameSize), max, func(int) error { return errors.New("over budget") })
		if len(envs) != 0 {
			t.Fatalf("kept %d envelopes over budget", len(envs))
		}
	})
}

// FuzzRequest reads a catch-up request as the service does: at most
// MaxWanted peers, no request at all asks for everything, and what it
// accepts encodes and decodes to itself.
func FuzzRequest(f *testing.F) {
	req := func(r request) []byte {
		var b bytes.Buffer
		if err := wire.WriteJSON(&b, r, MaxRequestSize); err != nil {
			f.Fatal(err)
		}
		return b.Bytes()
	}
	fuzzcorpus.Add(f, req(request{}))
	fuzzcorpus.Add(f, req(request{Peers: []string{"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo", "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"}}))
	fuzzcorpus.Add(f, req(request{Peers: strings.Split(strings.Repeat("p,", MaxWanted+1), ",")}))
	fuzzcorpus.Add(f, []byte{})
	fuzzcorpus.Add(f, []byte{0x03, '{', '"', 'p'})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := readRequest(bytes.NewReader(data))
		if err != nil {
			if r.Peers != nil {
				t.Fatalf("a refused request names peers: %v", r.Peers)
			}
			return
		}
		if len(r.Peers) > MaxWanted {
			t.Fatalf("accepted %d peers", len(r.Peers))
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back request
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back.Peers, r.Peers) && len(r.Peers)+len(back.Peers) > 0 {
			t.Fatalf("round trip: %v, %v", back, err)
		}
	})
}
