package membership

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
)

// FuzzParse reads membership certificates as they come in announcements,
// requests and files: one is ErrNoCert or ErrMalformed, or a certificate
// whose bytes are the input and whose text form decodes to it, and checking
// it gives one of the documented errors, never a panic.
func FuzzParse(f *testing.F) {
	op := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{4}, 64)))
	if err != nil {
		f.Fatal(err)
	}
	subject, _ := peer.IDFromPrivateKey(k)
	now := time.Unix(1_780_000_000, 0)
	cert, err := Issue(op, subject, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	fuzzcorpus.Add(f, cert)
	bad := bytes.Clone(cert)
	bad[len(bad)-1] ^= 1
	fuzzcorpus.Add(f, bad)
	fuzzcorpus.Add(f, []byte{Version})
	fuzzcorpus.Add(f, append([]byte{Version}, make([]byte, 200)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNoCert) {
				t.Fatalf("refused with %v, want ErrMalformed or ErrNoCert", err)
			}
			return
		}
		if !bytes.Equal(c.Bytes(), b) || len(b) > MaxSize || !c.NotAfter.After(c.NotBefore) || c.Subject.Validate() != nil {
			t.Fatalf("accepted %x as %+v", b, c)
		}
		d, err := Decode(" " + Encode(c.Bytes()) + "\n")
		if err != nil || !bytes.Equal(d.Bytes(), b) {
			t.Fatalf("text form round trip: %v", err)
		}
		switch err := c.Verify(subject, now); {
		case err == nil:
			if !bytes.Equal(c.Issuer, op.Public().(ed25519.PublicKey)) || c.Subject != subject {
				t.Fatalf("verified a certificate from %x for %s", c.Issuer, c.Subject)
			}
		case errors.Is(err, ErrBadSignature), errors.Is(err, ErrWrongSubject), errors.Is(err, ErrExpired), errors.Is(err, ErrNotYetValid):
		default:
			t.Fatalf("Verify: %v, not a documented error", err)
		}
	})
}

// FuzzDecode reads the text form, as --cert and the cert file hold it.
func FuzzDecode(f *testing.F) {
	op := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))
	k, _, _ := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{4}, 64)))
	subject, _ := peer.IDFromPrivateKey(k)
	cert, err := Issue(op, subject, time.Unix(0, 0), time.Unix(maxTime, 0))
	if err != nil {
		f.Fatal(err)
	}
	fuzzcorpus.Add(f, Encode(cert))
	fuzzcorpus.Add(f, Encode(cert)+"==")
	fuzzcorpus.Add(f, FormatIssuer(op.Public().(ed25519.PublicKey)))
	f.Fuzz(func(t *testing.T, s string) {
		if c, err := Decode(s); err == nil {
			if Encode(c.Bytes()) == "" {
				t.Fatal("empty text form")
			}
		} else if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNoCert) {
			t.Fatalf("refused with %v, want ErrMalformed or ErrNoCert", err)
		}
		if pub, err := ParseIssuer(s); err == nil && len(pub) != ed25519.PublicKeySize {
			t.Fatalf("issuer key of %d bytes", len(pub))
		}
	})
}
