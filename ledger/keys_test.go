package ledger

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// clock is a clock a test moves.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func keyLedger(t *testing.T) (*Ledger, *clock) {
	l := open(t)
	c := &clock{epoch}
	l.Now = c.now
	return l, c
}

func TestKeyIsAuthorizedUntilItsBudgetIsSpent(t *testing.T) {
	l, _ := keyLedger(t)
	if has, err := l.HasKeys(); err != nil || has {
		t.Fatalf("HasKeys on a new ledger: %v, %v", has, err)
	}
	secret, err := l.AddKey("alice", 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, KeyPrefix) || len(secret) < 40 {
		t.Fatalf("secret %q", secret)
	}
	if has, _ := l.HasKeys(); !has {
		t.Fatal("HasKeys after AddKey")
	}
	k, err := l.Authorize(secret)
	if err != nil || k.Name != "alice" || k.Remaining != 1000 || k.Period != DefaultKeyPeriod {
		t.Fatalf("authorize: %+v, %v", k, err)
	}
	for _, bad := range []string{"", "mwk_", secret + "x", secret[:len(secret)-1], strings.ToUpper(secret), "Bearer " + secret} {
		if _, err := l.Authorize(bad); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("Authorize(%q): %v, want ErrUnknownKey", bad, err)
		}
	}
	if err := l.Charge("alice", 600); err != nil {
		t.Fatal(err)
	}
	if k, err := l.Authorize(secret); err != nil || k.Used != 600 || k.Remaining != 400 {
		t.Fatalf("after 600 tokens: %+v, %v", k, err)
	}
	// The last request may overshoot; then the key is exhausted.
	if err := l.Charge("alice", 500); err != nil {
		t.Fatal(err)
	}
	k, err = l.Authorize(secret)
	if !errors.Is(err, ErrQuotaExhausted) || k.Name != "alice" || k.Remaining != 0 || k.Used != 1100 {
		t.Fatalf("exhausted: %+v, %v", k, err)
	}
	if err := l.Charge("bob", 1); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("charge of an unknown key: %v", err)
	}
	if err := l.Charge("alice", -1); err == nil {
		t.Fatal("a negative charge")
	}
}

// TestUnusedBudgetRollsOverOnePeriodOnly: what a period leaves unused is
// usable in the next one and no later, so a key never holds more than two
// budgets; spending uses the carried part first.
func TestUnusedBudgetRollsOverOnePeriodOnly(t *testing.T) {
	l, c := keyLedger(t)
	const day = 24 * time.Hour
	secret, err := l.AddKey("k", 100, day)
	if err != nil {
		t.Fatal(err)
	}
	remaining := func() KeyInfo {
		t.Helper()
		k, err := l.Authorize(secret)
		if err != nil && !errors.Is(err, ErrQuotaExhausted) {
			t.Fatal(err)
		}
		return k
	}
	steps := []struct {
		advance       time.Duration
		charge        int64
		carried, left int64
		what          string
	}{
		{0, 30, 0, 70, "period 0: 30 of 100 used"},
		{day, 0, 70, 170, "period 1: 70 carried"},
		{0, 50, 70, 120, "period 1: 50 used, from the carried 70 first"},
		{day, 0, 100, 200, "period 2: period 1's own budget was untouched: 100 carried, 200 in all"},
		{day, 0, 100, 200, "period 3: still at most one period carried"},
		{10 * day, 0, 100, 200, "period 13: after idle periods, one budget carried"},
		{0, 150, 100, 50, "period 13: 150 used"},
		{day, 0, 50, 150, "period 14: half its own budget was left"},
		{0, 400, 50, 0, "period 14: overspent"},
		{day, 0, 0, 100, "period 15: nothing carried, overspending is not carried as debt"},
		{day - time.Millisecond, 0, 0, 100, "a millisecond before period 16: still 15"},
		{time.Millisecond, 0, 100, 200, "period 16 begins exactly a period after 15, which was not used"},
	}
	for _, s := range steps {
		c.add(s.advance)
		if s.charge > 0 {
			if err := l.Charge("k", s.charge); err != nil {
				t.Fatal(err)
			}
		}
		k := remaining()
		if k.Carried != s.carried || k.Remaining != s.left {
			t.Fatalf("%s: carried %d, remaining %d; want %d, %d", s.what, k.Carried, k.Remaining, s.carried, s.left)
		}
		if k.Remaining > 2*k.Budget {
			t.Fatalf("%s: remaining %d above twice the budget", s.what, k.Remaining)
		}
	}
	if err := l.Charge("k", 1); err != nil {
		t.Fatal(err)
	}
	k := remaining()
	if !k.Renews.Equal(k.Start.Add(day)) || k.Start.Sub(k.Created)%day != 0 {
		t.Fatalf("period %s to %s of a key made %s", k.Start, k.Renews, k.Created)
	}
	// A clock that goes back does not reopen an old period.
	c.add(-5 * day)
	if k2 := remaining(); !k2.Start.Equal(k.Start) || k2.Used != 1 {
		t.Fatalf("clock went back: period moved from %s to %s, used %d", k.Start, k2.Start, k2.Used)
	}
}

