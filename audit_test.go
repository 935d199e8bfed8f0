package mwpeer_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/cli"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/ledger"
	"github.com/mwpeer/mwpeer/swarm"
)

// TestAuditChainOfRealPeersVerifiesAndShowsTampering: peer A serves peer B
// a thousand prompts. Once both are closed, mwpeer audit verify passes on
// either data dir; then each of an edit, a deletion, a reorder and a
// truncation, done with SQL in a copy of A's ledger, makes it fail and name
// the entries.
func TestAuditChainOfRealPeersVerifiesAndShowsTampering(t *testing.T) {
	const requests = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)
	config := func(engine string, models []string, boot []string) mwpeer.Config {
		c := mwpeer.DefaultConfig()
		c.DataDir = t.TempDir()
		c.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
		c.HTTPAddr = ""
		c.Engine, c.Models, c.Bootstrap = engine, models, boot
		c.Synthetic.Tokens = 4
		c.Domains = []string{"general"}
		c.DHTMode = "server"
		c.RelayService = false
		c.Capacity = 64
		c.Logger = quiet
		return c
	}
	ca := config(mwpeer.EngineSynthetic, []string{"syn-audit"}, nil)
	a, err := mwpeer.Start(ctx, ca)
	if err != nil {
		t.Fatal(err)
	}
	closeA := sync.OnceValue(a.Close)
	t.Cleanup(func() { closeA() })
	cb := config(mwpeer.EngineNone, nil, []string{a.Addrs()[0].String()})
	b, err := mwpeer.Start(ctx, cb)
	if err != nil {
		t.Fatal(err)
	}
	closeB := sync.OnceValue(b.Close)
	t.Cleanup(func() { closeB() })
	wait.For(t, 60*time.Second, "B knows A's model", func() error {
		if b.Catalog.Len() != 1 {
			return fmt.Errorf("B knows %d peers", b.Catalog.Len())
		}
		return nil
	})

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				q := swarm.Query{Request: inference.Request{Model: "syn-audit",
					Messages: []inference.Message{{Role: "user", Content: fmt.Sprintf("question %d", i)}}}}
				if _, err := b.Router().Complete(ctx, q, func(string, inference.Chunk) error { return nil }); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range requests {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d requests failed, the first: %v", len(errs), errs[0])
	}
	if err := closeB(); err != nil {
		t.Fatal(err)
	}
	if err := closeA(); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := cli.Run(context.Background(), args, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	for name, dir := range map[string]string{"A": ca.DataDir, "B": cb.DataDir} {
		code, out := run("audit", "verify", "--data-dir", dir)
		if code != 0 || !strings.Contains(out, fmt.Sprintf("ok: %d entries", requests)) {
			t.Fatalf("audit verify of %s: exit %d\n%s", name, code, out)
		}
		t.Logf("%s: %s", name, strings.TrimSpace(out))
	}
	code, out := run("audit", "tail", "-n", "2", "--data-dir", ca.DataDir)
	if code != 0 || strings.Count(out, "served") != 2 || !strings.Contains(out, b.ID().String()) {
		t.Fatalf("audit tail: exit %d\n%s", code, out)
	}

	for _, tc := range []struct {
		name string
		sql  []string
		want string
	}{
		{"edit", []string{"UPDATE audit SET tokens = tokens + 1 WHERE seq = 523"}, "entry 523: hash mismatch (edited)"},
		{"delete", []string{"DELETE FROM audit WHERE seq IN (600, 601)"}, "entries 600-601 missing (deleted)"},
		{"reorder", []string{"UPDATE audit SET seq = 1000000 WHERE seq = 700", "UPDATE audit SET seq = 700 WHERE seq = 702",
			"UPDATE audit SET seq = 702 WHERE seq = 1000000"}, "entries 700 and 702 out of order (swapped)"},
		{"truncate", []string{"DELETE FROM audit WHERE seq > 990"}, fmt.Sprintf("truncated after 990: the signed head says the chain ends at %d", requests)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyLedger(t, ca.DataDir, dir)
			db, err := sql.Open("sqlite", filepath.Join(dir, ledger.File))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.sql {
				if _, err := db.Exec(s); err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
			db.Close()
			code, out := run("audit", "verify", "--data-dir", dir)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want 1 and %q:\n%s", code, tc.want, out)
			}
		})
	}
}

// copyLedger copies the ledger files of one data dir into another.
func copyLedger(t *testing.T, from, to string) {
	t.Helper()
	for _, suffix := range []string{"", "-wal"} {
		src, err := os.Open(filepath.Join(from, ledger.File+suffix))
		if os.IsNotExist(err) && suffix != "" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.OpenFile(filepath.Join(to, ledger.File+suffix), os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
