package receipt

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Limits of a receipt's variable fields.
const (
	MaxModel  = 256
	MaxDigest = 128
	maxPeerID = 128
	maxSig    = 1024
	// MaxSize bounds a marshalled Signed receipt.
	MaxSize = 4 + 16 + 2*(2+maxPeerID) + 2*(2+MaxModel) + 5*binary.MaxVarintLen64 + 64 + 2*(2+maxSig)
)

var magic = [4]byte{'m', 'w', 'r', '1'}

// Signature domains: a signature made for one role does not verify in the
// other.
const (
	serverDomain    = "mwpeer/receipt/1/server"
	requesterDomain = "mwpeer/receipt/1/requester"
)

// Errors of decoding and verification.
var (
	ErrMalformed    = errors.New("malformed receipt")
	ErrBadSignature = errors.New("bad receipt signature")
	ErrUnsigned     = errors.New("receipt lacks a signature")
)

// ID names one request; the requester picks it at random.
type ID [16]byte

// NewID returns a random ID.
func NewID() ID {
	var id ID
	_, _ = rand.Read(id[:])
	return id
}

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses the hex form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("%w: request ID %.40q is not 32 hex digits", ErrMalformed, s)
	}
	copy(id[:], b)
	return id, nil
}

// Hash is a SHA-256.
type Hash [32]byte

// Sum hashes b.
func Sum(b []byte) Hash { return sha256.Sum256(b) }

// Receipt is the record of one answer on /mwpeer/infer.
type Receipt struct {
	ID               ID
	Requester        peer.ID
	Server           peer.ID
	Model            string
	Digest           string // the model's digest as the server announces it ("" when none)
	PromptTokens     uint32
	CompletionTokens uint32
	Start            time.Time     // when the server got the request; kept to the millisecond
	TTFT             time.Duration // server side; kept to the microsecond
	RequestHash      Hash          // of the request frame as the server read it
	AnswerHash       Hash          // of the answer text the server sent
	Cost             uint64        // micro-credits (see Cost)
}

// Marshal is the receipt's one binary form, the bytes that are signed.
func (r *Receipt) Marshal() []byte {
	var b bytes.Buffer
	b.Grow(256)
	b.Write(magic[:])
	b.Write(r.ID[:])
	putBytes(&b, []byte(r.Requester))
	putBytes(&b, []byte(r.Server))
	putBytes(&b, []byte(r.Model))
	putBytes(&b, []byte(r.Digest))
	putUvarint(&b, uint64(r.PromptTokens))
	putUvarint(&b, uint64(r.CompletionTokens))
	putVarint(&b, r.Start.UnixMilli())
	putUvarint(&b, uint64(max(r.TTFT, 0)/time.Microsecond))
	b.Write(r.RequestHash[:])
	b.Write(r.AnswerHash[:])
	putUvarint(&b, r.Cost)
	return b.Bytes()
}

// Unmarshal decodes the form Marshal writes.
func Unmarshal(data []byte) (*Receipt, error) {
	d := decoder{b: data}
	r, err := d.receipt()
	if err != nil {
		return nil, err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the receipt", ErrMalformed, len(d.b))
	}
	return r, nil
}

// Validate checks the fields' limits.
func (r *Receipt) Validate() error {
	switch {
	case r.Requester == "" || r.Server == "":
		return fmt.Errorf("%w: missing peer ID", ErrMalformed)
	case len(r.Requester) > maxPeerID || len(r.Server) > maxPeerID:
		return fmt.Errorf("%w: peer ID too long", ErrMalformed)
	case r.Model == "" || len(r.Model) > MaxModel:
		return fmt.Errorf("%w: model name of %d bytes", ErrMalformed, len(r.Model))
	case len(r.Digest) > MaxDigest:
		return fmt.Errorf("%w: digest of %d bytes", ErrMalformed, len(r.Digest))
	}
	return nil
}

