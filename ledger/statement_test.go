package ledger

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/receipt"
)

// statementLedger holds receipts inside and around the day from epoch:
// served, spent, unsigned, with two counterparts.
func statementLedger(t *testing.T) (*Ledger, party) {
	l := open(t)
	me, a, b := newParty(t), newParty(t), newParty(t)
	at := func(d time.Duration, cost uint64) func(*receipt.Receipt) {
		return func(r *receipt.Receipt) { r.Start, r.Cost = epoch.Add(d), cost }
	}
	for _, s := range []*receipt.Signed{
		both(t, me, a, at(-time.Millisecond, 1)), // before the period
		both(t, me, a, at(0, 100)),
		both(t, a, me, at(time.Hour, 250)),
		serve(t, me, b, at(2*time.Hour, 999)),
		both(t, b, me, at(3*time.Hour, 40)),
		both(t, me, b, at(3*time.Hour, 7)),  // same start: ordered by ID
		both(t, me, b, at(24*time.Hour, 1)), // at the end: outside
	} {
		if _, err := l.Put(me.id, s); err != nil {
			t.Fatal(err)
		}
	}
	return l, me
}

func TestStatementVerifies(t *testing.T) {
	l, me := statementLedger(t)
	st, err := l.Statement(epoch, epoch.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Receipts) != 5 || st.Peer != me.id {
		t.Fatalf("statement of %d receipts for %s", len(st.Receipts), st.Peer)
	}
	want := Totals{Earned: 107, Spent: 290, Balance: 183, Receipts: 4, Unsigned: 1, Peers: 2}
	if st.Totals != want {
		t.Fatalf("totals %+v, want %+v", st.Totals, want)
	}
	var buf bytes.Buffer
	if err := WriteStatement(&buf, st); err != nil {
		t.Fatal(err)
	}
	got, err := VerifyStatement(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("a fresh statement does not verify: %v\n%s", err, buf.Bytes())
	}
	if got.Totals != want || len(got.Peers) != 2 {
		t.Fatalf("verified statement: %+v", got)
	}

	empty, err := l.Statement(epoch.Add(-48*time.Hour), epoch.Add(-24*time.Hour))
	if err != nil || len(empty.Receipts) != 0 {
		t.Fatalf("empty period: %v %v", empty, err)
	}
	buf.Reset()
	WriteStatement(&buf, empty)
	if _, err := VerifyStatement(&buf); err != nil {
		t.Fatalf("empty statement: %v", err)
	}
	if _, err := l.Statement(epoch, epoch); err == nil {
		t.Fatal("a statement of an empty period")
	}
}

// TestStatementWithAnyByteChangedFails changes each byte of a written
// statement in turn; not one of the results may verify.
func TestStatementWithAnyByteChangedFails(t *testing.T) {
	l, _ := statementLedger(t)
	st, err := l.Statement(epoch, epoch.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	WriteStatement(&buf, st)
	good := buf.Bytes()
	step := 1
	if testing.Short() {
		step = 7
	}
	for i := 0; i < len(good); i += step {
		bad := bytes.Clone(good)
		bad[i] ^= 0x01
		if i%3 == 0 {
			bad[i] ^= 0x21 // a case change instead
		}
		if _, err := VerifyStatement(bytes.NewReader(bad)); err == nil {
			t.Fatalf("byte %d changed (%q to %q) and the statement still verifies", i, good[i], bad[i])
		}
	}
	if _, err := VerifyStatement(bytes.NewReader(good[:len(good)-1])); err == nil {
		t.Fatal("a truncated statement verifies")
	}
}

// TestForgedStatementsFail edits statements as a forger would, keeping the
// JSON well formed and the checksum right, and checks each is caught by
// the check it targets.
func TestForgedStatementsFail(t *testing.T) {
	l, me := statementLedger(t)
	orig, err := l.Statement(epoch, epoch.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	other := newParty(t)
	outside := both(t, me, other, func(r *receipt.Receipt) { r.Start = epoch.Add(-time.Hour) })
	forged := both(t, me, other, nil)
	forged.Cost *= 1000 // after signing
	for _, c := range []struct {
		name, want string
		edit       func(st *Statement)
	}{
		{"sums inflated", "per-peer sums", func(st *Statement) { st.Peers[0].Spent += 1000; st.Peers[0].Balance += 1000 }},
		{"totals inflated", "totals", func(st *Statement) { st.Totals.Earned++ }},
		{"receipt dropped", "per-peer sums", func(st *Statement) { st.Receipts = st.Receipts[1:] }},
		{"receipt repeated", "twice", func(st *Statement) { st.Receipts = append(st.Receipts, st.Receipts[0]) }},
		{"receipts reordered", "out of order", func(st *Statement) {
			st.Receipts[0], st.Receipts[1] = st.Receipts[1], st.Receipts[0]
		}},
		{"receipt from outside the period", "outside the period", func(st *Statement) {
			st.Receipts = append([]string{enc(outside)}, st.Receipts...)
		}},
		{"altered receipt", "signature", func(st *Statement) { st.Receipts = append(st.Receipts, enc(forged)) }},
		{"someone else's statement", "not one of", func(st *Statement) { st.Peer = other.id }},
		{"not base64", "receipt 0", func(st *Statement) { st.Receipts[0] = "!!" + st.Receipts[0] }},
		{"version", "version", func(st *Statement) { st.Version = 2 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := *orig
			st.Receipts = append([]string(nil), orig.Receipts...)
			st.Peers = append([]Balance(nil), orig.Peers...)
			c.edit(&st)
			st.Checksum, _ = checksum(&st)
			var buf bytes.Buffer
			WriteStatement(&buf, &st)
			_, err := VerifyStatement(&buf)
			if !errors.Is(err, ErrBadStatement) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error about %q", err, c.want)
			}
		})
	}
	// Valid JSON, right content, but reformatted: not as written.
	var buf bytes.Buffer
	WriteStatement(&buf, orig)
	var compact bytes.Buffer
	json.Compact(&compact, buf.Bytes())
	if _, err := VerifyStatement(&compact); err == nil || !strings.Contains(err.Error(), "not as written") {
		t.Fatalf("reformatted statement: %v", err)
	}
	if _, err := VerifyStatement(strings.NewReader(`{"version":1,"extra":true}`)); !errors.Is(err, ErrBadStatement) {
		t.Fatalf("unknown field: %v", err)
	}
}

func enc(s *receipt.Signed) string { return base64.StdEncoding.EncodeToString(s.Marshal()) }
