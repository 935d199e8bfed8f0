package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/ledger"
	"github.com/mwpeer/mwpeer/receipt"
)

// ledgerDir is a data dir whose ledger holds receipts of 2025-03-01 and
// 2025-03-02 between this peer and two others.
func ledgerDir(t *testing.T) (dir string, self, a, b peer.ID) {
	t.Helper()
	dir = t.TempDir()
	type party struct {
		key crypto.PrivKey
		id  peer.ID
	}
	newParty := func() party {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := peer.IDFromPrivateKey(k)
		return party{k, id}
	}
	me, pa, pb := newParty(), newParty(), newParty()
	l, err := ledger.Open(filepath.Join(dir, ledger.File))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	day := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	for i, c := range []struct {
		srv, req party
		at       time.Time
		cost     uint64
		sign     bool
	}{
		{me, pa, day, 1_500_000, true},
		{pa, me, day.Add(time.Hour), 250_000, true},
		{me, pb, day.Add(2 * time.Hour), 46_000, false},
		{pb, me, day.Add(24 * time.Hour), 2_000_000, true},
	} {
		s, err := receipt.SignServer(receipt.Receipt{
			ID: receipt.NewID(), Requester: c.req.id, Server: c.srv.id, Model: "m", PromptTokens: uint32(i), CompletionTokens: 10,
			Start: c.at, Cost: c.cost,
		}, c.srv.key)
		if err != nil {
			t.Fatal(err)
		}
		if c.sign {
			if err := s.Countersign(c.req.key); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := l.Put(me.id, s); err != nil {
			t.Fatal(err)
		}
	}
	return dir, me.id, pa.id, pb.id
}

func TestLedgerPrintsBalances(t *testing.T) {
	dir, _, a, b := ledgerDir(t)
	code, out, errs := runCLI("ledger", "--data-dir", dir)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		a.String(), b.String(),
		"-1.250000", // a: earned 1.5, spent 0.25
		"2.000000",  // b: spent 2, and one unsigned
		"total (2 peers)", "0.750000",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// MWPEER_DATA_DIR stands in for the flag.
	t.Setenv("MWPEER_DATA_DIR", dir)
	if code, out2, _ := runCLI("ledger"); code != exitOK || out2 != out {
		t.Errorf("with MWPEER_DATA_DIR: exit %d:\n%s", code, out2)
	}

	empty := t.TempDir()
	code, out, _ = runCLI("ledger", "--data-dir", empty)
	if code != exitOK || !strings.Contains(out, "no ledger") {
		t.Errorf("empty data dir: exit %d: %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(empty, ledger.File)); err == nil {
		t.Error("reading an empty data dir made a ledger")
	}
}

func TestLedgerExportThenVerify(t *testing.T) {
	dir, self, _, _ := ledgerDir(t)
	file := filepath.Join(t.TempDir(), "march.json")
	code, _, errs := runCLI("ledger", "export", "--data-dir", dir, "--from", "2025-03-01", "--to", "2025-03-01", "--out", file)
	if code != exitOK {
		t.Fatalf("export: exit %d: %s", code, errs)
	}
	code, out, errs := runCLI("ledger", "verify", file)
	if code != exitOK || !strings.Contains(out, "ok: 3 receipts (2 signed, 1 unsigned)") || !strings.Contains(out, self.String()) {
		t.Fatalf("verify: exit %d:\n%s%s", code, out, errs)
	}

	// To standard output, with RFC 3339 bounds: the second day only.
	code, out, errs = runCLI("ledger", "export", "--data-dir", dir, "--from", "2025-03-02T00:00:00Z", "--to", "2025-03-03T00:00:00+00:00")
	if code != exitOK {
		t.Fatalf("export to stdout: exit %d: %s", code, errs)
	}
	var st ledger.Statement
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Receipts) != 1 {
		t.Fatalf("stdout statement: %v, %d receipts", err, len(st.Receipts))
	}

	data, _ := os.ReadFile(file)
	for _, i := range []int{10, len(data) / 2, len(data) - 5} {
		bad := bytes.Clone(data)
		bad[i] ^= 1
		os.WriteFile(file, bad, 0o600)
		if code, out, errs := runCLI("ledger", "verify", file); code != exitError || !strings.Contains(out, "FAILED") || !strings.Contains(errs, "does not verify") {
			t.Errorf("byte %d changed: exit %d:\n%s%s", i, code, out, errs)
		}
	}
}

func TestLedgerBadArguments(t *testing.T) {
	dir, _, _, _ := ledgerDir(t)
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"ledger", "bogus"}, exitUsage},
		{[]string{"ledger", "--nope"}, exitUsage},
		{[]string{"ledger", "export", "--data-dir", dir}, exitUsage},
		{[]string{"ledger", "export", "--data-dir", dir, "--from", "2025-03-01"}, exitUsage},
		{[]string{"ledger", "export", "--data-dir", dir, "--from", "yesterday", "--to", "2025-03-01"}, exitUsage},
		{[]string{"ledger", "export", "--data-dir", dir, "--from", "2025-03-02", "--to", "2025-03-01"}, exitUsage},
		{[]string{"ledger", "export", "--data-dir", dir, "--from", "2025-03-01", "--to", "2025-03-02", "extra"}, exitUsage},
		{[]string{"ledger", "export", "--data-dir", t.TempDir(), "--from", "2025-03-01", "--to", "2025-03-02"}, exitError},
		{[]string{"ledger", "export", "--data-dir", dir, "--from", "2025-03-01", "--to", "2025-03-02", "--out", filepath.Join(dir, "no", "such", "dir.json")}, exitError},
		{[]string{"ledger", "verify"}, exitUsage},
		{[]string{"ledger", "verify", "a.json", "b.json"}, exitUsage},
		{[]string{"ledger", "verify", filepath.Join(dir, "missing.json")}, exitError},
		{[]string{"ledger", "verify", filepath.Join(dir, ledger.File)}, exitError},
		{[]string{"ledger", "help"}, exitOK},
	} {
		if code, _, errs := runCLI(c.args...); code != c.code {
			t.Errorf("%q: exit %d, want %d: %s", c.args, code, c.code, errs)
		}
	}
	corrupt := t.TempDir()
	os.WriteFile(filepath.Join(corrupt, ledger.File), []byte("not a database, not at all, really not"), 0o600)
	if code, _, errs := runCLI("ledger", "--data-dir", corrupt); code != exitError || !strings.Contains(errs, "not a readable SQLite database") {
		t.Errorf("corrupt ledger: exit %d: %s", code, errs)
	}
}

func TestCredits(t *testing.T) {
	for micro, want := range map[int64]string{0: "0.000000", 1: "0.000001", -1: "-0.000001", 1_500_000: "1.500000", -2_000_000_000: "-2000.000000"} {
		if got := credits(micro); got != want {
			t.Errorf("credits(%d) = %s, want %s", micro, got, want)
		}
	}
}
