package mwpeer

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/inference/sharding"
	"github.com/mwpeer/mwpeer/membership"
)

// members is this peer's side of a certified swarm (Config.TrustIssuers,
// Config.Cert): whom it serves and asks, and the certificate it presents.
type members struct {
	check   *membership.Checker     // nil: an open swarm, every peer is a member
	own     []byte                  // this peer's certificate (nil: none)
	catalog func() *experts.Catalog // where other peers' certificates are announced
}

// newMembers checks this peer's own certificate (it must name self) and
// the trusted issuers.
func newMembers(cfg Config, key crypto.PrivKey, catalog func() *experts.Catalog, log *slog.Logger) (*members, error) {
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	m := &members{own: cfg.Cert, catalog: catalog}
	if len(cfg.TrustIssuers) > 0 {
		keys := make([]ed25519.PublicKey, 0, len(cfg.TrustIssuers))
		for _, s := range cfg.TrustIssuers {
			k, err := membership.ParseIssuer(s)
			if err != nil {
				return nil, &FieldError{"TrustIssuers", err}
			}
			keys = append(keys, k)
		}
		m.check = membership.NewChecker(keys)
	}
	if len(cfg.Cert) == 0 {
		if m.check != nil {
			log.Warn("certified swarm without a certificate of this peer's own: members will refuse its requests")
		}
		return m, nil
	}
	c, err := membership.Parse(cfg.Cert)
	if err != nil {
		return nil, &FieldError{"Cert", err}
	}
	if err := c.Verify(self, time.Now()); errors.Is(err, membership.ErrExpired) || errors.Is(err, membership.ErrNotYetValid) {
		log.Warn("this peer's membership certificate is not valid now", "err", err)
	} else if err != nil {
		return nil, &FieldError{"Cert", fmt.Errorf("%w (this peer is %s)", err, self)}
	}
	if m.check != nil && !m.check.Trusts(c.Issuer) {
		log.Warn("this peer's certificate is from an issuer it does not trust itself", "issuer", membership.FormatIssuer(c.Issuer))
	}
	log.Info("membership certificate", "issuer", membership.FormatIssuer(c.Issuer), "until", c.NotAfter.UTC().Format(time.RFC3339))
	return m, nil
}

// admit refuses, as a consent refusal, a caller without a valid
// certificate: the one it presented with the request, else the one it
// announced.
func (m *members) admit(ctx context.Context, caller peer.ID) error {
	cert := inference.CredentialsOf(ctx).Cert
	if len(cert) == 0 {
		if e, ok := m.catalog().Get(caller.String()); ok {
			cert = e.Cert
		}
	}
	if err := m.check.Check(caller, cert); err != nil {
		return fmt.Errorf("%w: %w", inference.ErrConsentRefused, err)
	}
	return nil
}

// serving puts the membership check before s's admission hooks; with no
// trusted issuers it returns s unchanged.
func (m *members) serving(s Serving) Serving {
	if m.check == nil {
		return s
	}
	infer, exp := s.AdmitInfer, s.AdmitExpert
	s.AdmitInfer = func(ctx context.Context, caller peer.ID, req *inference.Request) error {
		if err := m.admit(ctx, caller); err != nil {
			return err
		}
		if infer != nil {
			return infer(ctx, caller, req)
		}
		return nil
	}
	s.AdmitExpert = func(ctx context.Context, caller peer.ID, c expert.Call) error {
		if err := m.admit(ctx, caller); err != nil { // expert calls carry no credentials: the catalog's
			return err
		}
		if exp != nil {
			return exp(ctx, caller, c)
		}
		return nil
	}
	return s
}

// member reports whether the catalog holds a valid certificate for id
// (swarm.Config.Member); nil when every peer is a member.
func (m *members) member() func(id string) bool {
	if m.check == nil {
		return nil
	}
	return func(id string) bool {
		e, ok := m.catalog().Get(id)
		return ok && m.entry(&e)
	}
}

func (m *members) entry(e *experts.Entry) bool {
	id, err := peer.Decode(e.Peer)
	return err == nil && m.check.Check(id, e.Cert) == nil
}

// hosts is the catalog as sharding sees it: members only, so experts of
// sharded models are asked of members only.
func (m *members) hosts(c *experts.Catalog) sharding.Catalog {
	if m.check == nil {
		return c
	}
	return memberCatalog{c, m}
}

type memberCatalog struct {
	*experts.Catalog
	m *members
}

func (c memberCatalog) Select(keep func(*experts.Entry) bool) []experts.Entry {
	return c.Catalog.Select(func(e *experts.Entry) bool { return keep(e) && c.m.entry(e) })
}

// credentials is what this peer presents to the peers it asks
// (ledger.Accounting.Credentials); nil when it has no certificate.
func (m *members) credentials() func(peer.ID, string) inference.Credentials {
	if len(m.own) == 0 {
		return nil
	}
	return func(peer.ID, string) inference.Credentials { return inference.Credentials{Cert: m.own} }
}