// Signed is a receipt with the server's signature and, once the requester
// accepted it, the requester's.
type Signed struct {
	Receipt
	ServerSig    []byte
	RequesterSig []byte // nil: the requester refused it or never answered
}

// SignServer signs r as its server with key, which must be the key of
// r.Server.
func SignServer(r Receipt, key crypto.PrivKey) (*Signed, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if err := owns(key, r.Server); err != nil {
		return nil, err
	}
	sig, err := key.Sign(signed(serverDomain, r.Marshal()))
	if err != nil {
		return nil, fmt.Errorf("sign receipt: %w", err)
	}
	return &Signed{Receipt: r, ServerSig: sig}, nil
}

// Countersign adds the requester's signature; key must be the key of
// s.Requester. The server's signature is checked first.
func (s *Signed) Countersign(key crypto.PrivKey) error {
	if err := owns(key, s.Requester); err != nil {
		return err
	}
	if err := verify(s.Server, serverDomain, s.Receipt.Marshal(), s.ServerSig); err != nil {
		return err
	}
	sig, err := key.Sign(signed(requesterDomain, s.Receipt.Marshal()))
	if err != nil {
		return fmt.Errorf("countersign receipt: %w", err)
	}
	s.RequesterSig = sig
	return nil
}

// VerifyServer checks the server's signature only.
func (s *Signed) VerifyServer() error {
	if err := s.Validate(); err != nil {
		return err
	}
	return verify(s.Server, serverDomain, s.Receipt.Marshal(), s.ServerSig)
}

// VerifyRequester checks a requester signature sig over s (as it arrives
// on the stream) without keeping it.
func (s *Signed) VerifyRequester(sig []byte) error {
	return verify(s.Requester, requesterDomain, s.Receipt.Marshal(), sig)
}

// Verify checks both signatures: what a third party does, with nothing but
// the receipt.
func (s *Signed) Verify() error {
	if err := s.VerifyServer(); err != nil {
		return err
	}
	if len(s.RequesterSig) == 0 {
		return fmt.Errorf("%w: no requester signature", ErrUnsigned)
	}
	return s.VerifyRequester(s.RequesterSig)
}

// Marshal is the signed receipt's binary form: the receipt, then the two
// signatures, each length-prefixed (an absent one has length 0).
func (s *Signed) Marshal() []byte {
	var b bytes.Buffer
	b.Write(s.Receipt.Marshal())
	putBytes(&b, s.ServerSig)
	putBytes(&b, s.RequesterSig)
	return b.Bytes()
}

// UnmarshalSigned decodes what Signed.Marshal writes. It checks the form,
// not the signatures.
func UnmarshalSigned(data []byte) (*Signed, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrMalformed, len(data), MaxSize)
	}
	d := decoder{b: data}
	r, err := d.receipt()
	if err != nil {
		return nil, err
	}
	s := &Signed{Receipt: *r}
	if s.ServerSig, err = d.bytes(maxSig); err != nil {
		return nil, err
	}
	if s.RequesterSig, err = d.bytes(maxSig); err != nil {
		return nil, err
	}
	if len(s.ServerSig) == 0 {
		s.ServerSig = nil
	}
	if len(s.RequesterSig) == 0 {
		s.RequesterSig = nil
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the signatures", ErrMalformed, len(d.b))
	}
	return s, nil
}

func signed(domain string, payload []byte) []byte {
	out := make([]byte, 0, len(domain)+1+len(payload))
	out = append(out, domain...)
	out = append(out, 0)
	return append(out, payload...)
}

func owns(key crypto.PrivKey, id peer.ID) error {
	if key == nil {
		return errors.New("no signing key")
	}
	kid, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return err
	}
	if kid != id {
		return fmt.Errorf("key of %s cannot sign for %s", kid.ShortString(), id.ShortString())
	}
	return nil
}

