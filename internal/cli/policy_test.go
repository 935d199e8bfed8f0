package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/consent"
	"github.com/mwpeer/mwpeer/p2p"
)

func TestPolicyCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "policy.toml")
	os.WriteFile(good, []byte("share = [\"llama*\"]\nwho = [\"contributors\", \"members\"]\nhours = [\"08:00-20:00\"]\nseed_shards = false\n[limits]\ntokens_per_hour = 5000\n"), 0o600)
	code, out, errs := runCLI("policy", "check", good)
	if code != exitOK || !strings.Contains(out, "llama*") || !strings.Contains(out, "5000 tokens an hour") ||
		!strings.Contains(out, "seed shards false") || !strings.Contains(out, "no --trust-issuer") || !strings.Contains(out, ": ok") {
		t.Fatalf("good policy: exit %d\n%s%s", code, out, errs)
	}
	bad := filepath.Join(dir, "policy.yaml")
	os.WriteFile(bad, []byte("who: [anyone]\nlimits:\n  concurency: 2\n"), 0o600)
	if code, _, errs := runCLI("policy", "check", bad); code != exitError || !strings.Contains(errs, "concurency") {
		t.Fatalf("misspelt key: exit %d: %s", code, errs)
	}
	if code, _, _ := runCLI("policy", "check"); code != exitUsage {
		t.Fatalf("no file: exit %d", code)
	}
}

func TestGrantPrintsATokenTheIssuerAccepts(t *testing.T) {
	dir := t.TempDir()
	key, err := p2p.LoadOrCreateIdentity(filepath.Join(dir, p2p.IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	holder := "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf"
	code, out, errs := runCLI("grant", holder, "--model", "llama3", "--tokens", "500", "--until", "30d", "--data-dir", dir)
	if code != exitOK {
		t.Fatalf("grant: exit %d: %s", code, errs)
	}
	g, err := consent.ParseGrant(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.Decode(holder)
	if err := g.Verify(key.GetPublic(), id, time.Now()); err != nil || g.Tokens != 500 || !g.Covers("llama3") ||
		time.Until(time.Unix(g.Expires, 0)) < 29*24*time.Hour {
		t.Fatalf("token %+v: %v", g.Claims, err)
	}
	for _, args := range [][]string{
		{"grant", "not-a-peer", "--model", "m", "--tokens", "5", "--until", "1h", "--data-dir", dir},
		{"grant", holder, "--model", "m", "--tokens", "0", "--until", "1h", "--data-dir", dir},
		{"grant", holder, "--model", "m", "--tokens", "5", "--until", "yesterday", "--data-dir", dir},
	} {
		if code, _, _ := runCLI(args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, _, errs := runCLI("grant", holder, "--model", "m", "--tokens", "5", "--until", "1h", "--data-dir", t.TempDir()); code != exitError || !strings.Contains(errs, "no identity") {
		t.Errorf("no identity: exit %d: %s", code, errs)
	}
}
