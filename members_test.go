package mwpeer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/inference/infer"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/membership"
	"github.com/mwpeer/mwpeer/p2p"
	"github.com/mwpeer/mwpeer/swarm"
)

func testSwarmKey(t *testing.T) pnet.PSK {
	t.Helper()
	data, err := p2p.NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	psk, err := pnet.DecodeV1PSK(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return psk
}

// ask sends prompt to model through p's router and returns who answered.
func ask(t *testing.T, p *Peer, model, prompt string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), slow(10*time.Second))
	defer cancel()
	ans, err := p.Router().Complete(ctx, swarm.Query{Request: inference.Request{Model: model, Prompt: prompt}}, func(string, inference.Chunk) error { return nil })
	if err != nil {
		t.Fatalf("%s asks %s: %v", p.ID().ShortString(), model, err)
	}
	if ans.Text == "" {
		t.Fatalf("%s asks %s: an empty answer", p.ID().ShortString(), model)
	}
	return ans.Experts
}

// knows waits until p's catalog holds every one of others serving a model.
func knows(t *testing.T, p *Peer, others ...*Peer) {
	t.Helper()
	wait.For(t, slow(15*time.Second), p.ID().ShortString()+" hears the others", func() error {
		for _, q := range others {
			if e, ok := p.Catalog.Get(q.ID().String()); !ok || len(e.Models) == 0 {
				return fmt.Errorf("%s not in the catalog", q.ID().ShortString())
			}
		}
		return nil
	})
}

// TestPrivateSwarmAdmitsOnlyItsKey: two peers with the same swarm key join
// over TCP (their QUIC addresses dropped) and answer each other; a peer
// without the key can neither reach them nor be reached, and no catalog
// learns of it.
func TestPrivateSwarmAdmitsOnlyItsKey(t *testing.T) {
	psk := testSwarmKey(t)
	peers := startSwarm(t, 2, func(i int, c *Config) { c.SwarmKey = psk })
	a, b := peers[0], peers[1]
	for _, addr := range a.Host.Addrs() {
		if _, err := addr.ValueForProtocol(ma.P_QUIC_V1); err == nil {
			t.Fatalf("a private peer listens on %s", addr)
		}
	}
	knows(t, b, a)
	if got := ask(t, b, "model-0", "hello over a private swarm"); len(got) != 1 || got[0] != a.ID().String() {
		t.Fatalf("answered by %v, want %s", got, a.ID())
	}

	cfg := testConfig(t)
	cfg.Models = []string{"model-9"}
	cfg.Bootstrap = []string{a.Addrs()[0].String()}
	open, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { open.Close() })
	// Both directions at once: a handshake under the wrong key fails or
	// stalls until the deadline.
	var wg sync.WaitGroup
	for _, d := range []struct {
		name     string
		from, to *Peer
	}{{"unkeyed to keyed", open, a}, {"keyed to unkeyed", a, open}} {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if err := d.from.Host.Connect(ctx, peer.AddrInfo{ID: d.to.ID(), Addrs: d.to.Host.Addrs()}); err == nil {
				t.Errorf("%s: connected", d.name)
			}
		})
	}
	wg.Wait()
	for _, p := range peers {
		if p.Host.Network().Connectedness(open.ID()) == network.Connected {
			t.Errorf("%s is connected to the peer without the key", p.ID().ShortString())
		}
		if _, ok := p.Catalog.Get(open.ID().String()); ok {
			t.Errorf("%s's catalog holds the peer without the key", p.ID().ShortString())
		}
		if _, ok := open.Catalog.Get(p.ID().String()); ok {
			t.Errorf("the peer without the key learned of %s", p.ID().ShortString())
		}
	}
}

