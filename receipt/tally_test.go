package receipt

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func sampleTally(payer, worker peer.ID) Tally {
	t := Tally{
		ID: NewID(), Kind: KindExpert, Payer: payer, Worker: worker,
		Model: "5f1d7c0e8a9b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d",
		Calls: 120, Rows: 480, Flops: ExpertFlops(480*64, 128),
		Start: time.UnixMilli(1_700_000_000_000), End: time.UnixMilli(1_700_000_012_345),
	}
	t.Cost = t.Price()
	return t
}

func TestTallyRoundTripsAndBothSignaturesVerify(t *testing.T) {
	pk, payer := key(t)
	wk, worker := key(t)
	s, err := SignPayer(sampleTally(payer, worker), pk)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyPayer(); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("before countersigning: %v, want ErrUnsigned", err)
	}
	if err := s.Countersign(wk); err != nil {
		t.Fatal(err)
	}
	data := s.Marshal()
	got, err := UnmarshalSignedTally(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(); err != nil {
		t.Fatalf("a third party cannot verify: %v", err)
	}
	if !bytes.Equal(got.Marshal(), data) || got.Calls != 120 || got.Rows != 480 || got.Model != s.Model {
		t.Fatalf("round trip changed the tally:\n%+v\n%+v", got.Tally, s.Tally)
	}
	t.Logf("signed tally: %d bytes", len(data))

	// A disputed tally (payer's signature only) round-trips as such.
	d, _ := SignPayer(sampleTally(payer, worker), pk)
	got, err = UnmarshalSignedTally(d.Marshal())
	if err != nil || got.WorkerSig != nil || got.VerifyPayer() != nil {
		t.Fatalf("disputed tally: %+v %v", got, err)
	}
}

func TestShardTally(t *testing.T) {
	pk, payer := key(t)
	wk, worker := key(t)
	tl := Tally{ID: NewID(), Kind: KindShard, Payer: payer, Worker: worker, Calls: 3, Bytes: 3 << 30,
		Start: time.UnixMilli(1_700_000_000_000), End: time.UnixMilli(1_700_000_001_000)}
	tl.Cost = tl.Price()
	if tl.Cost != 3*Micro {
		t.Fatalf("3 GiB cost %d, want 3 credits", tl.Cost)
	}
	s, err := SignPayer(tl, pk)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Countersign(wk); err != nil {
		t.Fatal(err)
	}
	if got, err := UnmarshalSignedTally(s.Marshal()); err != nil || got.Verify() != nil {
		t.Fatalf("shard tally: %v", err)
	}
}

