package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/infer"
	"github.com/mwpeer/mwpeer/receipt"
)

// testClock is a test testClock that moves only when told.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.UnixMilli(1_750_000_000_000)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newChain is a fresh ledger's audit chain signed by me, on a test testClock.
func newChain(t testing.TB, path string, me party) (*Ledger, *Chain, *testClock) {
	t.Helper()
	l := openAt(t, path)
	c, err := NewChain(l, me.key)
	if err != nil {
		t.Fatal(err)
	}
	clk := newTestClock()
	c.Now = clk.Now
	return l, c, clk
}

// entries makes n entries of varied kinds with others as counterparts.
func entries(n int, others ...party) []AuditEntry {
	kinds := []string{AuditServed, AuditRequested, AuditRefused, AuditTally}
	out := make([]AuditEntry, n)
	for i := range out {
		e := AuditEntry{Kind: kinds[i%len(kinds)], Model: fmt.Sprintf("model-%d", i%3), Tokens: int64(i % 100), Outcome: infer.OutcomeOK}
		if len(others) > 0 {
			e.Peer = others[i%len(others)].id
		}
		e.RequestHash = receipt.Sum([]byte(fmt.Sprint("request", i)))
		if e.Kind != AuditRefused {
			e.AnswerHash = receipt.Sum([]byte(fmt.Sprint("answer", i)))
		}
		out[i] = e
	}
	return out
}

func appendAll(t testing.TB, c *Chain, es []AuditEntry, batch int) {
	t.Helper()
	for len(es) > 0 {
		n := min(batch, len(es))
		if err := c.Append(es[:n]...); err != nil {
			t.Fatal(err)
		}
		es = es[n:]
	}
}

