package cli

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/membership"
)

func TestSwarmKeyAndCertCommands(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "swarm.key")
	if code, _, errs := runCLI("swarm-key", "new", "--out", keyFile); code != exitOK {
		t.Fatalf("swarm-key new: exit %d: %s", code, errs)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("swarm key file: %v %v", st, err)
	}
	if code, _, errs := runCLI("swarm-key", "new", "--out", keyFile); code != exitError || !strings.Contains(errs, "never overwritten") {
		t.Fatalf("second swarm-key new over the same file: exit %d: %s", code, errs)
	}
	code, out, _ := runCLI("swarm-key", "new")
	if code != exitOK || !strings.HasPrefix(out, "/key/swarm/psk/1.0.0/\n/base16/\n") {
		t.Fatalf("swarm-key new to stdout: exit %d: %q", code, out)
	}

	opKey := filepath.Join(dir, "op", "operator.key")
	code, out, errs := runCLI("cert", "operator-key", "--out", opKey)
	if code != exitOK {
		t.Fatalf("operator-key: exit %d: %s", code, errs)
	}
	issuer := strings.TrimSpace(out)
	if _, err := membership.ParseIssuer(issuer); err != nil {
		t.Fatalf("operator-key printed %q: %v", out, err)
	}
	if st, err := os.Stat(opKey); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("operator key file: %v %v", st, err)
	}
	if code, out, _ := runCLI("cert", "pubkey", "--key", opKey); code != exitOK || strings.TrimSpace(out) != issuer {
		t.Fatalf("pubkey: exit %d: %q, want %q", code, out, issuer)
	}

	_, pub, _ := crypto.GenerateEd25519Key(nil)
	id, _ := peer.IDFromPublicKey(pub)
	code, out, errs = runCLI("cert", "issue", id.String(), "--until", "30d", "--key", opKey)
	if code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, errs)
	}
	c, err := membership.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(id, time.Now()); err != nil || membership.FormatIssuer(c.Issuer) != issuer {
		t.Fatalf("issued certificate: %v, issuer %s", err, membership.FormatIssuer(c.Issuer))
	}
	if d := time.Until(c.NotAfter); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Fatalf("--until 30d ends in %s", d)
	}
	certFile := filepath.Join(dir, "member.cert")
	if err := os.WriteFile(certFile, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, show, _ := runCLI("cert", "show", "@"+certFile); code != exitOK || !strings.Contains(show, id.String()) || !strings.Contains(show, "valid now") {
		t.Fatalf("show: exit %d:\n%s", code, show)
	}

	// The run flags read all of it; bad values name the flag and the file.
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	build := peerFlags(fs)
	other := membership.FormatIssuer(c.Issuer)
	if err := fs.Parse([]string{"--swarm-key", keyFile, "--trust-issuer", issuer, "--trust-issuer", other + "," + issuer, "--cert", "@" + certFile}); err != nil {
		t.Fatal(err)
	}
	cfg, err := build()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.SwarmKey) != 32 || len(cfg.TrustIssuers) != 3 || string(cfg.Cert) != string(c.Bytes()) {
		t.Fatalf("config: key %d bytes, issuers %v, cert %d bytes", len(cfg.SwarmKey), cfg.TrustIssuers, len(cfg.Cert))
	}
	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, []byte("not a key\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--swarm-key", bad}, []string{"--swarm-key", bad}},
		{[]string{"--cert", "@" + filepath.Join(dir, "absent")}, []string{"--cert", "absent"}},
		{[]string{"--cert", "garbage!"}, []string{"--cert", "malformed"}},
		{[]string{"--trust-issuer", "ed25519:nope"}, []string{"--trust-issuer"}},
	} {
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		build := peerFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		_, err := build()
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %v does not say %q", tc.args, err, w)
			}
		}
	}
}
