package consent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/inference/infer"
)

// Config is what an Enforcer needs besides its policy.
type Config struct {
	// Key is this peer's public key: the consent tokens it signed are
	// honoured.
	Key crypto.PubKey
	// Served reports whether this peer serves model at all (nil: assume
	// so). A model it does not serve is unknown to other peers, whatever
	// its engine has.
	Served func(model string) bool
	// Balance is a peer's balance with this peer (contributors have a
	// positive one); nil: nobody is a contributor.
	Balance func(peer.ID) (int64, error)
	// Member checks a caller's membership certificate (the caller's
	// credentials are in ctx); nil: nobody is a member.
	Member func(ctx context.Context, caller peer.ID) error
	// Refused, when set, hears of every refusal (for the audit chain).
	// what is "infer", "expert" or "shard".
	Refused func(caller peer.ID, what, model string, err error)
	// UsageFile keeps what each consent token has used across restarts
	// ("": in memory only).
	UsageFile string
	Now       func() time.Time
	Log       *slog.Logger
}

// maxPeers bounds the per-peer limit state; past it, peers that are not
// already tracked are refused while limits are set (a flood of identities
// cannot grow it without bound).
const maxPeers = 100_000

// Enforcer applies a Policy and the consent tokens this peer signed to the
// work other peers ask of it. Its AdmitInfer must run last among the
// admission hooks of the infer service, its ChargeInfer should hear of each
// call answered (so a caller's next call sees what is left) and its
// CompleteInfer must hear of every call (it releases what AdmitInfer took).
type Enforcer struct {
	cfg    Config
	policy atomic.Pointer[Policy]

	mu       sync.Mutex
	peers    map[peer.ID]*peerState
	used     map[string]usage // consent token ID -> use
	verified map[string]*Grant
	dirty    bool
	flushed  time.Time
	swept    time.Time
}

type peerState struct {
	inflight int
	bucket   float64 // tokens left of the hour (TokensPerHour)
	at       time.Time
}

type usage struct {
	Used    int64 `json:"used"`
	Expires int64 `json:"exp"`
	// Held is the max_tokens of the calls admitted on the token and not
	// charged yet: concurrent calls cannot spend it twice.
	Held int64 `json:"-"`
}

// New returns an Enforcer applying p (nil: Default).
func New(p *Policy, cfg Config) (*Enforcer, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	e := &Enforcer{cfg: cfg, peers: map[peer.ID]*peerState{}, used: map[string]usage{}, verified: map[string]*Grant{}}
	if p == nil {
		p = Default()
	}
	e.policy.Store(p)
	if cfg.UsageFile != "" {
		data, err := os.ReadFile(cfg.UsageFile)
		switch {
		case os.IsNotExist(err):
		case err != nil:
			return nil, err
		default:
			if err := json.Unmarshal(data, &e.used); err != nil {
				return nil, fmt.Errorf("%s: %w", cfg.UsageFile, err)
			}
		}
	}
	return e, nil
}

// OnRefused sets Config.Refused. Call it before the Enforcer is used.
func (e *Enforcer) OnRefused(fn func(caller peer.ID, what, model string, err error)) {
	e.cfg.Refused = fn
}

// Code is the wire code of a refusal: consent_refused or quota_exceeded
// (refused for any other error).
func Code(err error) string {
	switch {
	case errors.Is(err, inference.ErrQuotaExceeded):
		return "quota_exceeded"
	case errors.Is(err, inference.ErrConsentRefused):
		return "consent_refused"
	}
	return "refused"
}

// Policy is the policy in force.
func (e *Enforcer) Policy() *Policy { return e.policy.Load() }

// SetPolicy puts p in force for every request from now on.
func (e *Enforcer) SetPolicy(p *Policy) { e.policy.Store(p) }

// Shares reports whether model is shared with other peers now.
func (e *Enforcer) Shares(model string) bool { return e.Policy().Shares(model) }

func (e *Enforcer) refuse(caller peer.ID, what, model string, err error) error {
	if e.cfg.Refused != nil {
		e.cfg.Refused(caller, what, model, err)
	}
	return err
}