func TestKeysAreListedAndRemoved(t *testing.T) {
	l, c := keyLedger(t)
	sa, err := l.AddKey("alice", 1000, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute)
	if _, err := l.AddKey("bob", 50, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddKey("alice", 1, 0); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("second alice: %v", err)
	}
	l.Charge("bob", 20)
	ks, err := l.Keys()
	if err != nil || len(ks) != 2 {
		t.Fatalf("keys %+v, %v", ks, err)
	}
	if ks[0].Name != "alice" || ks[0].Budget != 1000 || ks[0].Period != time.Hour || !ks[0].Created.Equal(epoch) ||
		ks[1].Name != "bob" || ks[1].Used != 20 || ks[1].Remaining != 30 || !ks[1].Renews.Equal(epoch.Add(time.Minute+DefaultKeyPeriod)) {
		t.Fatalf("keys %+v", ks)
	}
	if err := l.RemoveKey("alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Authorize(sa); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("removed key: %v", err)
	}
	if err := l.RemoveKey("alice"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("removing twice: %v", err)
	}
	if err := l.RemoveKey("bob"); err != nil {
		t.Fatal(err)
	}
	if has, _ := l.HasKeys(); has {
		t.Fatal("HasKeys after removing every key")
	}
}

func TestBadKeysAreRefused(t *testing.T) {
	l, _ := keyLedger(t)
	for _, c := range []struct {
		name   string
		budget int64
		period time.Duration
	}{
		{"", 10, 0},
		{"has space", 10, 0},
		{strings.Repeat("x", 65), 10, 0},
		{"zero", 0, 0},
		{"negative", -5, 0},
		{"huge", MaxCost + 1, 0},
		{"short", 10, time.Millisecond},
		{"backwards", 10, -time.Hour},
	} {
		if _, err := l.AddKey(c.name, c.budget, c.period); err == nil {
			t.Errorf("AddKey(%q, %d, %s) succeeded", c.name, c.budget, c.period)
		}
	}
	if ks, _ := l.Keys(); len(ks) != 0 {
		t.Fatalf("refused keys were stored: %+v", ks)
	}
}

// TestSecretIsNotStored: the file holds the key's hash, never its secret.
func TestSecretIsNotStored(t *testing.T) {
	l, _ := keyLedger(t)
	secret, err := l.AddKey("alice", 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	l.r.QueryRow("SELECT count(*) FROM api_keys WHERE CAST(hash AS TEXT) LIKE ? OR name LIKE ?", "%"+secret[4:]+"%", "%"+secret[4:]+"%").Scan(&n)
	if n != 0 {
		t.Fatal("the secret is in the database")
	}
}
