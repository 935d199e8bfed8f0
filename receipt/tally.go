package receipt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Kind says what work a Tally counts.
type Kind uint8

// Kinds of tallies.
const (
	// KindExpert counts expert calls on /mwpeer/expert: Calls, Rows and
	// Flops, for one model.
	KindExpert Kind = 1
	// KindShard counts shard bytes on /mwpeer/shard: Calls (requests
	// answered) and Bytes.
	KindShard Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindExpert:
		return "expert"
	case KindShard:
		return "shard"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MaxTallySize bounds a marshalled SignedTally.
const MaxTallySize = 4 + 16 + 1 + 2*(2+maxPeerID) + (2 + MaxModel) + 6*binary.MaxVarintLen64 + 2*(2+maxSig)

var tallyMagic = [4]byte{'m', 'w', 't', '1'}

// Signature domains of tallies, distinct from the receipts' and from each
// other.
const (
	payerDomain  = "mwpeer/tally/1/payer"
	workerDomain = "mwpeer/tally/1/worker"
)

// maxWindow bounds the span of a tally's window.
const maxWindow = 31 * 24 * time.Hour

// Tally is the record of many small pieces of work one peer (Worker) did for
// another (Payer) over a window of time: expert calls a runner made to a
// host, or shard bytes a source sent a fetcher. The payer proposes it, the
// worker countersigns it when its own count agrees.
type Tally struct {
	ID     ID // random, picked by the payer
	Kind   Kind
	Payer  peer.ID // the runner, or the fetcher
	Worker peer.ID // the expert host, or the shard source
	Model  string  // the model ID for expert calls ("" for shards)
	Calls  uint64  // expert calls answered, or shard requests served
	Rows   uint64  // rows of those expert calls (0 for shards)
	Flops  uint64  // of those expert calls (0 for shards; see ExpertFlops)
	Bytes  uint64  // shard bytes (0 for expert calls)
	Start  time.Time
	End    time.Time // the window; kept to the millisecond
	Cost   uint64    // micro-credits: Price
}

// Price is what the cost rule gives for t's work: ExpertCost of its flops,
// or ShardCost of its bytes.
func (t *Tally) Price() uint64 {
	switch t.Kind {
	case KindExpert:
		return ExpertCost(t.Flops)
	case KindShard:
		return ShardCost(t.Bytes)
	}
	return 0
}

// Validate checks the fields' limits, that the counts fit the kind and that
// Cost is the rule's Price.
func (t *Tally) Validate() error {
	switch {
	case t.Payer == "" || t.Worker == "":
		return fmt.Errorf("%w: tally lacks a peer ID", ErrMalformed)
	case len(t.Payer) > maxPeerID || len(t.Worker) > maxPeerID:
		return fmt.Errorf("%w: peer ID too long", ErrMalformed)
	case t.Payer == t.Worker:
		return fmt.Errorf("%w: a peer tallies work for itself", ErrMalformed)
	case len(t.Model) > MaxModel:
		return fmt.Errorf("%w: model of %d bytes", ErrMalformed, len(t.Model))
	case t.End.Before(t.Start) || t.End.Sub(t.Start) > maxWindow:
		return fmt.Errorf("%w: window %s to %s", ErrMalformed, t.Start.UTC().Format(time.RFC3339), t.End.UTC().Format(time.RFC3339))
	}
	switch t.Kind {
	case KindExpert:
		if t.Model == "" || t.Bytes != 0 {
			return fmt.Errorf("%w: an expert tally needs a model and counts no bytes", ErrMalformed)
		}
	case KindShard:
		if t.Rows != 0 || t.Flops != 0 {
			return fmt.Errorf("%w: a shard tally counts no rows or flops", ErrMalformed)
		}
	default:
		return fmt.Errorf("%w: tally of %s", ErrMalformed, t.Kind)
	}
	if p := t.Price(); t.Cost != p {
		return fmt.Errorf("%w: cost %d, the rule gives %d", ErrMalformed, t.Cost, p)
	}
	return nil
}

// Marshal is the tally's one binary form, the bytes that are signed.
func (t *Tally) Marshal() []byte {
	var b bytes.Buffer
	b.Grow(192)
	b.Write(tallyMagic[:])
	b.Write(t.ID[:])
	b.WriteByte(byte(t.Kind))
	putBytes(&b, []byte(t.Payer))
	putBytes(&b, []byte(t.Worker))
	putBytes(&b, []byte(t.Model))
	putUvarint(&b, t.Calls)
	putUvarint(&b, t.Rows)
	putUvarint(&b, t.Flops)
	putUvarint(&b, t.Bytes)
	putVarint(&b, t.Start.UnixMilli())
	putVarint(&b, t.End.UnixMilli())
	putUvarint(&b, t.Cost)
	return b.Bytes()
}

// UnmarshalTally decodes the form Tally.Marshal writes.
func UnmarshalTally(data []byte) (*Tally, error) {
	if len(data) > MaxTallySize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrMalformed, len(data), MaxTallySize)
	}
	d := decoder{b: data}
	t, err := d.tally()
	if err != nil {
		return nil, err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the tally", ErrMalformed, len(d.b))
	}
	return t, nil
}

