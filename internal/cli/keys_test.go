package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mwpeer/mwpeer/ledger"
)

func TestKeysAddListRemove(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // made by keys add
	code, out, errs := runCLI("keys", "add", "alice", "--budget", "100000", "--data-dir", dir)
	if code != exitOK {
		t.Fatalf("add: exit %d: %s", code, errs)
	}
	secret := strings.TrimSpace(out)
	if !strings.HasPrefix(secret, ledger.KeyPrefix) || strings.Contains(secret, "\n") || !strings.Contains(errs, "shown this once") {
		t.Fatalf("add printed %q, %q", out, errs)
	}
	if code, _, errs := runCLI("keys", "add", "--data-dir", dir, "--budget", "50", "--period", "24h", "bob"); code != exitOK {
		t.Fatalf("add bob: exit %d: %s", code, errs)
	}
	if st, err := os.Stat(filepath.Join(dir, ledger.File)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ledger file: %v %v", st, err)
	}

	code, out, _ = runCLI("keys", "list", "--data-dir", dir)
	if code != exitOK || !strings.Contains(out, "alice") || !strings.Contains(out, "100000") || !strings.Contains(out, "720h") ||
		!strings.Contains(out, "bob") || !strings.Contains(out, "24h") || strings.Contains(out, secret) {
		t.Fatalf("list: exit %d:\n%s", code, out)
	}

	// The key the command printed is the one the ledger knows.
	l, err := ledger.Open(filepath.Join(dir, ledger.File))
	if err != nil {
		t.Fatal(err)
	}
	if k, err := l.Authorize(secret); err != nil || k.Name != "alice" || k.Remaining != 100000 {
		t.Fatalf("authorize the printed key: %+v, %v", k, err)
	}
	l.Close()

	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"keys", "add", "alice", "--budget", "5", "--data-dir", dir}, exitError, ""},
		{[]string{"keys", "rm", "alice", "--data-dir", dir}, exitOK, "removed API key alice"},
		{[]string{"keys", "rm", "alice", "--data-dir", dir}, exitError, ""},
		{[]string{"keys", "rm", "bob", "--data-dir", dir}, exitOK, "removed"},
		{[]string{"keys", "list", "--data-dir", dir}, exitOK, "no API keys"},
		{[]string{"keys", "list", "--data-dir", t.TempDir()}, exitOK, "no API keys"},
		{[]string{"keys", "rm", "carol", "--data-dir", t.TempDir()}, exitError, ""},
	} {
		code, out, errs := runCLI(c.args...)
		if code != c.code || !strings.Contains(out, c.out) {
			t.Errorf("%q: exit %d (want %d):\n%s%s", c.args, code, c.code, out, errs)
		}
	}
}

func TestKeysBadArguments(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"keys"},
		{"keys", "bogus"},
		{"keys", "add", "--data-dir", dir, "--budget", "10"},
		{"keys", "add", "a", "b", "--data-dir", dir, "--budget", "10"},
		{"keys", "add", "alice", "--data-dir", dir},
		{"keys", "add", "alice", "--data-dir", dir, "--budget", "0"},
		{"keys", "add", "alice", "--data-dir", dir, "--budget", "-4"},
		{"keys", "add", "alice", "--data-dir", dir, "--budget", "lots"},
		{"keys", "add", "alice", "--data-dir", dir, "--budget", "10", "--period", "forever"},
		{"keys", "add", "alice", "--data-dir", dir, "--budget", "10", "--period", "1ms"},
		{"keys", "list", "extra", "--data-dir", dir},
		{"keys", "rm", "--data-dir", dir},
	} {
		if code, _, errs := runCLI(args...); code != exitUsage || !strings.Contains(errs, "Usage") {
			t.Errorf("%q: exit %d, want %d with usage: %s", args, code, exitUsage, errs)
		}
	}
	if code, _, errs := runCLI("keys", "add", "has space", "--budget", "10", "--data-dir", dir); code != exitError || !strings.Contains(errs, "name") {
		t.Errorf("bad name: exit %d: %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, ledger.File)); err == nil {
		if code, out, _ := runCLI("keys", "list", "--data-dir", dir); code != exitOK || !strings.Contains(out, "no API keys") {
			t.Errorf("refused keys were stored:\n%s", out)
		}
	}
}