func verify(id peer.ID, domain string, payload, sig []byte) error {
	if len(sig) == 0 {
		return fmt.Errorf("%w: no signature of %s", ErrUnsigned, id.ShortString())
	}
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("%w: %s carries no public key: %v", ErrBadSignature, id.ShortString(), err)
	}
	ok, err := pub.Verify(signed(domain, payload), sig)
	if err != nil || !ok {
		return fmt.Errorf("%w: by %s", ErrBadSignature, id.ShortString())
	}
	return nil
}

func putBytes(b *bytes.Buffer, v []byte) {
	putUvarint(b, uint64(len(v)))
	b.Write(v)
}

func putUvarint(b *bytes.Buffer, v uint64) {
	var tmp [binary.MaxVarintLen64]byte
	b.Write(tmp[:binary.PutUvarint(tmp[:], v)])
}

func putVarint(b *bytes.Buffer, v int64) {
	var tmp [binary.MaxVarintLen64]byte
	b.Write(tmp[:binary.PutVarint(tmp[:], v)])
}

type decoder struct{ b []byte }

func (d *decoder) fixed(n int) ([]byte, error) {
	if len(d.b) < n {
		return nil, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out, nil
}

func (d *decoder) uvarint() (uint64, error) {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		return 0, fmt.Errorf("%w: bad number", ErrMalformed)
	}
	d.b = d.b[n:]
	return v, nil
}

func (d *decoder) varint() (int64, error) {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		return 0, fmt.Errorf("%w: bad number", ErrMalformed)
	}
	d.b = d.b[n:]
	return v, nil
}

func (d *decoder) bytes(max int) ([]byte, error) {
	n, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("%w: field of %d bytes (max %d)", ErrMalformed, n, max)
	}
	b, err := d.fixed(int(n))
	if err != nil {
		return nil, err
	}
	return bytes.Clone(b), nil
}

func (d *decoder) u32() (uint32, error) {
	v, err := d.uvarint()
	if err != nil {
		return 0, err
	}
	if v > 1<<32-1 {
		return 0, fmt.Errorf("%w: count out of range", ErrMalformed)
	}
	return uint32(v), nil
}

func (d *decoder) receipt() (*Receipt, error) {
	m, err := d.fixed(len(magic))
	if err != nil || !bytes.Equal(m, magic[:]) {
		return nil, fmt.Errorf("%w: not a receipt", ErrMalformed)
	}
	var r Receipt
	id, err := d.fixed(len(r.ID))
	if err != nil {
		return nil, err
	}
	copy(r.ID[:], id)
	req, err := d.bytes(maxPeerID)
	if err != nil {
		return nil, err
	}
	srv, err := d.bytes(maxPeerID)
	if err != nil {
		return nil, err
	}
	model, err := d.bytes(MaxModel)
	if err != nil {
		return nil, err
	}
	digest, err := d.bytes(MaxDigest)
	if err != nil {
		return nil, err
	}
	r.Requester, r.Server, r.Model, r.Digest = peer.ID(req), peer.ID(srv), string(model), string(digest)
	if r.PromptTokens, err = d.u32(); err != nil {
		return nil, err
	}
	if r.CompletionTokens, err = d.u32(); err != nil {
		return nil, err
	}
	ms, err := d.varint()
	if err != nil {
		return nil, err
	}
	r.Start = time.UnixMilli(ms)
	us, err := d.uvarint()
	if err != nil || us > uint64(24*time.Hour/time.Microsecond) {
		return nil, fmt.Errorf("%w: time to first token", ErrMalformed)
	}
	r.TTFT = time.Duration(us) * time.Microsecond
	rh, err := d.fixed(32)
	if err != nil {
		return nil, err
	}
	ah, err := d.fixed(32)
	if err != nil {
		return nil, err
	}
	copy(r.RequestHash[:], rh)
	copy(r.AnswerHash[:], ah)
	if r.Cost, err = d.uvarint(); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}