func TestInvalidTalliesAreNotSigned(t *testing.T) {
	pk, payer := key(t)
	_, worker := key(t)
	cases := map[string]func(*Tally){
		"cost off the rule":       func(t *Tally) { t.Cost++ },
		"expert tally with bytes": func(t *Tally) { t.Bytes = 1 },
		"expert tally no model":   func(t *Tally) { t.Model = "" },
		"shard tally with rows":   func(t *Tally) { t.Kind = KindShard; t.Flops = 0; t.Cost = 0 },
		"unknown kind":            func(t *Tally) { t.Kind = 9 },
		"window backwards":        func(t *Tally) { t.Start, t.End = t.End, t.Start },
		"window without a start":  func(t *Tally) { t.Start = time.Time{} },
		"work for oneself":        func(t *Tally) { t.Worker = t.Payer },
		"no worker":               func(t *Tally) { t.Worker = "" },
	}
	for name, alter := range cases {
		tl := sampleTally(payer, worker)
		alter(&tl)
		if _, err := SignPayer(tl, pk); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := SignPayer(sampleTally(worker, payer), pk); err == nil {
		t.Fatal("a key signed for another payer")
	}
}

func TestForgedTalliesAreRejected(t *testing.T) {
	pk, payer := key(t)
	wk, worker := key(t)
	other, _ := key(t)
	good, err := SignPayer(sampleTally(payer, worker), pk)
	if err != nil {
		t.Fatal(err)
	}
	if err := good.Countersign(wk); err != nil {
		t.Fatal(err)
	}
	if err := good.Countersign(other); err == nil {
		t.Fatal("a key countersigned for another worker")
	}
	cases := map[string]func(s *SignedTally){
		"more rows":                 func(s *SignedTally) { s.Rows++ },
		"more calls":                func(s *SignedTally) { s.Calls++ },
		"other window":              func(s *SignedTally) { s.End = s.End.Add(time.Second) },
		"signatures swapped":        func(s *SignedTally) { s.PayerSig, s.WorkerSig = s.WorkerSig, s.PayerSig },
		"worker signed in payer's":  func(s *SignedTally) { s.PayerSig, _ = wk.Sign(signed(payerDomain, s.Tally.Marshal())) },
		"payer's key as a receipt":  func(s *SignedTally) { s.PayerSig, _ = pk.Sign(signed(serverDomain, s.Tally.Marshal())) },
		"worker's key as a receipt": func(s *SignedTally) { s.WorkerSig, _ = wk.Sign(signed(requesterDomain, s.Tally.Marshal())) },
		"signature by another key":  func(s *SignedTally) { s.WorkerSig, _ = other.Sign(signed(workerDomain, s.Tally.Marshal())) },
	}
	for name, alter := range cases {
		s := *good
		s.PayerSig, s.WorkerSig = bytes.Clone(good.PayerSig), bytes.Clone(good.WorkerSig)
		alter(&s)
		if err := s.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
	}
	// Rows changed with the cost kept consistent is still a bad signature;
	// with the cost left as it was it is malformed.
	s := *good
	s.Flops *= 2
	if err := s.Verify(); !errors.Is(err, ErrMalformed) {
		t.Errorf("flops doubled, cost kept: %v, want ErrMalformed", err)
	}
	s.Cost = s.Price()
	if err := s.Verify(); !errors.Is(err, ErrBadSignature) {
		t.Errorf("flops and cost doubled: %v, want ErrBadSignature", err)
	}
}

func TestTallyAndReceiptFormsDoNotMix(t *testing.T) {
	sk, srv := key(t)
	_, req := key(t)
	r, err := SignServer(sample(req, srv), sk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnmarshalSignedTally(r.Marshal()); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a receipt read as a tally: %v", err)
	}
	tl, err := SignPayer(sampleTally(srv, req), sk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnmarshalSigned(tl.Marshal()); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a tally read as a receipt: %v", err)
	}
}

func TestMalformedTalliesAreErrorsNotPanics(t *testing.T) {
	pk, payer := key(t)
	_, worker := key(t)
	s, err := SignPayer(sampleTally(payer, worker), pk)
	if err != nil {
		t.Fatal(err)
	}
	data := s.Marshal()
	for i := range data {
		if _, err := UnmarshalSignedTally(data[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
	if _, err := UnmarshalSignedTally(append(bytes.Clone(data), 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, err := UnmarshalSignedTally(make([]byte, MaxTallySize+1)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := UnmarshalTally(s.Tally.Marshal()); err != nil {
		t.Fatalf("the unsigned form: %v", err)
	}
}

func TestTallyCostRules(t *testing.T) {
	if got := ExpertFlops(1, 128); got != 6*128 {
		t.Errorf("ExpertFlops(1 value, ff 128) = %d, want %d", got, 6*128)
	}
	if got := ExpertFlops(1<<62, 1<<20); got != ^uint64(0) {
		t.Errorf("ExpertFlops overflow = %d, want saturation", got)
	}
	for _, c := range []struct{ bytes, want uint64 }{
		{1 << 30, Micro}, {0, 0}, {1 << 20, 977}, {10 << 30, 10 * Micro},
	} {
		if got := ShardCost(c.bytes); got != c.want {
			t.Errorf("ShardCost(%d) = %d, want %d", c.bytes, got, c.want)
		}
	}
}
