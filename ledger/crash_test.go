package ledger

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/receipt"
)

// crashEnv names the ledger file a helper process writes to.
const crashEnv = "MWPEER_LEDGER_CRASH_TEST"

const crashReceipts = 1000

// TestHelperProcess is not a test: run by TestKilledWhileWritingLosesNothing
// as a child process, it stores crashReceipts receipts one Put at a time,
// printing "stored N" after each returned, then waits to be killed.
// Every fourth receipt is stored unsigned first and countersigned with the
// next one, so upgrades are in flight too; with every fifth receipt a tally
// is stored (every other one disputed).
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("run as a child process by TestKilledWhileWritingLosesNothing")
	}
	l, err := Open(path)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(3)
	}
	me := newParty(t)
	others := []party{newParty(t), newParty(t), newParty(t)}
	var pending *receipt.Signed
	var pendingReq party
	for i := range crashReceipts {
		p := others[i%len(others)]
		srv, req := me, p
		if i%2 == 1 {
			srv, req = p, me
		}
		s := serve(t, srv, req, func(r *receipt.Receipt) {
			r.Start = epoch.Add(time.Duration(i) * time.Second)
			r.Cost = uint64(1000 + i)
		})
		if i%4 != 0 {
			s = signedBy(t, s, req)
		}
		if _, err := l.Put(me.id, s); err != nil {
			fmt.Println("put:", err)
			os.Exit(3)
		}
		if pending != nil {
			if _, err := l.Put(me.id, signedBy(t, pending, pendingReq)); err != nil {
				fmt.Println("upgrade:", err)
				os.Exit(3)
			}
			pending = nil
		}
		if i%4 == 0 {
			pending, pendingReq = s, req
		}
		if i%5 == 0 {
			st := propose(t, req, srv, func(tl *receipt.Tally) {
				tl.Start = epoch.Add(time.Duration(i) * time.Second)
				tl.End = tl.Start.Add(time.Second)
			})
			if i%10 == 0 {
				st = countersigned(t, st, srv)
			}
			if _, err := l.PutTally(me.id, st); err != nil {
				fmt.Println("put tally:", err)
				os.Exit(3)
			}
		}
		fmt.Printf("stored %d\n", i+1)
	}
	fmt.Println("done")
	io.Copy(io.Discard, os.Stdin) // until killed, or the parent is gone
	os.Exit(0)
}

// TestKilledWhileWritingLosesNothing kills a process with SIGKILL while
// it stores receipts, then opens its ledger: it opens, holds every receipt
// the process reported stored, every receipt verifies, none is partial,
// and the aggregates equal the sums over receipts.
func TestKilledWhileWritingLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	path := filepath.Join(t.TempDir(), File)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	cmd.Stderr = os.Stderr
	if _, err := cmd.StdinPipe(); err != nil { // kept open: the child waits on it when done
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// Kill it once a third of the receipts are stored, while it goes on
	// writing.
	lines := bufio.NewScanner(out)
	stored := 0
	for stored < crashReceipts/3 && lines.Scan() {
		n, ok := strings.CutPrefix(lines.Text(), "stored ")
		if !ok {
			t.Fatalf("child: %s", lines.Text())
		}
		stored, _ = strconv.Atoi(n)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	// Lines already written before the kill were stored too.
	for lines.Scan() {
		if n, ok := strings.CutPrefix(lines.Text(), "stored "); ok {
			stored, _ = strconv.Atoi(n)
		}
	}
	err = cmd.Wait()
	if stored < crashReceipts/3 {
		t.Fatalf("the child stopped after %d receipts: %v", stored, err)
	}
	if stored == crashReceipts {
		t.Logf("the child stored all %d receipts before it was killed", stored)
	}

	l := openAt(t, path)
	audit(t, l)
	_, tot, err := l.Balances()
	if err != nil {
		t.Fatal(err)
	}
	n := tot.Receipts + tot.Unsigned
	if n < int64(stored) || n > int64(stored)+1 {
		t.Fatalf("the child reported %d receipts stored; the ledger holds %d", stored, n)
	}
	// A tally went with every fifth receipt, after it.
	nt, wantT := tot.Tallies+tot.Disputed, int64(stored+4)/5
	if nt < wantT || nt > wantT+1 {
		t.Fatalf("the child stored %d tallies with its %d receipts; the ledger holds %d", wantT, stored, nt)
	}
	t.Logf("killed after %d receipts reported stored; the ledger holds %d (%d signed, %d unsigned) and %d tallies (%d disputed)",
		stored, n, tot.Receipts, tot.Unsigned, nt, tot.Disputed)
}
