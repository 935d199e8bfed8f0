package ledger

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// KeyPrefix starts every API key secret, so that a leaked one is
// recognisable (and secret scanners can find it).
const KeyPrefix = "mwk_"

// DefaultKeyPeriod is a key's budget period when AddKey is given none.
const DefaultKeyPeriod = 720 * time.Hour

// Errors of API keys.
var (
	ErrUnknownKey     = errors.New("unknown API key")
	ErrQuotaExhausted = errors.New("API key budget exhausted for this period")
	ErrKeyExists      = errors.New("an API key of that name exists")
)

// KeyInfo describes an API key; the secret itself is not kept.
type KeyInfo struct {
	Name    string
	Budget  int64         // tokens per period
	Period  time.Duration // the key's periods start at Created and follow each other
	Created time.Time
	// The current period: [Start, Renews).
	Start, Renews time.Time
	Carried       int64 // unused budget of the previous period, usable in this one
	Used          int64 // tokens charged in this period
	Remaining     int64 // Budget + Carried - Used, at least 0
}

// AddKey makes an API key named name with a budget of tokens per period
// (DefaultKeyPeriod when period is 0) and returns its secret, which is shown
// this once: only its hash is stored.
func (l *Ledger) AddKey(name string, budget int64, period time.Duration) (secret string, err error) {
	if err := validKeyName(name); err != nil {
		return "", err
	}
	if period == 0 {
		period = DefaultKeyPeriod
	}
	switch {
	case budget <= 0:
		return "", fmt.Errorf("API key %s: budget %d: want a positive number of tokens", name, budget)
	case budget > MaxCost:
		return "", fmt.Errorf("API key %s: budget %d is too large", name, budget)
	case period < time.Second:
		return "", fmt.Errorf("API key %s: period %s: want at least 1s", name, period)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	secret = KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	h := sha256.Sum256([]byte(secret))
	ctx := context.Background()
	err = l.write(ctx, func(tx *sql.Tx) error {
		var exists bool
		if err := tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM api_keys WHERE name = ?)", name).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return fmt.Errorf("%w: %s", ErrKeyExists, name)
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO api_keys (name, hash, budget, period, created) VALUES (?, ?, ?, ?, ?)",
			name, h[:], budget, int64(period), l.Now().UnixMilli())
		return err
	})
	if err != nil {
		return "", fmt.Errorf("add API key: %w", err)
	}
	return secret, nil
}

func validKeyName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("API key name %.70q: want 1 to 64 characters", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-@", c)) {
			return fmt.Errorf("API key name %q: use letters, digits and . _ - @", name)
		}
	}
	return nil
}

// key is an api_keys row.
type key struct {
	name                    string
	budget, period, created int64
	epoch, used, carry      int64
}

const keyColumns = "name, budget, period, created, epoch, used, carry"

func (k *key) scan(row interface{ Scan(...any) error }) error {
	return row.Scan(&k.name, &k.budget, &k.period, &k.created, &k.epoch, &k.used, &k.carry)
}

// roll moves k to the period that holds now. Only the previous period's
// own unused budget carries over, and spending uses the carried part first,
// so at most one period's budget carries and Remaining is at most twice the
// budget. A clock that went back keeps the period k has.
func (k *key) roll(now time.Time) {
	elapsed := now.UnixMilli() - k.created
	if elapsed < 0 {
		return
	}
	epoch := elapsed / max(k.period/int64(time.Millisecond), 1)
	switch {
	case epoch <= k.epoch:
		return
	case epoch == k.epoch+1:
		k.carry = k.budget - max(k.used-k.carry, 0)
	default:
		k.carry = k.budget // the previous period was not used at all
	}
	k.carry = min(max(k.carry, 0), k.budget)
	k.epoch, k.used = epoch, 0
}

func (k *key) info() KeyInfo {
	period := time.Duration(k.period)
	start := time.UnixMilli(k.created).Add(time.Duration(k.epoch) * period)
	return KeyInfo{
		Name: k.name, Budget: k.budget, Period: period, Created: time.UnixMilli(k.created),
		Start: start, Renews: start.Add(period),
		Carried: k.carry, Used: k.used, Remaining: max(k.budget+k.carry-k.used, 0),
	}
}

// Keys lists the API keys by name, with their use of the current period.
func (l *Ledger) Keys() ([]KeyInfo, error) {
	rows, err := l.r.QueryContext(context.Background(), "SELECT "+keyColumns+" FROM api_keys ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("API keys: %w", err)
	}
	defer rows.Close()
	now := l.Now()
	var out []KeyInfo
	for rows.Next() {
		var k key
		if err := k.scan(rows); err != nil {
			return nil, fmt.Errorf("API keys: %w", err)
		}
		k.roll(now)
		out = append(out, k.info())
	}
	return out, rows.Err()
}

// RemoveKey deletes the API key named name.
func (l *Ledger) RemoveKey(name string) error {
	ctx := context.Background()
	return l.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM api_keys WHERE name = ?", name)
		if err != nil {
			return fmt.Errorf("remove API key %s: %w", name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: %s", ErrUnknownKey, name)
		}
		return nil
	})
}

// HasKeys reports whether any API key exists: once one does, the local API
// asks every request for one.
func (l *Ledger) HasKeys() (bool, error) {
	var has bool
	err := l.r.QueryRowContext(context.Background(), "SELECT EXISTS (SELECT 1 FROM api_keys)").Scan(&has)
	if err != nil {
		return false, fmt.Errorf("API keys: %w", err)
	}
	return has, nil
}

// Authorize finds the key whose secret this is: ErrUnknownKey when none
// is, ErrQuotaExhausted (with the key's info) when its budget for the
// period is spent.
func (l *Ledger) Authorize(secret string) (KeyInfo, error) {
	if !strings.HasPrefix(secret, KeyPrefix) {
		return KeyInfo{}, ErrUnknownKey
	}
	h := sha256.Sum256([]byte(secret))
	var k key
	err := k.scan(l.r.QueryRowContext(context.Background(), "SELECT "+keyColumns+" FROM api_keys WHERE hash = ?", h[:]))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return KeyInfo{}, ErrUnknownKey
	case err != nil:
		return KeyInfo{}, fmt.Errorf("API keys: %w", err)
	}
	k.roll(l.Now())
	info := k.info()
	if info.Remaining <= 0 {
		return info, fmt.Errorf("%w: %s used %d of %d tokens; renews %s", ErrQuotaExhausted,
			k.name, info.Used, info.Budget+info.Carried, info.Renews.UTC().Format(time.RFC3339))
	}
	return info, nil
}

// Charge counts tokens against the current period of the key named name.
// A charge may take the key past its budget (the answer was already
// given); the key is then exhausted until its next period.
func (l *Ledger) Charge(name string, tokens int64) error {
	if tokens < 0 || tokens > MaxCost {
		return fmt.Errorf("charge API key %s: %d tokens", name, tokens)
	}
	ctx := context.Background()
	return l.write(ctx, func(tx *sql.Tx) error {
		var k key
		err := k.scan(tx.QueryRowContext(ctx, "SELECT "+keyColumns+" FROM api_keys WHERE name = ?", name))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("%w: %s", ErrUnknownKey, name)
		case err != nil:
			return fmt.Errorf("charge API key %s: %w", name, err)
		}
		k.roll(l.Now())
		k.used = min(k.used+tokens, MaxCost)
		_, err = tx.ExecContext(ctx, "UPDATE api_keys SET epoch = ?, used = ?, carry = ? WHERE name = ?", k.epoch, k.used, k.carry, name)
		return err
	})
}
