package swarm

import (
	"context"
	"math/rand/v2"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/routing"
)

// MinTrust is the trust score (trust.Score.Value) below which a peer is not
// raced: it leaves the primaries and is tried only after every other
// candidate. Value is 1/(1+failures), so 0.2 is more than four recent
// weighted failures: a burst of bad luck decays below it within minutes,
// while one wrong answer (worth 20, forgiven over days) keeps a peer below
// it for about four days after its exclusion ends. Excluded peers (convicted
// of a wrong answer, see trust.Store.Convict) are not asked at all.
const MinTrust = 0.2

// trusted keeps peers with a bad score from being chosen: excluded peers are
// dropped, peers below MinTrust move behind every spare, suspects
// (trust.Store.Suspect: a failed ping, a stall) behind those, and the primaries
// are refilled from the spares so the race keeps its size. Fastest locks onto
// the first primary to produce a token, which must never be a convicted one.
func (r *Router) trusted(primary, spares []inference.Target) ([]inference.Target, []inference.Target) {
	k := len(primary)
	var good, bad, suspects []inference.Target
	for _, t := range append(append([]inference.Target(nil), primary...), spares...) {
		sc := r.cfg.Trust.Score(t.Name)
		switch {
		case r.cfg.Trust.Excluded(t.Name):
			r.cfg.Log.Debug("not asking an excluded peer", "peer", t.Name, "reasons", sc.Reasons)
		case !sc.Suspect.IsZero():
			suspects = append(suspects, t)
		case sc.Value < MinTrust:
			bad = append(bad, t)
		default:
			good = append(good, t)
		}
	}
	// Nobody better: the distrusted may still answer, then the suspects
	// (frozen or gone, maybe, but maybe back).
	bad = append(bad, suspects...)
	if len(good) == 0 {
		good, bad = bad, nil
	}
	n := min(k, len(good))
	return good[:n], append(good[n:], bad...)
}

// verifies reports whether q's answer is to be verified: the client asked,
// or the request falls in Config.VerifyShare.
func (r *Router) verifies(q Query) bool {
	return q.Verify || (r.cfg.VerifyShare > 0 && rand.Float64() < r.cfg.VerifyShare)
}

// verifyTargets are the experts that may verify each other's answers to the
// decision's prompt: the largest set, in rank order, of trusted candidates
// serving one model with the same digest, engine and kernel set (as
// announced; a model without a digest verifies nothing). The kernel set
// matters because the embedded engine's sets (avx2, neon, generic) differ
// in the last bits, and a near-tie greedy token can flip between them:
// honest peers of two sets need not agree token for token. Among sets with at least three members
// (one to decide a disagreement) or else two, the one whose best member ranks
// highest wins.
func (r *Router) verifyTargets(d routing.Decision, cands []Candidate) []inference.Target {
	type key struct{ peer, model string }
	models := map[key]experts.Model{}
	for _, m := range r.cfg.Local.Models() {
		models[key{r.cfg.Self.String(), m.Name}] = m
	}
	for _, e := range r.cfg.Catalog.Select(func(e *experts.Entry) bool { return e.Serves("") }) {
		for _, m := range e.Models {
			models[key{e.Peer, m.Name}] = m
		}
	}
	byPeer := make(map[string]Candidate, len(cands))
	for _, c := range cands {
		byPeer[c.Peer] = c
	}
	type group struct {
		model, digest, engine, kernels string
		targets                        []inference.Target
	}
	var groups []*group
	for _, s := range d.Candidates {
		m, ok := models[key{s.Peer, s.Model}]
		c, known := byPeer[s.Peer]
		if !ok || !known || m.Digest == "" {
			continue
		}
		if sc := r.cfg.Trust.Score(s.Peer); r.cfg.Trust.Excluded(s.Peer) || sc.Value < MinTrust {
			continue
		}
		var g *group
		for _, o := range groups {
			if o.model == m.Name && o.digest == m.Digest && o.engine == m.Engine && o.kernels == m.Kernels {
				g = o
			}
		}
		if g == nil {
			g = &group{model: m.Name, digest: m.Digest, engine: m.Engine, kernels: m.Kernels}
			groups = append(groups, g)
		}
		g.targets = append(g.targets, r.target(c, false))
	}
	for _, least := range []int{3, 2} {
		for _, g := range groups {
			if len(g.targets) >= least {
				return g.targets
			}
		}
	}
	return nil
}

// completeVerified answers q with inference's Verify over targets.
func (r *Router) completeVerified(ctx context.Context, q Query, targets []inference.Target, emit func(string, inference.Chunk) error) (Answer, error) {
	req := q.Request
	if isAny(req.Model) {
		req.Model = "" // each target fills in its own model
	}
	res, err := r.cfg.Dispatch.Verify(ctx, targets, req, emit)
	if err != nil {
		return Answer{}, err
	}
	return Answer{Model: q.Request.Model, Text: res.Text, Final: res.Final, Experts: res.Experts, Verified: true}, nil
}
