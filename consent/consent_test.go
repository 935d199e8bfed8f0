package consent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/inference/infer"
)

func newKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return k, id
}

func mustParse(t testing.TB, text string) *Policy {
	t.Helper()
	p, err := Parse([]byte(text), "toml")
	if err != nil {
		t.Fatalf("parse %q: %v", text, err)
	}
	return p
}

// clock is a settable time for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestParseRejectsBadPolicies(t *testing.T) {
	_, id := newKey(t)
	for _, tc := range []struct{ name, text, want string }{
		{"unknown key", `shares = ["x"]`, "unknown key"},
		{"unknown who", `who = ["friends"]`, "unknown value"},
		{"bad peer", `allow = ["nope"]`, "bad peer ID"},
		{"allowlist without peers", `who = ["allowlist"]`, "allow lists no peer"},
		{"negative limit", "[limits]\nconcurrent = -1", "negative"},
		{"bad hours", `hours = ["9-17"]`, "HH:MM"},
		{"empty window", `hours = ["09:00-09:00"]`, "empty"},
		{"bad day", `days = ["someday"]`, "unknown day"},
		{"bad zone", `timezone = "Mars/Olympus"`, "timezone"},
		{"bad pattern", `share = ["[x"]`, "pattern"},
		{"not toml", `share = [`, ""},
		{"unknown limit", "[limits]\nrps = 3", "unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text), "toml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one containing %q", err, tc.want)
			}
		})
	}
	// The same policy in YAML and TOML.
	y, err := Parse([]byte("share: [\"llama*\"]\nwho: [allowlist]\nallow: ["+id.String()+"]\nlimits:\n  concurrent: 2\n  max_tokens: 100\n"), "yaml")
	if err != nil {
		t.Fatal(err)
	}
	tm := mustParse(t, "share = [\"llama*\"]\nwho = [\"allowlist\"]\nallow = [\""+id.String()+"\"]\n[limits]\nconcurrent = 2\nmax_tokens = 100\n")
	if y.Limits != tm.Limits || !y.allow[id] || !tm.allow[id] || !y.Shares("llama3") || y.Shares("qwen") {
		t.Fatalf("yaml %+v and toml %+v differ", y, tm)
	}
	if _, err := Parse([]byte("who: [anyone]\nbogus: 1\n"), "yaml"); err == nil {
		t.Fatal("unknown yaml key accepted")
	}
	if p, err := Parse(nil, "yaml"); err != nil || !p.who[Anyone] {
		t.Fatalf("empty yaml: %v", err)
	}
}

func TestHoursOfService(t *testing.T) {
	p := mustParse(t, "hours = [\"22:00-06:00\", \"12:00-13:00\"]\ndays = [\"mon\", \"tue\"]\ntimezone = \"Europe/Paris\"")
	paris, _ := time.LoadLocation("Europe/Paris")
	at := func(day, hh, mm int) time.Time { return time.Date(2026, 11, day, hh, mm, 0, 0, paris) } // 30 Nov 2026 is a Monday
	for _, tc := range []struct {
		t    time.Time
		want bool
	}{
		{at(30, 23, 0), true}, {at(30, 5, 59), true}, {at(30, 6, 0), false}, {at(30, 12, 30), true},
		{at(30, 13, 0), false}, {at(29, 23, 0), false}, // Sunday
		{at(30, 22, 0).UTC(), true}, // the zone is the policy's, not the time's
	} {
		if got := p.InHours(tc.t); got != tc.want {
			t.Errorf("%s: in hours %v, want %v", tc.t, got, tc.want)
		}
	}
}

func TestShareAndLocal(t *testing.T) {
	p := mustParse(t, `share = ["llama*", "qwen*"]`+"\n"+`local = ["llama3:70b"]`)
	for model, want := range map[string]bool{"llama3": true, "qwen2": true, "llama3:70b": false, "mistral": false} {
		if p.Shares(model) != want {
			t.Errorf("shares %s: %v, want %v", model, !want, want)
		}
	}
	if !Default().Shares("anything") {
		t.Error("the default policy shares nothing")
	}
}

func admit(e *Enforcer, caller peer.ID, req inference.Request, grant string) (inference.Request, error) {
	ctx := context.Background()
	if grant != "" {
		ctx = inference.WithCredentials(ctx, inference.Credentials{Grant: []byte(grant)})
	}
	err := e.AdmitInfer(ctx, caller, &req)
	return req, err
}

