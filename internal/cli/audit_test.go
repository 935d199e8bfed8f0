package cli

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/ledger"
	"github.com/mwpeer/mwpeer/receipt"
)

// auditDir is a data dir whose audit chain holds n entries, the model name
// of the last one with terminal escapes in it.
func auditDir(t *testing.T, n int) (dir string, other peer.ID) {
	t.Helper()
	dir = t.TempDir()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	ok, _, _ := crypto.GenerateEd25519Key(nil)
	other, _ = peer.IDFromPrivateKey(ok)
	l, err := ledger.Open(filepath.Join(dir, ledger.File))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := ledger.NewChain(l, key)
	if err != nil {
		t.Fatal(err)
	}
	es := make([]ledger.AuditEntry, n)
	for i := range es {
		es[i] = ledger.AuditEntry{Kind: ledger.AuditServed, Peer: other, Model: "m", Tokens: int64(i), Outcome: "ok",
			RequestHash: receipt.Sum([]byte{byte(i)})}
	}
	es[n-1].Model = "evil\x1b[2J\x1b]0;title\x07\u202e"
	if err := c.Append(es...); err != nil {
		t.Fatal(err)
	}
	if err := c.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	return dir, other
}

func runAuditCLI(args ...string) (int, string) {
	var out bytes.Buffer
	code := Run(context.Background(), args, &out, &out)
	return code, out.String()
}

func TestAuditVerifyNamesTheProblem(t *testing.T) {
	dir, _ := auditDir(t, 50)
	if code, out := runAuditCLI("audit", "verify", "--data-dir", dir); code != exitOK || !strings.Contains(out, "ok: 50 entries (1-50)") {
		t.Fatalf("exit %d: %s", code, out)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, ledger.File))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("UPDATE audit SET tokens = 1000 WHERE seq = 17"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	code, out := runAuditCLI("audit", "verify", "--data-dir", dir)
	if code != exitError || !strings.Contains(out, "entry 17: hash mismatch (edited)") || !strings.Contains(out, "FAILED: 1 problems") {
		t.Fatalf("exit %d: %s", code, out)
	}
}

func TestAuditVerifyWithoutLedger(t *testing.T) {
	if code, out := runAuditCLI("audit", "verify", "--data-dir", t.TempDir()); code != exitOK || !strings.Contains(out, "no ledger") {
		t.Fatalf("exit %d: %s", code, out)
	}
	if code, _ := runAuditCLI("audit", "frobnicate"); code != exitUsage {
		t.Fatalf("unknown subcommand: exit %d", code)
	}
}

func TestAuditTailStripsControlCharacters(t *testing.T) {
	dir, other := auditDir(t, 30)
	code, out := runAuditCLI("audit", "tail", "-n", "3", "--data-dir", dir)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "28 ") || !strings.HasPrefix(lines[2], "30 ") || !strings.Contains(lines[2], other.String()) {
		t.Fatalf("tail:\n%s", out)
	}
	if strings.ContainsAny(out, "\x1b\x07\u202e") || !strings.Contains(lines[2], "evil[2J]0;title") {
		t.Fatalf("control characters printed: %q", lines[2])
	}
}

func TestAuditExportIsJSONLines(t *testing.T) {
	dir, _ := auditDir(t, 12)
	code, out := runAuditCLI("audit", "export", "--data-dir", dir)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, out)
	}
	types := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var line struct {
			Type string `json:"type"`
			Seq  int64  `json:"seq"`
			Hash string `json:"hash"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		if len(line.Hash) != 64 {
			t.Fatalf("line without a hash: %s", sc.Text())
		}
		types[line.Type]++
	}
	if types["entry"] != 12 || types["checkpoint"] != 1 || types["head"] != 1 {
		t.Fatalf("exported %v", types)
	}
	if code, _ := runAuditCLI("audit", "export", "--format", "csv", "--data-dir", dir); code != exitUsage {
		t.Fatalf("--format csv: exit %d", code)
	}
}
