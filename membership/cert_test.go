package membership

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func newPeerID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func issue(t *testing.T, k ed25519.PrivateKey, id peer.ID, from, until time.Time) []byte {
	t.Helper()
	b, err := Issue(k, id, from, until)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func TestCheckerCases(t *testing.T) {
	op, other := newKey(t), newKey(t)
	member, stranger := newPeerID(t), newPeerID(t)
	valid := issue(t, op, member, t0, t0.Add(24*time.Hour))
	forged := append([]byte(nil), valid...)
	forged[len(forged)-1] ^= 1
	// The subject swapped after signing: structure intact, signature not.
	swapped := append([]byte(nil), valid...)
	copy(swapped[34:34+len(member)], []byte(stranger))
	// A certificate that claims the operator but was signed by another key.
	impostor := issue(t, other, member, t0, t0.Add(24*time.Hour))
	copy(impostor[1:33], op.Public().(ed25519.PublicKey))
	oversized := append(append([]byte(nil), valid...), make([]byte, MaxSize)...)
	badVersion := append([]byte{2}, valid[1:]...)

	cases := []struct {
		name string
		id   peer.ID
		cert []byte
		now  time.Time
		want error
	}{
		{"valid", member, valid, t0.Add(time.Hour), nil},
		{"valid at its first second", member, valid, t0, nil},
		{"valid at its last second", member, valid, t0.Add(24 * time.Hour), nil},
		{"expired", member, valid, t0.Add(24*time.Hour + time.Second), ErrExpired},
		{"not yet valid", member, valid, t0.Add(-time.Second), ErrNotYetValid},
		{"other subject", stranger, valid, t0.Add(time.Hour), ErrWrongSubject},
		{"forged signature", member, forged, t0.Add(time.Hour), ErrBadSignature},
		{"subject swapped after signing", stranger, swapped, t0.Add(time.Hour), ErrBadSignature},
		{"signed by another key claiming the issuer", member, impostor, t0.Add(time.Hour), ErrBadSignature},
		{"untrusted issuer", member, issue(t, other, member, t0, t0.Add(time.Hour)), t0.Add(time.Minute), ErrUntrustedIssuer},
		{"none", member, nil, t0, ErrNoCert},
		{"garbage", member, []byte("hello, I am a member"), t0, ErrMalformed},
		{"truncated", member, valid[:len(valid)-1], t0, ErrMalformed},
		{"oversized", member, oversized, t0, ErrMalformed},
		{"unknown version", member, badVersion, t0, ErrMalformed},
	}
	k := NewChecker([]ed25519.PublicKey{op.Public().(ed25519.PublicKey)})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k.Now = func() time.Time { return tc.now }
			// Twice: the second answer comes from the cache.
			for range 2 {
				err := k.Check(tc.id, tc.cert)
				if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
					t.Fatalf("Check = %v, want %v", err, tc.want)
				}
			}
		})
	}
}

func TestExpiryIsCheckedAtEveryUse(t *testing.T) {
	op := newKey(t)
	id := newPeerID(t)
	cert := issue(t, op, id, t0, t0.Add(time.Minute))
	now := t0
	k := NewChecker([]ed25519.PublicKey{op.Public().(ed25519.PublicKey)})
	k.Now = func() time.Time { return now }
	if err := k.Check(id, cert); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if err := k.Check(id, cert); !errors.Is(err, ErrExpired) {
		t.Fatalf("after expiry: %v", err)
	}
}

func TestTextForms(t *testing.T) {
	op := newKey(t)
	id := newPeerID(t)
	b := issue(t, op, id, t0, t0.Add(time.Hour))
	if len(b) != 152 {
		t.Errorf("a certificate for an Ed25519 peer is %d bytes, want 152", len(b))
	}
	c, err := Decode("  " + Encode(b) + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != id || !c.NotBefore.Equal(t0) || !c.NotAfter.Equal(t0.Add(time.Hour)) || string(c.Bytes()) != string(b) {
		t.Fatalf("decoded %+v", c)
	}
	if err := c.Verify(id, t0); err != nil {
		t.Fatal(err)
	}
	pub := op.Public().(ed25519.PublicKey)
	s := FormatIssuer(pub)
	got, err := ParseIssuer(s)
	if err != nil || !got.Equal(pub) {
		t.Fatalf("ParseIssuer(%q) = %x, %v", s, got, err)
	}
	for _, bad := range []string{"", "ed25519:", "ed25519:abc", s[len("ed25519:"):], "rsa:" + s[8:]} {
		if _, err := ParseIssuer(bad); err == nil {
			t.Errorf("ParseIssuer(%q) accepted", bad)
		}
	}
	if _, err := Decode("!!!"); !errors.Is(err, ErrMalformed) {
		t.Errorf("Decode of non-base64: %v", err)
	}
	if _, err := Decode(strings.Repeat("A", 2*MaxSize)); !errors.Is(err, ErrMalformed) {
		t.Errorf("Decode of an oversized text: %v", err)
	}
	pemKey, err := MarshalKey(op)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseKey(pemKey)
	if err != nil || !back.Equal(op) {
		t.Fatalf("ParseKey: %v", err)
	}
	if _, err := ParseKey([]byte("not a key")); err == nil {
		t.Error("ParseKey accepted garbage")
	}
}

func TestIssueRefusesNonsense(t *testing.T) {
	op := newKey(t)
	id := newPeerID(t)
	if _, err := Issue(op, id, t0, t0); err == nil {
		t.Error("an empty window was issued")
	}
	if _, err := Issue(op, "", t0, t0.Add(time.Hour)); err == nil {
		t.Error("an empty subject was issued")
	}
	if _, err := Issue(nil, id, t0, t0.Add(time.Hour)); err == nil {
		t.Error("issued without a key")
	}
}