func complete(e *Enforcer, caller peer.ID, req inference.Request, grant string, tokens int) {
	c := infer.Completion{Caller: caller, Model: req.Model, Request: req, Admitted: true, CompletionTokens: tokens}
	if grant != "" {
		c.Credentials.Grant = []byte(grant)
	}
	e.CompleteInfer(context.Background(), c)
}

func TestWhoMayUse(t *testing.T) {
	_, friend := newKey(t)
	_, stranger := newKey(t)
	_, rich := newKey(t)
	_, member := newKey(t)
	_, enemy := newKey(t)
	p := mustParse(t, `who = ["allowlist", "contributors", "members"]
allow = ["`+friend.String()+`", "`+enemy.String()+`"]
deny = ["`+enemy.String()+`"]`)
	var refusals []string
	e, _ := New(p, Config{
		Served:  func(m string) bool { return m != "hidden" },
		Balance: func(id peer.ID) (int64, error) { return map[peer.ID]int64{rich: 5, stranger: -3}[id], nil },
		Member: func(_ context.Context, id peer.ID) error {
			if id == member {
				return nil
			}
			return errors.New("no certificate")
		},
		Refused: func(_ peer.ID, what, model string, err error) { refusals = append(refusals, what+" "+model) },
	})
	req := inference.Request{Model: "m", Prompt: "hi"}
	for _, tc := range []struct {
		name   string
		caller peer.ID
		model  string
		want   error
	}{
		{"allowlisted", friend, "m", nil},
		{"contributor", rich, "m", nil},
		{"member", member, "m", nil},
		{"stranger", stranger, "m", inference.ErrConsentRefused},
		{"denied even when listed", enemy, "m", inference.ErrConsentRefused},
		{"model not served here", friend, "hidden", inference.ErrUnknownModel},
	} {
		r := req
		r.Model = tc.model
		_, err := admit(e, tc.caller, r, "")
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if err != nil && !errors.Is(err, inference.ErrRefused) && !errors.Is(err, inference.ErrUnknownModel) {
			t.Errorf("%s: %v does not wrap ErrRefused", tc.name, err)
		}
	}
	if len(refusals) != 3 {
		t.Errorf("refusals heard: %v, want 3", refusals)
	}
	// Expert calls follow who and host_experts.
	if err := e.AdmitExpert(context.Background(), stranger, expert.Call{}); !errors.Is(err, inference.ErrConsentRefused) {
		t.Errorf("stranger's expert call: %v", err)
	}
	if err := e.AdmitExpert(context.Background(), friend, expert.Call{}); err != nil {
		t.Errorf("friend's expert call: %v", err)
	}
	e.SetPolicy(mustParse(t, "host_experts = false\nseed_shards = false"))
	if err := e.AdmitExpert(context.Background(), friend, expert.Call{}); !errors.Is(err, inference.ErrConsentRefused) {
		t.Errorf("expert call with host_experts off: %v", err)
	}
	if err := e.AdmitShard(friend); !errors.Is(err, inference.ErrConsentRefused) {
		t.Errorf("shard with seed_shards off: %v", err)
	}
}

func TestPerPeerLimits(t *testing.T) {
	_, a := newKey(t)
	_, b := newKey(t)
	clk := &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	e, _ := New(mustParse(t, "[limits]\nconcurrent = 2\nmax_tokens = 100\ntokens_per_hour = 250"), Config{Now: clk.Now})
	req := inference.Request{Model: "m", Prompt: "hi"}

	// max_tokens: none asked or too many asked is lowered; fewer kept.
	r, err := admit(e, a, req, "")
	if err != nil || r.MaxTokens != 100 {
		t.Fatalf("first: %v, max_tokens %d, want 100", err, r.MaxTokens)
	}
	small := req
	small.MaxTokens = 10
	if r2, err := admit(e, a, small, ""); err != nil || r2.MaxTokens != 10 {
		t.Fatalf("second: %v, max_tokens %d, want 10", err, r2.MaxTokens)
	}
	// Concurrency: a third in flight is over the limit; another peer is not.
	if _, err := admit(e, a, req, ""); !errors.Is(err, inference.ErrQuotaExceeded) {
		t.Fatalf("third in flight: %v, want quota exceeded", err)
	}
	if _, err := admit(e, b, req, ""); err != nil {
		t.Fatalf("another peer: %v", err)
	}
	complete(e, a, r, "", 100)
	complete(e, a, small, "", 10)
	// 110 of 250 used: the next request is capped at what is left.
	r3, err := admit(e, a, req, "")
	if err != nil || r3.MaxTokens != 100 {
		t.Fatalf("after two: %v, max_tokens %d", err, r3.MaxTokens)
	}
	complete(e, a, r3, "", 100)
	r4, err := admit(e, a, req, "")
	if err != nil || r4.MaxTokens != 40 {
		t.Fatalf("capped by the hour: %v, max_tokens %d, want 40", err, r4.MaxTokens)
	}
	complete(e, a, r4, "", 40)
	if _, err := admit(e, a, req, ""); !errors.Is(err, inference.ErrQuotaExceeded) || !strings.Contains(err.Error(), "more in") {
		t.Fatalf("hour used up: %v", err)
	}
	// The bucket refills continuously: 250 an hour is 25 in 6 minutes.
	clk.Add(6 * time.Minute)
	if r5, err := admit(e, a, req, ""); err != nil || r5.MaxTokens != 25 {
		t.Fatalf("after 6 minutes: %v, max_tokens %d, want 25", err, r5.MaxTokens)
	}
}