func consentErr(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), inference.ErrConsentRefused)
}

func quotaErr(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), inference.ErrQuotaExceeded)
}

// common are the checks every kind of work passes: not denied, within
// hours. It returns the policy to apply.
func (e *Enforcer) common(caller peer.ID, now time.Time) (*Policy, error) {
	p := e.Policy()
	if p.deny[caller] {
		return p, consentErr("this peer does not serve %s", caller.ShortString())
	}
	if !p.InHours(now) {
		return p, consentErr("outside this peer's hours of service")
	}
	return p, nil
}

// who reports whether caller is admitted by the policy's who, and why not.
func (e *Enforcer) who(ctx context.Context, p *Policy, caller peer.ID) error {
	if p.who[Anyone] || (p.who[Allowlist] && p.allow[caller]) {
		return nil
	}
	if p.who[Contributors] && e.cfg.Balance != nil {
		if b, err := e.cfg.Balance(caller); err == nil && b > 0 {
			return nil
		}
	}
	var memberErr error
	if p.who[Members] && e.cfg.Member != nil {
		if memberErr = e.cfg.Member(ctx, caller); memberErr == nil {
			return nil
		}
	}
	if memberErr != nil {
		return consentErr("not a member: %v", memberErr)
	}
	return consentErr("this peer serves only %v", p.Who)
}

// grant returns the valid grant the caller presented for model, with what
// is left of it, or why it does not admit.
func (e *Enforcer) grant(token []byte, caller peer.ID, model string, now time.Time) (*Grant, int64, error) {
	if len(token) == 0 || e.cfg.Key == nil {
		return nil, 0, nil
	}
	text := string(token)
	e.mu.Lock()
	g := e.verified[text]
	e.mu.Unlock()
	if g == nil {
		var err error
		if g, err = ParseGrant(text); err != nil {
			return nil, 0, err
		}
		if err := g.Verify(e.cfg.Key, caller, now); err != nil {
			return nil, 0, err
		}
		e.mu.Lock()
		if len(e.verified) >= 4096 {
			clear(e.verified)
		}
		e.verified[text] = g
		e.mu.Unlock()
	}
	if g.Subject != caller.String() {
		return nil, 0, ErrGrantHolder
	}
	if now.Unix() >= g.Expires {
		return nil, 0, ErrGrantExpired
	}
	if now.Unix() < g.NotBefore {
		return nil, 0, ErrGrantEarly
	}
	if !g.Covers(model) {
		return nil, 0, ErrGrantModel
	}
	e.mu.Lock()
	u := e.used[g.ID]
	e.mu.Unlock()
	return g, g.Tokens - u.Used - u.Held, nil
}

// held returns the grant a call's token names, checked when the call was
// admitted, without checking it again: what a call used is charged to it
// even when it expired meanwhile.
func (e *Enforcer) held(token []byte) *Grant {
	if len(token) == 0 || e.cfg.Key == nil {
		return nil
	}
	e.mu.Lock()
	g := e.verified[string(token)]
	e.mu.Unlock()
	if g == nil {
		g, _ = ParseGrant(string(token))
	}
	return g
}

// holdLocked reserves a call's max_tokens on its grant, or refuses it when
// calls in flight hold what is left. e.mu is held.
func (e *Enforcer) holdLocked(g *Grant, req *inference.Request) error {
	u := e.used[g.ID]
	left := g.Tokens - u.Used - u.Held
	if left <= 0 {
		return quotaErr("consent token %s held by calls in flight", g.ID)
	}
	if req.MaxTokens == 0 || int64(req.MaxTokens) > left {
		req.MaxTokens = int(min(left, math.MaxInt32))
	}
	u.Held += int64(req.MaxTokens)
	u.Expires = g.Expires
	e.used[g.ID] = u
	return nil
}

