package receipt

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func key(t *testing.T) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

func sample(req, srv peer.ID) Receipt {
	return Receipt{
		ID: NewID(), Requester: req, Server: srv, Model: "llama3.2:1b", Digest: "sha256:abc",
		PromptTokens: 12, CompletionTokens: 34, Start: time.UnixMilli(1_700_000_000_123), TTFT: 1500 * time.Microsecond,
		RequestHash: Sum([]byte("request")), AnswerHash: Sum([]byte("answer")), Cost: Cost(12, 34, 1_200_000_000, false),
	}
}

func TestReceiptRoundTripsAndBothSignaturesVerify(t *testing.T) {
	sk, srv := key(t)
	rk, req := key(t)
	s, err := SignServer(sample(req, srv), sk)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyServer(); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("before countersigning: %v, want ErrUnsigned", err)
	}
	if err := s.Countersign(rk); err != nil {
		t.Fatal(err)
	}
	data := s.Marshal()
	got, err := UnmarshalSigned(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(); err != nil {
		t.Fatalf("a third party cannot verify: %v", err)
	}
	if got.Receipt != s.Receipt || !bytes.Equal(got.Marshal(), data) {
		t.Fatalf("round trip changed the receipt:\n%+v\n%+v", got.Receipt, s.Receipt)
	}
	t.Logf("signed receipt: %d bytes", len(data))
}

func TestForgedReceiptsAreRejected(t *testing.T) {
	sk, srv := key(t)
	rk, req := key(t)
	other, _ := key(t)
	good, err := SignServer(sample(req, srv), sk)
	if err != nil {
		t.Fatal(err)
	}
	if err := good.Countersign(rk); err != nil {
		t.Fatal(err)
	}
	if _, err := SignServer(sample(req, srv), other); err == nil {
		t.Fatal("a key signed for another server")
	}
	if err := good.Countersign(other); err == nil {
		t.Fatal("a key countersigned for another requester")
	}
	cases := map[string]func(s *Signed){
		"altered completion tokens": func(s *Signed) { s.CompletionTokens++ },
		"altered cost":              func(s *Signed) { s.Cost *= 2 },
		"other answer hash":         func(s *Signed) { s.AnswerHash = Sum([]byte("another answer")) },
		"server signature swapped":  func(s *Signed) { s.ServerSig, s.RequesterSig = s.RequesterSig, s.ServerSig },
		"signature by another key": func(s *Signed) {
			sig, _ := other.Sign(signed(serverDomain, s.Receipt.Marshal()))
			s.ServerSig = sig
		},
	}
	for name, alter := range cases {
		s := *good
		s.ServerSig, s.RequesterSig = bytes.Clone(good.ServerSig), bytes.Clone(good.RequesterSig)
		alter(&s)
		if err := s.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
	}
}

func TestMalformedReceiptsAreErrorsNotPanics(t *testing.T) {
	sk, srv := key(t)
	_, req := key(t)
	s, err := SignServer(sample(req, srv), sk)
	if err != nil {
		t.Fatal(err)
	}
	data := s.Marshal()
	for i := range data {
		if _, err := UnmarshalSigned(data[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
	if _, err := UnmarshalSigned(append(bytes.Clone(data), 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, err := UnmarshalSigned(make([]byte, MaxSize+1)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized: %v", err)
	}
}

func TestCost(t *testing.T) {
	cases := []struct {
		prompt, completion int
		params             int64
		late               bool
		want               uint64
	}{
		{1000, 0, 1e9, false, Micro},      // 1,000 tokens of a 1B model: one credit
		{500, 500, 8e9, false, 8 * Micro}, // eight times the parameters, eight times the price
		{1000, 0, 1e9, true, Micro / 2},   // late: half
		{1000, 0, 0, false, Micro},        // unknown size: priced as 1B
		{1000, 0, 1e6, false, Micro / 10}, // tiny models floor at 0.1
		{0, 0, 1e9, false, 0},
	}
	for _, c := range cases {
		if got := Cost(c.prompt, c.completion, c.params, c.late); got != c.want {
			t.Errorf("Cost(%d, %d, %d, %v) = %d, want %d", c.prompt, c.completion, c.params, c.late, got, c.want)
		}
	}
	if got := ExpertCost(2e12); got != Micro { // 1e12 parameter-tokens = 1,000 tokens of a 1B model
		t.Errorf("ExpertCost(2e12) = %d, want %d", got, Micro)
	}
}
