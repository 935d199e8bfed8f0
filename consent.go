package mwpeer

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/consent"
	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/inference/infer"
)

// GrantUsageFile, in the data dir, keeps what each consent token this peer
// signed has used.
const GrantUsageFile = "grants-used.json"

// openConsent loads the policy file (none: consent.Default) and builds the
// Enforcer that applies it; the Enforcer's hooks ask p for what it serves
// and for balances once p is running, and mem who is a member.
func (p *Peer) openConsent(cfg Config, key crypto.PrivKey, mem *members) error {
	pol := consent.Default()
	if cfg.PolicyFile != "" {
		var err error
		if pol, err = consent.Load(cfg.PolicyFile); err != nil {
			return &FieldError{Field: "PolicyFile", Err: err}
		}
	}
	e, err := consent.New(pol, consent.Config{
		Key: key.GetPublic(),
		Served: func(model string) bool {
			return slices.ContainsFunc(p.Models(), func(m experts.Model) bool { return m.Name == model })
		},
		Balance: func(id peer.ID) (int64, error) {
			b, err := p.ledger.Balance(id)
			return b.Balance, err
		},
		Member: func(ctx context.Context, caller peer.ID) error {
			if mem.check == nil {
				return errors.New("no --trust-issuer: this peer checks no certificates")
			}
			return mem.admit(ctx, caller)
		},
		UsageFile: filepath.Join(cfg.DataDir, GrantUsageFile),
		Log:       cfg.Logger,
	})
	if err != nil {
		return &FieldError{Field: "DataDir", Err: err}
	}
	p.consent = e
	p.parts.Defer("consent", e.Close)
	if cfg.PolicyFile != "" {
		p.policy = &consent.File{Path: cfg.PolicyFile, Enforcer: e, Members: len(cfg.TrustIssuers) > 0, Log: cfg.Logger,
			Changed: func(*consent.Policy) { p.republish() }}
		if err := p.policy.Reload(); err != nil {
			return &FieldError{Field: "PolicyFile", Err: err}
		}
	}
	return nil
}

// withConsent runs the Enforcer after s's own admission hooks (so it only
// counts calls they let through) and before its charge and completion hooks.
func withConsent(s Serving, e *consent.Enforcer) Serving {
	admitInfer, admitExpert, charge, complete := s.AdmitInfer, s.AdmitExpert, s.ChargeInfer, s.CompleteInfer
	s.AdmitInfer = func(ctx context.Context, caller peer.ID, req *inference.Request) error {
		if admitInfer != nil {
			if err := admitInfer(ctx, caller, req); err != nil {
				return err
			}
		}
		return e.AdmitInfer(ctx, caller, req)
	}
	s.AdmitExpert = func(ctx context.Context, caller peer.ID, c expert.Call) error {
		if admitExpert != nil {
			if err := admitExpert(ctx, caller, c); err != nil {
				return err
			}
		}
		return e.AdmitExpert(ctx, caller, c)
	}
	s.ChargeInfer = func(ctx context.Context, c infer.Completion) {
		e.ChargeInfer(ctx, c)
		if charge != nil {
			charge(ctx, c)
		}
	}
	s.CompleteInfer = func(ctx context.Context, c infer.Completion) {
		e.CompleteInfer(ctx, c)
		if complete != nil {
			complete(ctx, c)
		}
	}
	return s
}

// ReloadPolicy reads the policy file again (the command calls it on
// SIGHUP). An invalid file keeps the policy in force and returns why.
func (p *Peer) ReloadPolicy() error {
	if p.policy == nil {
		return errors.New("no policy file (--policy)")
	}
	return p.policy.Reload()
}

// Policy is the consent policy in force.
func (p *Peer) Policy() *consent.Policy { return p.consent.Policy() }

// shared keeps the models the policy shares with other peers.
func (p *Peer) shared(models []experts.Model) []experts.Model {
	return slices.DeleteFunc(slices.Clone(models), func(m experts.Model) bool { return !p.consent.Shares(m.Name) })
}

// republish announces and advertises what this peer shares now.
func (p *Peer) republish() {
	if p.Gossip == nil {
		return
	}
	p.advertise(p.Models())
	p.Gossip.Changed()
}

// grants presents, with each request, the consent token the asked peer
// signed for the model, if this peer holds one.
func grants(w *consent.Wallet, next func(peer.ID, string) inference.Credentials) func(peer.ID, string) inference.Credentials {
	if w == nil {
		return next
	}
	return func(server peer.ID, model string) inference.Credentials {
		var c inference.Credentials
		if next != nil {
			c = next(server, model)
		}
		c.Grant = w.For(server, model, time.Now())
		return c
	}
}
