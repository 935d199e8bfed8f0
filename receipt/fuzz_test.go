package receipt

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
)

// fuzzKeys are two fixed keys and their peer IDs.
func fuzzKeys(tb testing.TB) (crypto.PrivKey, peer.ID, crypto.PrivKey, peer.ID) {
	key := func(b byte) (crypto.PrivKey, peer.ID) {
		k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{b}, 64)))
		if err != nil {
			tb.Fatal(err)
		}
		id, _ := peer.IDFromPrivateKey(k)
		return k, id
	}
	a, aid := key(1)
	b, bid := key(2)
	return a, aid, b, bid
}

// FuzzUnmarshalSigned decodes signed receipts as they come in a receipt
// frame, a statement or the ledger: a receipt is ErrMalformed or within its
// limits, it encodes to a form that decodes to itself, and checking its
// signatures never panics, whatever its peer IDs hold.
func FuzzUnmarshalSigned(f *testing.F) {
	reqKey, req, srvKey, srv := fuzzKeys(f)
	r := Receipt{
		ID: ID{1, 2, 3}, Requester: req, Server: srv, Model: "llama3.2:1b", Digest: "sha256:abc",
		PromptTokens: 12, CompletionTokens: 34, Start: time.UnixMilli(1_700_000_000_123), TTFT: 1500 * time.Microsecond,
		RequestHash: Sum([]byte("request")), AnswerHash: Sum([]byte("answer")), Cost: Cost(12, 34, 1_200_000_000, false),
	}
	s, err := SignServer(r, srvKey)
	if err != nil {
		f.Fatal(err)
	}
	fuzzcorpus.Add(f, s.Marshal()) // as the server sends it
	if err := s.Countersign(reqKey); err != nil {
		f.Fatal(err)
	}
	fuzzcorpus.Add(f, s.Marshal()) // as both keep it
	fuzzcorpus.Add(f, r.Marshal())
	fuzzcorpus.Add(f, append(s.Marshal(), 0))
	fuzzcorpus.Add(f, make([]byte, MaxSize+1))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := UnmarshalSigned(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("refused with %v, want ErrMalformed", err)
			}
			return
		}
		if len(data) > MaxSize {
			t.Fatalf("accepted %d bytes", len(data))
		}
		if err := s.Receipt.Validate(); err != nil {
			t.Fatalf("accepted an invalid receipt: %v", err)
		}
		back, err := UnmarshalSigned(s.Marshal())
		if err != nil || !reflect.DeepEqual(back, s) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, s, back)
		}
		if r, err := Unmarshal(s.Receipt.Marshal()); err != nil || !reflect.DeepEqual(*r, s.Receipt) {
			t.Fatalf("receipt round trip: %v", err)
		}
		_ = s.VerifyServer()
		_ = s.Verify()
	})
}

// FuzzUnmarshalSignedTally does the same for tallies of expert calls and
// shard uploads.
func FuzzUnmarshalSignedTally(f *testing.F) {
	payerKey, payer, workerKey, worker := fuzzKeys(f)
	for _, tl := range []Tally{
		{ID: ID{4}, Kind: KindExpert, Payer: payer, Worker: worker, Model: "5f1d7c0e8a9b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d",
			Calls: 120, Rows: 480, Flops: ExpertFlops(480*64, 128), Start: time.UnixMilli(1_700_000_000_000), End: time.UnixMilli(1_700_000_012_345)},
		{ID: ID{5}, Kind: KindShard, Payer: payer, Worker: worker, Calls: 3, Bytes: 3 << 30,
			Start: time.UnixMilli(1_700_000_000_000), End: time.UnixMilli(1_700_000_001_000)},
	} {
		tl.Cost = tl.Price()
		s, err := SignPayer(tl, payerKey)
		if err != nil {
			f.Fatal(err)
		}
		fuzzcorpus.Add(f, s.Marshal())
		if err := s.Countersign(workerKey); err != nil {
			f.Fatal(err)
		}
		fuzzcorpus.Add(f, s.Marshal())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := UnmarshalSignedTally(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("refused with %v, want ErrMalformed", err)
			}
			return
		}
		if err := s.Tally.Validate(); err != nil {
			t.Fatalf("accepted an invalid tally: %v", err)
		}
		back, err := UnmarshalSignedTally(s.Marshal())
		if err != nil || !reflect.DeepEqual(back, s) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, s, back)
		}
		_ = s.VerifyPayer()
		_ = s.Verify()
	})
}