func verify(t testing.TB, l *Ledger) *AuditReport {
	t.Helper()
	rep, err := l.VerifyAudit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func checkpointSeqs(t testing.TB, l *Ledger) []int64 {
	t.Helper()
	rows, err := l.r.Query("SELECT seq FROM audit_checkpoints ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestAuditChainLinksEveryEntry(t *testing.T) {
	me, other := newParty(t), newParty(t)
	l, c, _ := newChain(t, filepath.Join(t.TempDir(), File), me)
	appendAll(t, c, entries(2500, other), 333)
	rep := verify(t, l)
	if !rep.OK() || rep.Entries != 2500 || rep.First != 1 || rep.Last != 2500 || rep.HeadSeq != 2500 || rep.Signer != me.id {
		t.Fatalf("report %+v", rep)
	}
	var prev receipt.Hash
	var n int64
	err := l.AuditEntries(context.Background(), 0, func(e AuditEntry) error {
		n++
		if e.Seq != n || e.Prev != prev || e.Peer != other.id {
			return fmt.Errorf("entry %d (seq %d) prev %x after %x", n, e.Seq, e.Prev[:4], prev[:4])
		}
		prev = e.Hash
		return nil
	})
	if err != nil || n != 2500 {
		t.Fatal(n, err)
	}
	tail, err := l.AuditTail(context.Background(), 3)
	if err != nil || len(tail) != 3 || tail[0].Seq != 2498 || tail[2].Seq != 2500 {
		t.Fatalf("tail %+v %v", tail, err)
	}
}

func TestAuditCheckpointEveryThousandEntries(t *testing.T) {
	me := newParty(t)
	l, c, _ := newChain(t, filepath.Join(t.TempDir(), File), me)
	appendAll(t, c, entries(2999), 512)
	if got := fmt.Sprint(checkpointSeqs(t, l)); got != "[1000 2000]" {
		t.Fatalf("checkpoints at %s, want 1000 and 2000", got)
	}
	// Closing writes one of the last entry; a second adds none.
	if err := c.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := c.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(checkpointSeqs(t, l)); got != "[1000 2000 2999]" {
		t.Fatalf("checkpoints at %s after Checkpoint", got)
	}
	if rep := verify(t, l); !rep.OK() || rep.Checkpoints != 3 {
		t.Fatalf("report %+v", rep)
	}
}

func TestAuditCheckpointEveryMinute(t *testing.T) {
	me := newParty(t)
	l, c, clk := newChain(t, filepath.Join(t.TempDir(), File), me)
	appendAll(t, c, entries(5), 5)
	clk.Add(30 * time.Second)
	if err := c.Tick(); err != nil {
		t.Fatal(err)
	}
	if got := checkpointSeqs(t, l); len(got) != 0 {
		t.Fatalf("checkpoints %v after 30 s", got)
	}
	clk.Add(31 * time.Second)
	if err := c.Tick(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(checkpointSeqs(t, l)); got != "[5]" {
		t.Fatalf("checkpoints at %s a minute after the first entries, want 5", got)
	}
	// Nothing new: no checkpoint however long it is quiet.
	clk.Add(time.Hour)
	if err := c.Tick(); err != nil {
		t.Fatal(err)
	}
	// An append a minute after the last checkpoint writes one at its end.
	appendAll(t, c, entries(3), 3)
	if got := fmt.Sprint(checkpointSeqs(t, l)); got != "[5 8]" {
		t.Fatalf("checkpoints at %s, want 5 and 8", got)
	}
	clk.Add(59 * time.Second)
	appendAll(t, c, entries(2), 2)
	if got := fmt.Sprint(checkpointSeqs(t, l)); got != "[5 8]" {
		t.Fatalf("checkpoints at %s within the minute", got)
	}
	if rep := verify(t, l); !rep.OK() {
		t.Fatalf("report %+v", rep)
	}
}

// baseChain writes a closed chain of n entries (checkpoints at every 1000
// and at the end) and returns its file, to be copied for each case.
func baseChain(t testing.TB, n int) (path string, me party) {
	t.Helper()
	me = newParty(t)
	path = filepath.Join(t.TempDir(), File)
	l, c, _ := newChain(t, path, me)
	appendAll(t, c, entries(n, newParty(t), newParty(t)), 500)
	if err := c.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.w.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, me
}

// copyFile copies the database at src into a fresh directory.
func copyFile(t testing.TB, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), File)
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// tamper runs SQL on the file as someone with the file but not the key
// would, through its own connection.
func tamper(t testing.TB, path string, fn func(db *sql.DB) error) {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=synchronous(OFF)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := fn(db); err != nil {
		t.Fatal(err)
	}
}

func runSQL(stmts ...string) func(db *sql.DB) error {
	return func(db *sql.DB) error {
		for _, s := range stmts {
			if _, err := db.Exec(s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return nil
	}
}

// rehash recomputes the hashes of entries from..to and the prev of each
// next one, as a tamperer who knows the format (but not the key) would.
func rehash(from, to int64) func(db *sql.DB) error {
	return func(db *sql.DB) error {
		for seq := from; seq <= to; seq++ {
			var (
				r            auditRow
				prompt, text sql.NullString
			)
			err := db.QueryRow("SELECT seq, time, kind, peer, model, tokens, outcome, request, answer, prompt, text, prev FROM audit WHERE seq = ?", seq).
				Scan(&r.seq, &r.time, &r.kind, &r.peer, &r.model, &r.tokens, &r.outcome, &r.request, &r.answer, &prompt, &text, &r.prev)
			if err != nil {
				return err
			}
			r.prompt, r.hasPrompt, r.text, r.hasText = []byte(prompt.String), prompt.Valid, []byte(text.String), text.Valid
			h, _ := r.sum(nil)
			if _, err := db.Exec("UPDATE audit SET hash = ? WHERE seq = ?", h[:], seq); err != nil {
				return err
			}
			if _, err := db.Exec("UPDATE audit SET prev = ? WHERE seq = ?", h[:], seq+1); err != nil {
				return err
			}
		}
		return nil
	}
}

// swap exchanges every column but seq of two entries.
func swap(a, b int64) func(db *sql.DB) error {
	return runSQL(
		fmt.Sprintf("UPDATE audit SET seq = 1000000000 WHERE seq = %d", a),
		fmt.Sprintf("UPDATE audit SET seq = %d WHERE seq = %d", a, b),
		fmt.Sprintf("UPDATE audit SET seq = %d WHERE seq = 1000000000", b))
}

// TestAuditFindsTampering edits, deletes, reorders and truncates entries
// of a closed chain directly in the file, each on a fresh copy, and checks
// that VerifyAudit names what was done and where.
func TestAuditFindsTampering(t *testing.T) {
	base, _ := baseChain(t, 2500)
	for _, tc := range []struct {
		name   string
		tamper func(db *sql.DB) error
		want   []string // in the problems' text, in order
		kind   string   // of the first problem
	}{
		{"edited", runSQL("UPDATE audit SET tokens = tokens + 1 WHERE seq = 523"),
			[]string{"entry 523: hash mismatch (edited)"}, ProblemEdited},
		{"edited model", runSQL("UPDATE audit SET model = 'other' WHERE seq = 1"),
			[]string{"entry 1: hash mismatch (edited)"}, ProblemEdited},
		{"edited with its hash recomputed", func(db *sql.DB) error {
			if err := runSQL("UPDATE audit SET tokens = 99999 WHERE seq = 523")(db); err != nil {
				return err
			}
			_, err := db.Exec("UPDATE audit SET hash = ? WHERE seq = 523", func() []byte {
				var r auditRow
				var p, x sql.NullString
				db.QueryRow("SELECT seq, time, kind, peer, model, tokens, outcome, request, answer, prompt, text, prev FROM audit WHERE seq = 523").
					Scan(&r.seq, &r.time, &r.kind, &r.peer, &r.model, &r.tokens, &r.outcome, &r.request, &r.answer, &p, &x, &r.prev)
				h, _ := r.sum(nil)
				return h[:]
			}())
			return err
		}, []string{"entry 523: edited (its hash was recomputed"}, ProblemEdited},
		{"edited with the chain recomputed to the next checkpoint", func(db *sql.DB) error {
			if err := runSQL("UPDATE audit SET tokens = 99999 WHERE seq = 523")(db); err != nil {
				return err
			}
			return rehash(523, 1000)(db)
		}, []string{"entry 1000: differs from its signed checkpoint"}, ProblemEdited},
		{"edited with the chain recomputed to the end", func(db *sql.DB) error {
			if err := runSQL("UPDATE audit SET tokens = 99999 WHERE seq = 2100")(db); err != nil {
				return err
			}
			return rehash(2100, 2500)(db)
		}, []string{"entry 2500: differs from its signed checkpoint"}, ProblemEdited},
		{"deleted", runSQL("DELETE FROM audit WHERE seq IN (600, 601)"),
			[]string{"entries 600-601 missing (deleted)"}, ProblemDeleted},
		{"deleted first", runSQL("DELETE FROM audit WHERE seq = 1"),
			[]string{"entry 1 missing (deleted)"}, ProblemDeleted},
		{"reordered", swap(700, 705),
			[]string{"entries 700 and 705 out of order (swapped)"}, ProblemReordered},
		{"reordered neighbours", swap(700, 701),
			[]string{"entries 700 and 701 out of order (swapped)"}, ProblemReordered},
		{"moved", runSQL("UPDATE audit SET seq = 100000 WHERE seq = 700"),
			[]string{"entry 100000 out of order: it holds entry 700"}, ProblemReordered},
		{"truncated", runSQL("DELETE FROM audit WHERE seq > 999"),
			[]string{"truncated after 999: the signed head says the chain ends at 2500", "checkpoint at 2500 says"}, ProblemTruncated},
		{"truncated with the head and checkpoints", runSQL("DELETE FROM audit WHERE seq > 999", "DELETE FROM audit_head",
			"DELETE FROM audit_checkpoints WHERE seq > 1000"),
			[]string{"the signed head is missing (deleted)", "truncated after 999: checkpoint at 1000 says"}, ProblemHead},
		{"truncated with the later checkpoints", runSQL("DELETE FROM audit WHERE seq > 999",
			"DELETE FROM audit_checkpoints WHERE seq > 999"),
			[]string{"the head names a later checkpoint than those stored (none left)", "truncated after 999: the signed head says the chain ends at 2500"}, ProblemCheckpoint},
		{"checkpoint deleted", runSQL("DELETE FROM audit_checkpoints WHERE seq = 1000"),
			[]string{"checkpoint at 2000: does not link to the checkpoint before it"}, ProblemCheckpoint},
		{"checkpoint signature altered", runSQL("UPDATE audit_checkpoints SET sig = zeroblob(64) WHERE seq = 2000"),
			[]string{"checkpoint at 2000: bad signature"}, ProblemCheckpoint},
		{"head moved back", runSQL("UPDATE audit_head SET seq = 2400"),
			[]string{"the head: bad signature"}, ProblemHead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := copyFile(t, base)
			tamper(t, path, tc.tamper)
			l := openAt(t, path)
			rep := verify(t, l)
			if rep.OK() {
				t.Fatal("tampering not detected")
			}
			var text []string
			for _, p := range rep.Problems {
				text = append(text, p.Detail)
			}
			all := strings.Join(text, "\n")
			at := 0
			for _, w := range tc.want {
				i := strings.Index(all[at:], w)
				if i < 0 {
					t.Fatalf("problems do not say %q (in order):\n%s", w, all)
				}
				at += i + len(w)
			}
			if rep.Problems[0].Kind != tc.kind {
				t.Errorf("first problem is %s, want %s:\n%s", rep.Problems[0].Kind, tc.kind, all)
			}
			t.Logf("%s", all)
		})
	}
}

// TestAuditForgedCheckpointIsDetected: a tamperer with a key of its own
// rewrites an entry, the chain after it, and signs new checkpoints and a
// new head. The signatures check, but not as the ledger's owner's.
func TestAuditForgedCheckpointIsDetected(t *testing.T) {
	me, forger, payer := newParty(t), newParty(t), newParty(t)
	path := filepath.Join(t.TempDir(), File)
	l, c, _ := newChain(t, path, me)
	// A receipt makes me the ledger's owner.
	if _, err := l.Put(me.id, both(t, me, payer, nil)); err != nil {
		t.Fatal(err)
	}
	appendAll(t, c, entries(1500), 500)
	if err := c.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if rep := verify(t, l); !rep.OK() {
		t.Fatalf("before: %+v", rep)
	}
	tamper(t, path, runSQL("UPDATE audit SET tokens = 7 WHERE seq = 1200"))
	tamper(t, path, rehash(1200, 1500))
	tamper(t, path, runSQL("DELETE FROM audit_checkpoints WHERE seq > 1000", "DELETE FROM audit_head"))
	// The forger's chain object picks up where the file ends and signs.
	f, err := NewChain(l, forger.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	rep := verify(t, l)
	if rep.OK() {
		t.Fatal("forged checkpoint not detected")
	}
	var found bool
	for _, p := range rep.Problems {
		if strings.Contains(p.Detail, "checkpoint at 1500: signed by "+forger.id.String()+", not by the ledger's owner") {
			found = true
		}
	}
	if !found {
		t.Fatalf("problems %+v", rep.Problems)
	}
}

func TestAuditWriterAppendsWithoutWaiting(t *testing.T) {
	me := newParty(t)
	l, c, _ := newChain(t, filepath.Join(t.TempDir(), File), me)
	w := NewAuditWriter(l, me.id, c, quiet)
	for _, e := range entries(1200) {
		w.Audit(e)
	}
	w.Close()
	w.Audit(AuditEntry{Kind: AuditServed}) // after Close: ignored
	rep := verify(t, l)
	if !rep.OK() || rep.Entries != 1200 {
		t.Fatalf("report %+v", rep)
	}
	if got := fmt.Sprint(checkpointSeqs(t, l)); got != "[1000 1200]" {
		t.Fatalf("checkpoints at %s, want 1000 and one at Close", got)
	}
}

// TestAuditFullBufferIsRecorded: entries beyond the buffer are counted and
// the count appended, so the chain says what it lost.
func TestAuditFullBufferIsRecorded(t *testing.T) {
	me := newParty(t)
	l, c, _ := newChain(t, filepath.Join(t.TempDir(), File), me)
	w := &Writer{l: l, self: me.id, log: quiet, chain: c, most: 10, kick: make(chan struct{}, 1)} // not running
	for _, e := range entries(15) {
		w.Audit(e)
	}
	w.flushAudit()
	tail, err := l.AuditTail(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(tail) != 11 || tail[10].Kind != AuditDropped || tail[10].Tokens != 5 {
		t.Fatalf("%d entries, last %+v", len(tail), tail[len(tail)-1])
	}
}

// TestAccountingAuditsItsHooks: served calls (refusals by policy too, busy
// ones not), tallies and refusals from elsewhere land in the chain.
func TestAccountingAuditsItsHooks(t *testing.T) {
	me, caller, worker := newParty(t), newParty(t), newParty(t)
	l, c, _ := newChain(t, filepath.Join(t.TempDir(), File), me)
	a := &Accounting{Ledger: l, Self: me.id, Key: me.key, Chain: c, AuditPrompts: true, Log: quiet}
	var heard int
	served := a.Served(func(context.Context, infer.Completion) { heard++ })
	req := inference.Request{Model: "m", Messages: []inference.Message{{Role: "user", Content: "hello"}}}
	answer := receipt.Sum([]byte("hi there"))
	served(context.Background(), infer.Completion{Caller: caller.id, Model: "m", Request: req, PromptTokens: 3, CompletionTokens: 2,
		Outcome: infer.OutcomeOK, AnswerHash: answer, Answer: "hi there"})
	served(context.Background(), infer.Completion{Caller: caller.id, Model: "m", Request: req, Outcome: infer.CodeConsent})
	served(context.Background(), infer.Completion{Caller: caller.id, Model: "m", Request: req, Outcome: infer.CodeBusy})
	if err := a.StoreTally(agreed(t, me, worker, nil)); err != nil {
		t.Fatal(err)
	}
	a.Audit(AuditEntry{Kind: AuditRefused, Peer: caller.id, Model: "expert-m", Outcome: infer.CodeQuota})
	if heard != 3 {
		t.Fatalf("the next hook heard %d calls", heard)
	}
	es, err := l.AuditTail(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Kind+":"+e.Outcome)
	}
	if s := strings.Join(got, " "); s != "served:ok refused:consent_refused tally:expert/paid refused:quota_exceeded" {
		t.Fatalf("entries %s", s)
	}
	e := es[0]
	want, raw := RequestHash(req)
	if e.Peer != caller.id || e.Tokens != 5 || e.RequestHash != want || e.AnswerHash != answer ||
		!e.HasPrompt || e.Prompt != string(raw) || receipt.Sum([]byte(e.Prompt)) != e.RequestHash || e.Answer != "hi there" {
		t.Fatalf("served entry %+v", e)
	}
	if es[1].HasAnswer || es[1].AnswerHash != (receipt.Hash{}) {
		t.Fatalf("a refusal has an answer: %+v", es[1])
	}
	if es[2].Peer != worker.id {
		t.Fatalf("tally entry names %s, not the worker", es[2].Peer)
	}
	if rep := verify(t, l); !rep.OK() {
		t.Fatalf("report %+v", rep.Problems)
	}

	// Without --audit-prompts only the hashes are kept.
	a.AuditPrompts = false
	served(context.Background(), infer.Completion{Caller: caller.id, Model: "m", Request: req, Outcome: infer.OutcomeOK, Answer: "secret"})
	es, _ = l.AuditTail(context.Background(), 1)
	if es[0].HasPrompt || es[0].HasAnswer {
		t.Fatalf("prompt kept without AuditPrompts: %+v", es[0])
	}
}
