package experts

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/membership"
)

// TestAnnouncedCertMustNameTheAuthor: an announcement may carry its
// author's membership certificate, intact and naming the author; anything
// else is invalid. Trust in the issuer is not the catalog's question.
func TestAnnouncedCertMustNameTheAuthor(t *testing.T) {
	key, id := newKey(t)
	_, other := newKey(t)
	op, err := membership.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	certFor := func(s string) []byte {
		pid, err := peer.Decode(s)
		if err != nil {
			t.Fatal(err)
		}
		b, err := membership.Issue(op, pid, now, now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	open := func(cert []byte, beat bool) (*Announcement, error) {
		a := sample(id, now)
		a.Cert = cert
		if beat {
			a = Announcement{Peer: id, Seq: 2, Time: now.UnixMilli(), Interval: 5000, Beat: true, State: 1, Cert: cert}
		}
		data, err := Seal(&a, key)
		if err != nil {
			t.Fatal(err)
		}
		return Open(data, now)
	}
	got, err := open(certFor(id), false)
	if err != nil {
		t.Fatalf("own certificate: %v", err)
	}
	if c, err := membership.Parse(got.Cert); err != nil || c.Subject.String() != id {
		t.Fatalf("certificate after Open: %v", err)
	}
	if _, err := open(certFor(other), false); ReasonOf(err) != RejectInvalid {
		t.Errorf("another peer's certificate: %v", err)
	}
	if _, err := open([]byte("garbage"), false); ReasonOf(err) != RejectInvalid {
		t.Errorf("garbage certificate: %v", err)
	}
	if _, err := open(make([]byte, membership.MaxSize+1), false); ReasonOf(err) != RejectInvalid {
		t.Errorf("oversized certificate: %v", err)
	}
	if _, err := open(certFor(id), true); ReasonOf(err) != RejectInvalid {
		t.Errorf("a beat with a certificate: %v", err)
	}
}
