package membership

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Version is the version byte of the certificates Issue writes.
const Version = 1

// Size limits. A certificate for an Ed25519 peer ID is 152 bytes; MaxSize
// leaves room for longer peer IDs and is what any holder accepts at most.
const (
	MaxSize    = 512
	maxSubject = 128
	// maxTime is the last second a certificate may name (the end of 9999).
	maxTime = 253402300799
)

// Errors of Parse, Verify and Checker.Check; each error returned wraps one.
var (
	ErrNoCert          = errors.New("no membership certificate")
	ErrMalformed       = errors.New("malformed membership certificate")
	ErrBadSignature    = errors.New("membership certificate signature does not verify")
	ErrUntrustedIssuer = errors.New("membership certificate from an untrusted issuer")
	ErrWrongSubject    = errors.New("membership certificate is for another peer")
	ErrExpired         = errors.New("membership certificate expired")
	ErrNotYetValid     = errors.New("membership certificate not yet valid")
)

// signingContext separates certificate signatures from anything else an
// operator key might sign.
const signingContext = "mwpeer membership certificate\x00"

// Cert is a decoded certificate. The layout of version 1 (integers
// big-endian):
//
//	offset  size  field
//	0       1     version (1)
//	1       32    issuer: the operator's Ed25519 public key
//	33      1     n: length of the subject (1..128)
//	34      n     subject: the member's peer ID, as bytes (its multihash)
//	34+n    8     not before, Unix seconds (int64)
//	42+n    8     not after, Unix seconds (int64); valid while now <= it
//	50+n    64    Ed25519 signature by issuer over
//	              "mwpeer membership certificate\x00" || bytes 0 .. 50+n
//
// Its text form (Encode, Decode) is that binary in unpadded URL-safe base64.
type Cert struct {
	Issuer    ed25519.PublicKey
	Subject   peer.ID
	NotBefore time.Time
	NotAfter  time.Time
	Signature []byte
	raw       []byte // the whole certificate, as parsed
}

// Issue signs a certificate for subject, valid from notBefore to notAfter
// (second precision), with the operator key, and returns its binary form.
func Issue(key ed25519.PrivateKey, subject peer.ID, notBefore, notAfter time.Time) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("issue certificate: not an Ed25519 private key")
	}
	sub := []byte(subject)
	if err := subject.Validate(); err != nil || len(sub) > maxSubject {
		return nil, fmt.Errorf("issue certificate: bad subject peer ID %q", subject)
	}
	if !notAfter.After(notBefore) {
		return nil, errors.New("issue certificate: it must end after it begins")
	}
	if notBefore.Unix() < 0 || notAfter.Unix() > maxTime {
		return nil, errors.New("issue certificate: dates must lie between 1970 and 9999")
	}
	b := make([]byte, 0, 50+len(sub)+ed25519.SignatureSize)
	b = append(b, Version)
	b = append(b, key.Public().(ed25519.PublicKey)...)
	b = append(b, byte(len(sub)))
	b = append(b, sub...)
	b = binary.BigEndian.AppendUint64(b, uint64(notBefore.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(notAfter.Unix()))
	return append(b, ed25519.Sign(key, signed(b))...), nil
}

func signed(body []byte) []byte {
	return append([]byte(signingContext), body...)
}

// Parse decodes a certificate's binary form. It checks the structure only:
// Verify checks the signature, the subject and the window.
func Parse(b []byte) (*Cert, error) {
	switch {
	case len(b) == 0:
		return nil, ErrNoCert
	case len(b) > MaxSize:
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(b), MaxSize)
	case b[0] != Version:
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, b[0], Version)
	case len(b) < 34:
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	n := int(b[33])
	if n == 0 || n > maxSubject || len(b) != 50+n+ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: %d bytes with a subject of %d", ErrMalformed, len(b), n)
	}
	sub, err := peer.IDFromBytes(b[34 : 34+n])
	if err != nil {
		return nil, fmt.Errorf("%w: subject: %v", ErrMalformed, err)
	}
	nb := int64(binary.BigEndian.Uint64(b[34+n:]))
	na := int64(binary.BigEndian.Uint64(b[42+n:]))
	if na <= nb {
		return nil, fmt.Errorf("%w: it ends before it begins", ErrMalformed)
	}
	if nb < 0 || na > maxTime {
		// A time.Time cannot hold every int64 of seconds: far dates would
		// wrap and end the certificate before it begins.
		return nil, fmt.Errorf("%w: dates outside 1970..9999", ErrMalformed)
	}
	raw := bytes.Clone(b)
	return &Cert{
		Issuer:    ed25519.PublicKey(raw[1:33]),
		Subject:   sub,
		NotBefore: time.Unix(nb, 0),
		NotAfter:  time.Unix(na, 0),
		Signature: raw[50+n:],
		raw:       raw,
	}, nil
}

// Bytes is the certificate's binary form.
func (c *Cert) Bytes() []byte { return c.raw }

// VerifySignature checks that the issuer signed the certificate.
func (c *Cert) VerifySignature() error {
	if !ed25519.Verify(c.Issuer, signed(c.raw[:len(c.raw)-ed25519.SignatureSize]), c.Signature) {
		return ErrBadSignature
	}
	return nil
}

// Valid checks that the certificate names subject and that now is within
// its window. It does not check the signature.
func (c *Cert) Valid(subject peer.ID, now time.Time) error {
	if c.Subject != subject {
		return fmt.Errorf("%w: it names %s", ErrWrongSubject, c.Subject)
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("%w: valid from %s", ErrNotYetValid, c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("%w: valid until %s", ErrExpired, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Verify checks the signature, that the certificate names subject, and
// that now is within its window. Whether the issuer is trusted is the
// caller's question (see Checker).
func (c *Cert) Verify(subject peer.ID, now time.Time) error {
	if err := c.VerifySignature(); err != nil {
		return err
	}
	return c.Valid(subject, now)
}

// Encode is the text form of a certificate's binary form.
func Encode(cert []byte) string { return base64.RawURLEncoding.EncodeToString(cert) }

// Decode reads the text form (surrounding space ignored) and parses it.
func Decode(s string) (*Cert, error) {
	s = strings.TrimSpace(s)
	if len(s) > base64.RawURLEncoding.EncodedLen(MaxSize) {
		return nil, fmt.Errorf("%w: %d characters", ErrMalformed, len(s))
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("%w: not base64: %v", ErrMalformed, err)
	}
	return Parse(b)
}

// issuerPrefix starts the text form of an issuer's public key.
const issuerPrefix = "ed25519:"

// FormatIssuer is the text form of an operator's public key, what
// --trust-issuer takes: "ed25519:" and the 32 bytes in unpadded URL-safe
// base64.
func FormatIssuer(pub ed25519.PublicKey) string {
	return issuerPrefix + base64.RawURLEncoding.EncodeToString(pub)
}

// ParseIssuer reads the text form of FormatIssuer.
func ParseIssuer(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, issuerPrefix)
	if !ok {
		return nil, fmt.Errorf("issuer key %q: want %s followed by base64", trunc(s), issuerPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(rest, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("issuer key %q: not a base64 Ed25519 public key", trunc(s))
	}
	return ed25519.PublicKey(b), nil
}

// NewKey generates an operator key.
func NewKey() (ed25519.PrivateKey, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	return k, err
}

// MarshalKey is an operator key as a PKCS #8 PEM block (what openssl
// genpkey -algorithm ed25519 writes).
func MarshalKey(k ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey reads an operator key written by MarshalKey.
func ParseKey(data []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, want an Ed25519 key", k)
	}
	return ek, nil
}

func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
