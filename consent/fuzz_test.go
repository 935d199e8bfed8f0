package consent

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
)

// FuzzParseGrant reads consent tokens as a peer does from a request's
// credentials or a wallet file: a token is ErrBadGrant, or its claims are
// complete, and checking it against the issuer's key gives one of the
// documented errors, never a panic; a token that verifies was signed by
// that key over exactly its claims.
func FuzzParseGrant(f *testing.F) {
	key := func(b byte) (crypto.PrivKey, peer.ID) {
		k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{b}, 64)))
		if err != nil {
			f.Fatal(err)
		}
		id, _ := peer.IDFromPrivateKey(k)
		return k, id
	}
	issuerKey, _ := key(1)
	_, holder := key(2)
	now := time.Unix(1_780_000_000, 0)
	for _, c := range []struct {
		model  string
		tokens int64
	}{{"llama3:8b", 100_000}, {"llama3*", 1}, {"[a-", 5}} {
		text, err := Issue(issuerKey, holder, c.model, c.tokens, now, now.Add(24*time.Hour))
		if err != nil {
			if c.model == "[a-" {
				continue
			}
			f.Fatal(err)
		}
		fuzzcorpus.Add(f, text)
	}
	fuzzcorpus.Add(f, "mwgrant1.e30.")
	fuzzcorpus.Add(f, "mwgrant1."+strings.Repeat("A", MaxGrantSize))
	fuzzcorpus.Add(f, " mwgrant1.eyJpZCI6IjAxMjM0NTY3ODlhYmNkZWYiLCJ0b2tlbnMiOjEsIm1vZGVsIjoiKiIsIm5iZiI6MCwiZXhwIjoxfQ.AA \n")
	pub := issuerKey.GetPublic()
	f.Fuzz(func(t *testing.T, text string) {
		g, err := ParseGrant(text)
		if err != nil {
			if !errors.Is(err, ErrBadGrant) {
				t.Fatalf("refused with %v, want ErrBadGrant", err)
			}
			return
		}
		if len(g.Text) > MaxGrantSize || len(g.ID) != 16 || g.Tokens <= 0 || g.Model == "" || g.Expires <= g.NotBefore {
			t.Fatalf("accepted claims %+v", g.Claims)
		}
		if _, err := peer.Decode(g.Issuer); err != nil {
			t.Fatalf("accepted issuer %q", g.Issuer)
		}
		_ = g.Covers("llama3:8b")
		err = g.Verify(pub, holder, now.Add(time.Hour))
		switch {
		case err == nil:
			if g.Subject != holder.String() {
				t.Fatalf("verified a grant for %s", g.Subject)
			}
		case errors.Is(err, ErrForgedGrant), errors.Is(err, ErrGrantHolder), errors.Is(err, ErrGrantEarly), errors.Is(err, ErrGrantExpired):
		default:
			t.Fatalf("Verify: %v, not a documented error", err)
		}
		if again, err := ParseGrant(g.Text); err != nil || again.Claims != g.Claims {
			t.Fatalf("parse its own text again: %v", err)
		}
	})
}

// FuzzParsePolicy reads policy files, TOML and YAML: one is an error or a
// policy whose questions (shares, hours, offers, warnings) are answered
// without a panic.
func FuzzParsePolicy(f *testing.F) {
	id := "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
	fuzzcorpus.Add(f, []byte("share = [\"llama*\"]\nlocal = [\"private\"]\nwho = [\"allowlist\", \"grants\"]\nallow = [\""+id+"\"]\n"+
		"hours = [\"22:00-06:00\"]\ndays = [\"mon\", \"sat\"]\ntimezone = \"Europe/Oslo\"\nrelay = false\n[limits]\nconcurrent = 2\nmax_tokens = 100\n"), false)
	fuzzcorpus.Add(f, []byte("share: [\"llama*\"]\nwho: [allowlist]\nallow: ["+id+"]\nlimits:\n  concurrent: 2\n  max_tokens: 100\n"), true)
	fuzzcorpus.Add(f, []byte("who: [anyone]\nbogus: 1\n"), true)
	fuzzcorpus.Add(f, []byte("hours = [\"25:00-26:00\"]\ntimezone = \"../../etc/passwd\"\n"), false)
	fuzzcorpus.Add(f, []byte("share = ["), false)
	fuzzcorpus.Add(f, []byte("&a [*a]"), true)
	at := time.Date(2026, 11, 30, 23, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte, yaml bool) {
		if len(data) > MaxPolicySize {
			return
		}
		format := "toml"
		if yaml {
			format = "yaml"
		}
		p, err := Parse(data, format)
		if err != nil {
			return
		}
		_ = p.Shares("llama3:8b")
		_ = p.InHours(at)
		_, _, _ = p.Offers()
		_ = p.Warnings(true)
	})
}