func TestConsentTokens(t *testing.T) {
	key, self := newKey(t)
	otherKey, _ := newKey(t)
	_, holder := newKey(t)
	_, thief := newKey(t)
	clk := &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	usage := filepath.Join(t.TempDir(), "grants.json")
	p := mustParse(t, `who = ["grants"]`)
	e, err := New(p, Config{Key: key.GetPublic(), Now: clk.Now, UsageFile: usage})
	if err != nil {
		t.Fatal(err)
	}
	_ = self
	tok, err := Issue(key, holder, "llama*", 50, clk.Now(), clk.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := Issue(otherKey, holder, "llama*", 50, clk.Now(), clk.Now().Add(time.Hour))
	// A token whose claims were edited (more tokens) keeps its old signature.
	g, _ := ParseGrant(tok)
	edited := strings.Replace(tok, g.Text[len(grantPrefix):strings.LastIndex(g.Text, ".")], b64(strings.Replace(string(g.data), `"tokens":50`, `"tokens":5000`, 1)), 1)

	req := inference.Request{Model: "llama3", Prompt: "hi"}
	if _, err := admit(e, holder, req, ""); !errors.Is(err, inference.ErrConsentRefused) {
		t.Fatalf("no token: %v", err)
	}
	for name, bad := range map[string]string{"forged": forged, "edited": edited, "garbage": "mwgrant1.xx.yy", "empty claims": "mwgrant1.e30.AA"} {
		if _, err := admit(e, holder, req, bad); !errors.Is(err, inference.ErrConsentRefused) {
			t.Errorf("%s token: %v, want consent refused", name, err)
		}
	}
	if _, err := admit(e, thief, req, tok); !errors.Is(err, inference.ErrConsentRefused) || !strings.Contains(err.Error(), "another peer") {
		t.Errorf("someone else's token: %v", err)
	}
	other := req
	other.Model = "qwen"
	if _, err := admit(e, holder, other, tok); !errors.Is(err, inference.ErrConsentRefused) || !strings.Contains(err.Error(), "another model") {
		t.Errorf("other model: %v", err)
	}
	// Within scope: served, max_tokens capped to what is left, use counted.
	r, err := admit(e, holder, req, tok)
	if err != nil || r.MaxTokens != 50 {
		t.Fatalf("in scope: %v, max_tokens %d", err, r.MaxTokens)
	}
	// A call in flight holds its max_tokens: a concurrent one cannot spend
	// them too.
	if _, err := admit(e, holder, req, tok); !errors.Is(err, inference.ErrQuotaExceeded) {
		t.Fatalf("while the first call holds the whole token: %v, want quota exceeded", err)
	}
	complete(e, holder, r, tok, 30)
	if r, err = admit(e, holder, req, tok); err != nil || r.MaxTokens != 20 {
		t.Fatalf("second: %v, max_tokens %d, want 20", err, r.MaxTokens)
	}
	complete(e, holder, r, tok, 20)
	if _, err := admit(e, holder, req, tok); !errors.Is(err, inference.ErrQuotaExceeded) {
		t.Fatalf("over budget: %v, want quota exceeded", err)
	}
	// Holds split a token between concurrent calls, and charging releases
	// them.
	tok3, _ := Issue(key, holder, "llama3", 50, clk.Now(), clk.Now().Add(time.Hour))
	small := req
	small.MaxTokens = 10
	r1, err := admit(e, holder, small, tok3)
	if err != nil || r1.MaxTokens != 10 {
		t.Fatalf("first of two: %v, max_tokens %d", err, r1.MaxTokens)
	}
	r2, err := admit(e, holder, req, tok3)
	if err != nil || r2.MaxTokens != 40 {
		t.Fatalf("second of two: %v, max_tokens %d, want 40", err, r2.MaxTokens)
	}
	complete(e, holder, r1, tok3, 4)
	complete(e, holder, r2, tok3, 6)
	if r, err := admit(e, holder, req, tok3); err != nil || r.MaxTokens != 40 {
		t.Fatalf("after both: %v, max_tokens %d, want 40", err, r.MaxTokens)
	}
	// What was used survives a restart.
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := New(p, Config{Key: key.GetPublic(), Now: clk.Now, UsageFile: usage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admit(e2, holder, req, tok); !errors.Is(err, inference.ErrQuotaExceeded) || e2.Used(g.ID) != 50 {
		t.Fatalf("after restart: %v, used %d", err, e2.Used(g.ID))
	}
	// Expiry.
	tok2, _ := Issue(key, holder, "llama3", 50, clk.Now(), clk.Now().Add(time.Minute))
	if _, err := admit(e2, holder, req, tok2); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	clk.Add(time.Minute)
	if _, err := admit(e2, holder, req, tok2); !errors.Is(err, inference.ErrConsentRefused) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	// Issue checks its input.
	if _, err := Issue(key, holder, "m", 0, clk.Now(), clk.Now().Add(time.Hour)); err == nil {
		t.Error("zero tokens issued")
	}
	if _, err := Issue(key, holder, "m", 5, clk.Now(), clk.Now()); err == nil {
		t.Error("token expiring now issued")
	}
}

func TestWalletPresentsTheIssuersToken(t *testing.T) {
	k1, s1 := newKey(t)
	k2, s2 := newKey(t)
	_, me := newKey(t)
	now := time.Now()
	a, _ := Issue(k1, me, "llama*", 10, now, now.Add(time.Hour))
	b, _ := Issue(k2, me, "qwen", 10, now, now.Add(time.Hour))
	w, err := NewWallet([]string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if string(w.For(s1, "llama3", now)) != a || string(w.For(s2, "qwen", now)) != b || w.For(s1, "qwen", now) != nil || w.For(s2, "qwen", now.Add(2*time.Hour)) != nil {
		t.Fatal("wallet presents the wrong token")
	}
	if _, err := NewWallet([]string{"junk"}); err == nil {
		t.Fatal("junk token accepted")
	}
}

func TestReloadKeepsOldPolicyOnError(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.toml")
	if err := os.WriteFile(file, []byte(`share = ["a"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	e, _ := New(nil, Config{})
	changed := make(chan *Policy, 4)
	f := &File{Path: file, Enforcer: e, Changed: func(p *Policy) { changed <- p }}
	if err := f.Reload(); err != nil || !e.Shares("a") || e.Shares("b") {
		t.Fatalf("first load: %v", err)
	}
	<-changed
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// An invalid file keeps the old policy.
	if err := os.WriteFile(file, []byte(`share = [`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); err == nil || !e.Shares("a") {
		t.Fatalf("invalid file: %v; shares a: %v", err, e.Shares("a"))
	}
	// A change is picked up by the watcher, also when the file is replaced
	// (as editors do). The watcher may not be watching yet when the first
	// replacement lands: replace until it is seen.
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		tmp := filepath.Join(dir, "new")
		if err := os.WriteFile(tmp, []byte(fmt.Sprintf("share = [\"b\"] # %d", i)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-changed:
			if !p.Shares("b") || !e.Shares("b") || e.Shares("a") {
				t.Fatal("the new policy is not in force")
			}
			return
		case <-deadline:
			t.Fatal("the change was not picked up")
		case <-tick.C:
		}
	}
}

func BenchmarkAdmitInfer(b *testing.B) {
	_, a := newKey(b)
	_, friend := newKey(b)
	e, _ := New(mustParse(b, "who = [\"allowlist\"]\nallow = [\""+friend.String()+"\", \""+a.String()+"\"]\nhours = [\"00:00-24:00\"]\n[limits]\nconcurrent = 4\nmax_tokens = 100\ntokens_per_hour = 1000000000"), Config{})
	req := inference.Request{Model: "m", Prompt: "hi"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		r := req
		if err := e.AdmitInfer(ctx, a, &r); err != nil {
			b.Fatal(err)
		}
		e.CompleteInfer(ctx, infer.Completion{Caller: a, Model: "m", Request: r, Admitted: true, CompletionTokens: 1})
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestCodeOfRefusals(t *testing.T) {
	for err, want := range map[error]string{
		quotaErr("x"): "quota_exceeded", consentErr("y"): "consent_refused", errors.New("z"): "refused",
	} {
		if got := Code(err); got != want {
			t.Errorf("Code(%v) = %s, want %s", err, got, want)
		}
	}
}