// certify issues, from op, a certificate for the peer whose identity is in
// dataDir (created here), valid from-until.
func certify(t *testing.T, op ed25519.PrivateKey, dataDir string, from, until time.Time) []byte {
	t.Helper()
	key, err := p2p.LoadOrCreateIdentity(filepath.Join(dataDir, p2p.IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := membership.Issue(op, id, from, until)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestCertifiedSwarmServesAndRoutesToMembersOnly: B and C serve the same
// model, A asks for it; all trust one operator, which certified A and B
// while C's certificate expired. A never asks C, and B refuses C's prompts
// as consent_refused, with or without a certificate presented.
func TestCertifiedSwarmServesAndRoutesToMembersOnly(t *testing.T) {
	op, err := membership.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	issuer := membership.FormatIssuer(op.Public().(ed25519.PublicKey))
	now := time.Now()
	var expired []byte
	peers := startSwarm(t, 3, func(i int, c *Config) {
		c.TrustIssuers = []string{issuer}
		c.Models = []string{"shared", "a-own", "shared"}[i : i+1]
		if i == 2 {
			expired = certify(t, op, c.DataDir, now.Add(-2*time.Hour), now.Add(-time.Hour))
			c.Cert = expired
			return
		}
		c.Cert = certify(t, op, c.DataDir, now.Add(-time.Minute), now.Add(time.Hour))
	})
	b, a, c := peers[0], peers[1], peers[2]
	knows(t, a, b, c)
	knows(t, c, b)
	knows(t, b, a, c)
	if e, _ := a.Catalog.Get(c.ID().String()); !bytes.Equal(e.Cert, expired) {
		t.Fatal("C's announcement does not carry its certificate")
	}

	cands, err := a.Router().Candidates(context.Background(), swarm.Query{Request: inference.Request{Model: "shared"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) != 1 || cands[0].Peer != b.ID().String() {
		t.Fatalf("A's candidates for the shared model: %+v, want only B", cands)
	}
	for i := range 8 {
		if got := ask(t, a, "shared", fmt.Sprintf("question %d", i)); len(got) != 1 || got[0] != b.ID().String() {
			t.Fatalf("prompt %d answered by %v, want B only", i, got)
		}
	}

	// C asks B directly: without credentials (B reads C's announced
	// certificate), with its expired one, and with A's.
	for _, tc := range []struct {
		name string
		cert []byte
		want error
	}{
		{"no certificate presented", nil, membership.ErrExpired},
		{"its expired certificate", expired, membership.ErrExpired},
		{"another member's certificate", a.cfg.Cert, membership.ErrWrongSubject},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), slow(10*time.Second))
		_, err := infer.CallWith(ctx, c.Host, b.ID(), inference.Request{Model: "shared", Prompt: "let me in"},
			func(inference.Chunk) error { return nil },
			infer.CallOptions{Credentials: func(peer.ID, string) inference.Credentials { return inference.Credentials{Cert: tc.cert} }})
		cancel()
		if !errors.Is(err, inference.ErrConsentRefused) {
			t.Errorf("C asks B with %s: %v, want consent_refused", tc.name, err)
		}
	}
	// A member is served by B on the same protocol, presenting its own.
	ctx, cancel := context.WithTimeout(context.Background(), slow(10*time.Second))
	defer cancel()
	if _, err := infer.CallWith(ctx, a.Host, b.ID(), inference.Request{Model: "shared", Prompt: "a member"},
		func(inference.Chunk) error { return nil }, infer.CallOptions{}); err != nil {
		t.Fatalf("A asks B without presenting (its announcement certifies it): %v", err)
	}
}

// TestMembershipAdmission: the serving hooks refuse, as consent refusals,
// callers without a valid certificate, read from the request's credentials
// or else the catalog, for infer requests and expert calls alike, and a
// certificate stops working once it expires.
func TestMembershipAdmission(t *testing.T) {
	op, _ := membership.NewKey()
	member, stranger := newTestID(t), newTestID(t)
	now := time.Now()
	cert, _ := membership.Issue(op, member, now.Add(-time.Minute), now.Add(time.Hour))
	cat := experts.NewCatalog(newTestID(t).String(), 0)
	inner := 0
	m := &members{
		check:   membership.NewChecker([]ed25519.PublicKey{op.Public().(ed25519.PublicKey)}),
		catalog: func() *experts.Catalog { return cat },
	}
	s := m.serving(Serving{
		AdmitInfer:  func(context.Context, peer.ID, *inference.Request) error { inner++; return nil },
		AdmitExpert: func(context.Context, peer.ID, expert.Call) error { inner++; return nil },
	})
	withCert := inference.WithCredentials(context.Background(), inference.Credentials{Cert: cert})
	if err := s.AdmitInfer(withCert, member, &inference.Request{}); err != nil || inner != 1 {
		t.Fatalf("a member presenting its certificate: %v (inner hook ran %d times)", err, inner)
	}
	for _, err := range []error{
		s.AdmitInfer(withCert, stranger, &inference.Request{}),
		s.AdmitInfer(context.Background(), member, &inference.Request{}), // not in the catalog
		s.AdmitExpert(context.Background(), member, expert.Call{}),
	} {
		if !errors.Is(err, inference.ErrConsentRefused) {
			t.Fatalf("admitted: %v", err)
		}
	}
	if inner != 1 {
		t.Fatalf("the inner hook ran for a refused caller")
	}
	// The catalog's certificate admits an expert call, which carries none.
	cat.Apply(&experts.Announcement{Peer: member.String(), Seq: 1, Time: now.UnixMilli(), Interval: 5000, Cert: cert}, nil, now)
	if err := s.AdmitExpert(context.Background(), member, expert.Call{}); err != nil {
		t.Fatalf("expert call from a member in the catalog: %v", err)
	}
	if !m.member()(member.String()) || m.member()(stranger.String()) {
		t.Fatal("route filter disagrees with the catalog")
	}
	m.check.Now = func() time.Time { return now.Add(2 * time.Hour) }
	if err := s.AdmitInfer(withCert, member, &inference.Request{}); !errors.Is(err, membership.ErrExpired) || !errors.Is(err, inference.ErrConsentRefused) {
		t.Fatalf("after expiry: %v", err)
	}
	if m.member()(member.String()) {
		t.Fatal("an expired member is still routed to")
	}
	// An open swarm changes nothing.
	open := &members{}
	if s := open.serving(Serving{}); s.AdmitInfer != nil || s.AdmitExpert != nil || open.member() != nil || open.credentials() != nil {
		t.Fatal("an open swarm got membership hooks")
	}
}

func newTestID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPublicKey(pub)
	return id
}