// AdmitInfer is the infer service's admission hook (see
// infer.ServiceConfig.Admit): it refuses what the policy does not consent
// to, applies the per-peer limits, and lowers max_tokens to what the
// caller may still use.
func (e *Enforcer) AdmitInfer(ctx context.Context, caller peer.ID, req *inference.Request) error {
	now := e.cfg.Now()
	if e.cfg.Served != nil && !e.cfg.Served(req.Model) {
		return e.refuse(caller, "infer", req.Model, fmt.Errorf("%w: %.64q is not served here", inference.ErrUnknownModel, req.Model))
	}
	p, err := e.common(caller, now)
	if err != nil {
		return e.refuse(caller, "infer", req.Model, err)
	}
	if !p.Shares(req.Model) {
		return e.refuse(caller, "infer", req.Model, consentErr("%.64q is not shared", req.Model))
	}
	g, left, gerr := e.grant(inference.CredentialsOf(ctx).Grant, caller, req.Model, now)
	byGrant := g != nil && left > 0
	if !byGrant {
		if err := e.who(ctx, p, caller); err != nil {
			switch {
			case g != nil:
				err = quotaErr("consent token %s used up (%d tokens)", g.ID, g.Tokens)
			case gerr != nil:
				err = consentErr("%v", gerr)
			}
			return e.refuse(caller, "infer", req.Model, err)
		}
	}
	lim := p.Limits
	if lim.MaxTokens > 0 && (req.MaxTokens == 0 || req.MaxTokens > lim.MaxTokens) {
		req.MaxTokens = lim.MaxTokens
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if lim.Concurrent == 0 && (lim.TokensPerHour == 0 || byGrant) {
		if byGrant {
			if err := e.holdLocked(g, req); err != nil {
				return e.refuse(caller, "infer", req.Model, err)
			}
		}
		return nil
	}
	e.sweep(p, now)
	st := e.peers[caller]
	if st == nil {
		if len(e.peers) >= maxPeers {
			return e.refuse(caller, "infer", req.Model, quotaErr("serving too many peers"))
		}
		st = &peerState{bucket: float64(lim.TokensPerHour), at: now}
		e.peers[caller] = st
	}
	if lim.Concurrent > 0 && st.inflight >= lim.Concurrent {
		return e.refuse(caller, "infer", req.Model, quotaErr("%d requests in flight, the most this peer serves one peer", lim.Concurrent))
	}
	if lim.TokensPerHour > 0 && !byGrant {
		st.refill(lim.TokensPerHour, now)
		if st.bucket < 1 {
			wait := time.Duration((1 - st.bucket) / float64(lim.TokensPerHour) * float64(time.Hour)).Round(time.Second)
			return e.refuse(caller, "infer", req.Model, quotaErr("%d tokens an hour used up; more in %s", lim.TokensPerHour, wait))
		}
		if left := int(st.bucket); req.MaxTokens == 0 || req.MaxTokens > left {
			req.MaxTokens = left
		}
	}
	if byGrant {
		if err := e.holdLocked(g, req); err != nil {
			return e.refuse(caller, "infer", req.Model, err)
		}
	}
	st.inflight++
	return nil
}

func (st *peerState) refill(perHour int64, now time.Time) {
	if d := now.Sub(st.at); d > 0 {
		st.bucket = min(float64(perHour), st.bucket+float64(perHour)*d.Hours())
	}
	st.at = now
}

// sweep forgets, at most once a minute, peers with nothing in flight whose
// bucket is full again. e.mu is held.
func (e *Enforcer) sweep(p *Policy, now time.Time) {
	if now.Sub(e.swept) < time.Minute {
		return
	}
	e.swept = now
	for id, st := range e.peers {
		if st.inflight == 0 {
			st.refill(p.Limits.TokensPerHour, now)
			if st.bucket >= float64(p.Limits.TokensPerHour) {
				delete(e.peers, id)
			}
		}
	}
}

// ChargeInfer is the infer service's charge hook (see
// infer.ServiceConfig.Charge): it charges a call's tokens to the consent
// token it came with, or else to the caller's hourly tokens, before the
// caller hears the answer ended, so that its next call sees what is left.
func (e *Enforcer) ChargeInfer(ctx context.Context, c infer.Completion) {
	if c.Admitted {
		e.charge(c)
	}
}

// CompleteInfer is the infer service's completion hook: it releases the
// call's slot, and charges the call if ChargeInfer did not.
func (e *Enforcer) CompleteInfer(ctx context.Context, c infer.Completion) {
	if !c.Admitted {
		return
	}
	if !c.Charged {
		e.charge(c)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if st := e.peers[c.Caller]; st != nil && st.inflight > 0 {
		st.inflight--
	}
}

// charge charges what an admitted call used, once, and releases what it
// held of its consent token.
func (e *Enforcer) charge(c infer.Completion) {
	now := e.cfg.Now()
	tokens := int64(c.PromptTokens + c.CompletionTokens)
	g := e.held(c.Credentials.Grant)
	e.mu.Lock()
	defer e.mu.Unlock()
	if g != nil {
		if u, ok := e.used[g.ID]; ok && u.Held > 0 {
			u.Held = max(0, u.Held-int64(c.Request.MaxTokens))
			e.used[g.ID] = u
		} else {
			g = nil // not admitted on the token: the hourly tokens pay
		}
	}
	if g == nil {
		if st := e.peers[c.Caller]; st != nil {
			if perHour := e.Policy().Limits.TokensPerHour; perHour > 0 {
				st.refill(perHour, now)
				st.bucket -= float64(tokens)
			}
		}
		return
	}
	if tokens > 0 {
		u := e.used[g.ID]
		u.Used += tokens
		u.Expires = g.Expires
		e.used[g.ID] = u
		e.dirty = true
		if now.Sub(e.flushed) >= time.Second {
			e.flushLocked(now)
		}
	}
}

// AdmitExpert is the expert service's admission hook. Consent tokens cover
// prompts, not expert calls: those follow who, the deny list, the hours and
// host_experts.
func (e *Enforcer) AdmitExpert(ctx context.Context, caller peer.ID, _ expert.Call) error {
	p, err := e.common(caller, e.cfg.Now())
	if err == nil {
		if host, _, _ := p.Offers(); !host {
			err = consentErr("this peer hosts no experts for others")
		} else {
			err = e.who(ctx, p, caller)
		}
	}
	if err != nil {
		return e.refuse(caller, "expert", "", err)
	}
	return nil
}

// AdmitShard is the shard service's admission hook: seed_shards and the
// deny list.
func (e *Enforcer) AdmitShard(caller peer.ID) error {
	p := e.Policy()
	var err error
	if _, seed, _ := p.Offers(); !seed {
		err = consentErr("this peer seeds no shards")
	} else if p.deny[caller] {
		err = consentErr("this peer does not serve %s", caller.ShortString())
	}
	if err != nil {
		return e.refuse(caller, "shard", "", err)
	}
	return nil
}

// Used returns the tokens used of the consent token with ID id.
func (e *Enforcer) Used(id string) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.used[id].Used
}

// Close writes what consent tokens used.
func (e *Enforcer) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.flushLocked(e.cfg.Now())
}

// flushLocked writes the usage file if it changed, dropping tokens that
// expired. e.mu is held.
func (e *Enforcer) flushLocked(now time.Time) error {
	if !e.dirty || e.cfg.UsageFile == "" {
		return nil
	}
	for id, u := range e.used {
		if u.Expires != 0 && u.Expires < now.Unix() {
			delete(e.used, id)
		}
	}
	data, err := json.Marshal(e.used)
	if err != nil {
		return err
	}
	tmp := e.cfg.UsageFile + ".tmp"
	if err := writeSync(tmp, data); err != nil {
		e.cfg.Log.Warn("consent token use not saved", "file", e.cfg.UsageFile, "err", err)
		return err
	}
	if err := os.Rename(tmp, e.cfg.UsageFile); err != nil {
		e.cfg.Log.Warn("consent token use not saved", "file", e.cfg.UsageFile, "err", err)
		return err
	}
	e.dirty, e.flushed = false, now
	return nil
}

func writeSync(file string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