// SignedTally is a tally with the payer's signature and, once the worker
// agreed, the worker's. One that lacks the worker's is disputed: the worker
// refused it or never answered.
type SignedTally struct {
	Tally
	PayerSig  []byte
	WorkerSig []byte // nil: disputed
}

// SignPayer signs t as its payer with key, which must be the key of
// t.Payer.
func SignPayer(t Tally, key crypto.PrivKey) (*SignedTally, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if err := owns(key, t.Payer); err != nil {
		return nil, err
	}
	sig, err := key.Sign(signed(payerDomain, t.Marshal()))
	if err != nil {
		return nil, fmt.Errorf("sign tally: %w", err)
	}
	return &SignedTally{Tally: t, PayerSig: sig}, nil
}

// Countersign adds the worker's signature; key must be the key of
// s.Worker. The payer's signature is checked first.
func (s *SignedTally) Countersign(key crypto.PrivKey) error {
	if err := owns(key, s.Worker); err != nil {
		return err
	}
	if err := s.VerifyPayer(); err != nil {
		return err
	}
	sig, err := key.Sign(signed(workerDomain, s.Tally.Marshal()))
	if err != nil {
		return fmt.Errorf("countersign tally: %w", err)
	}
	s.WorkerSig = sig
	return nil
}

// VerifyPayer checks the tally's form and the payer's signature only.
func (s *SignedTally) VerifyPayer() error {
	if err := s.Validate(); err != nil {
		return err
	}
	return verify(s.Payer, payerDomain, s.Tally.Marshal(), s.PayerSig)
}

// VerifyWorker checks a worker signature sig over s (as it arrives on the
// stream) without keeping it.
func (s *SignedTally) VerifyWorker(sig []byte) error {
	return verify(s.Worker, workerDomain, s.Tally.Marshal(), sig)
}

// Verify checks both signatures: what a third party does, with nothing but
// the tally.
func (s *SignedTally) Verify() error {
	if err := s.VerifyPayer(); err != nil {
		return err
	}
	if len(s.WorkerSig) == 0 {
		return fmt.Errorf("%w: no worker signature", ErrUnsigned)
	}
	return s.VerifyWorker(s.WorkerSig)
}

// Marshal is the signed tally's binary form: the tally, then the payer's
// and the worker's signatures, each length-prefixed (an absent one has
// length 0).
func (s *SignedTally) Marshal() []byte {
	var b bytes.Buffer
	b.Write(s.Tally.Marshal())
	putBytes(&b, s.PayerSig)
	putBytes(&b, s.WorkerSig)
	return b.Bytes()
}

// UnmarshalSignedTally decodes what SignedTally.Marshal writes. It checks
// the form, not the signatures.
func UnmarshalSignedTally(data []byte) (*SignedTally, error) {
	if len(data) > MaxTallySize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrMalformed, len(data), MaxTallySize)
	}
	d := decoder{b: data}
	t, err := d.tally()
	if err != nil {
		return nil, err
	}
	s := &SignedTally{Tally: *t}
	if s.PayerSig, err = d.bytes(maxSig); err != nil {
		return nil, err
	}
	if s.WorkerSig, err = d.bytes(maxSig); err != nil {
		return nil, err
	}
	if len(s.PayerSig) == 0 {
		s.PayerSig = nil
	}
	if len(s.WorkerSig) == 0 {
		s.WorkerSig = nil
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the signatures", ErrMalformed, len(d.b))
	}
	return s, nil
}

func (d *decoder) tally() (*Tally, error) {
	m, err := d.fixed(len(tallyMagic))
	if err != nil || !bytes.Equal(m, tallyMagic[:]) {
		return nil, fmt.Errorf("%w: not a tally", ErrMalformed)
	}
	var t Tally
	id, err := d.fixed(len(t.ID))
	if err != nil {
		return nil, err
	}
	copy(t.ID[:], id)
	kind, err := d.fixed(1)
	if err != nil {
		return nil, err
	}
	t.Kind = Kind(kind[0])
	payer, err := d.bytes(maxPeerID)
	if err != nil {
		return nil, err
	}
	worker, err := d.bytes(maxPeerID)
	if err != nil {
		return nil, err
	}
	model, err := d.bytes(MaxModel)
	if err != nil {
		return nil, err
	}
	t.Payer, t.Worker, t.Model = peer.ID(payer), peer.ID(worker), string(model)
	for _, v := range []*uint64{&t.Calls, &t.Rows, &t.Flops, &t.Bytes} {
		if *v, err = d.uvarint(); err != nil {
			return nil, err
		}
	}
	start, err := d.varint()
	if err != nil {
		return nil, err
	}
	end, err := d.varint()
	if err != nil {
		return nil, err
	}
	t.Start, t.End = time.UnixMilli(start), time.UnixMilli(end)
	if t.Cost, err = d.uvarint(); err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}
