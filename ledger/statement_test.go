package ledger

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/receipt"
)

// statementLedger holds receipts and tallies inside and around the day
// from epoch: served, spent, unsigned or disputed, with three counterparts
// (the third by a tally only).
func statementLedger(t testing.TB) (*Ledger, party) {
	l := open(t)
	me, a, b, c := newParty(t), newParty(t), newParty(t), newParty(t)
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
	for _, st := range []*receipt.SignedTally{
		agreed(t, me, b, tallyAt(-time.Millisecond, 9)), // before the period
		agreed(t, a, me, tallyAt(30*time.Minute, 1000)), // we worked for a
		propose(t, me, b, tallyAt(4*time.Hour, 500)),    // disputed
		agreed(t, me, c, tallyAt(5*time.Hour, 2000)),    // c worked for us
		agreed(t, me, a, tallyAt(5*time.Hour, 30)),      // same start: ordered by ID
		agreed(t, a, me, tallyAt(24*time.Hour, 9)),      // at the end: outside
	} {
		if _, err := l.PutTally(me.id, st); err != nil {
			t.Fatal(err)
		}
	}
	return l, me
}

// tallyAt is a change to propose: an expert tally starting d after epoch,
// its flops chosen so that it costs cost.
func tallyAt(d time.Duration, cost uint64) func(*receipt.Tally) {
	return func(tl *receipt.Tally) {
		tl.Start, tl.End, tl.Flops = epoch.Add(d), epoch.Add(d+30*time.Second), 2_000_000*cost
	}
}

func TestStatementVerifies(t *testing.T) {
	l, me := statementLedger(t)
	st, err := l.Statement(epoch, epoch.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Receipts) != 5 || len(st.Tallies) != 4 || st.Peer != me.id || st.Version != StatementVersion {
		t.Fatalf("statement (version %d) of %d receipts and %d tallies for %s", st.Version, len(st.Receipts), len(st.Tallies), st.Peer)
	}
	want := Totals{Earned: 1107, Spent: 2320, Balance: 1213, Receipts: 4, Unsigned: 1, Tallies: 3, Disputed: 1, Peers: 3}
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
	if got.Totals != want || len(got.Peers) != 3 {
		t.Fatalf("verified statement: %+v", got)
	}
	for _, b := range got.Peers {
		if b.Tallies+b.Disputed > 0 && b.Receipts == 0 && b.Spent != 2000 {
			t.Errorf("the counterpart of a tally only: %+v", b)
		}
	}

	empty, err := l.Statement(epoch.Add(-48*time.Hour), epoch.Add(-24*time.Hour))
	if err != nil || len(empty.Receipts) != 0 || empty.Tallies == nil || len(empty.Tallies) != 0 {
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
// statement, its receipts and tallies included, in turn; not one of the
// results may verify.
func TestStatementWithAnyByteChangedFails(t *testing.T) {
	l, _ := statementLedger(t)
	st, err := l.Statement(epoch, epoch.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	WriteStatement(&buf, st)
	eachByteChangedFails(t, buf.Bytes())
}

// eachByteChangedFails checks that good verifies and that no copy of it with
// one byte changed, nor a truncated one, does.
func eachByteChangedFails(t *testing.T, good []byte) {
	t.Helper()
	if _, err := VerifyStatement(bytes.NewReader(good)); err != nil {
		t.Fatalf("the original does not verify: %v", err)
	}
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
	outsideTally := agreed(t, other, me, tallyAt(-time.Hour, 5))
	forgedTally := agreed(t, other, me, tallyAt(time.Hour, 5))
	forgedTally.Rows *= 1000 // after signing
	othersTally := agreed(t, other, newParty(t), tallyAt(23*time.Hour, 5))
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
		{"tally dropped", "per-peer sums", func(st *Statement) { st.Tallies = st.Tallies[1:] }},
		{"tally repeated", "twice", func(st *Statement) { st.Tallies = append(st.Tallies, st.Tallies[0]) }},
		{"tallies reordered", "out of order", func(st *Statement) {
			st.Tallies[0], st.Tallies[1] = st.Tallies[1], st.Tallies[0]
		}},
		{"tally from outside the period", "outside the period", func(st *Statement) {
			st.Tallies = append([]string{encTally(outsideTally)}, st.Tallies...)
		}},
		{"altered tally", "signature", func(st *Statement) { st.Tallies = append(st.Tallies, encTally(forgedTally)) }},
		{"worker signature stripped", "per-peer sums", func(st *Statement) {
			for i, e := range st.Tallies {
				raw, _ := base64.StdEncoding.DecodeString(e)
				tl, _ := receipt.UnmarshalSignedTally(raw)
				if tl.WorkerSig != nil {
					tl.WorkerSig = nil
					st.Tallies[i] = encTally(tl)
					return
				}
			}
		}},
		{"a tally between other peers", "not one of", func(st *Statement) { st.Tallies = append(st.Tallies, encTally(othersTally)) }},
		{"tally not base64", "tally 0", func(st *Statement) { st.Tallies[0] = "!!" + st.Tallies[0] }},
		{"a receipt as a tally", "not a tally", func(st *Statement) { st.Tallies = append(st.Tallies, st.Receipts[0]) }},
		{"a tally as a receipt", "receipt 5", func(st *Statement) { st.Receipts = append(st.Receipts, st.Tallies[0]) }},
		{"tally sums moved to receipts", "per-peer sums", func(st *Statement) {
			for i := range st.Peers {
				st.Peers[i].Receipts += st.Peers[i].Tallies
				st.Peers[i].Tallies = 0
			}
		}},
		{"version", "version", func(st *Statement) { st.Version = StatementVersion + 1 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := *orig
			st.Receipts = append([]string(nil), orig.Receipts...)
			st.Tallies = append([]string(nil), orig.Tallies...)
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
	// A statement with tallies passed off as version 1, which has no place
	// for them.
	as1 := bytes.Replace(buf.Bytes(), []byte(`"version": 2,`), []byte(`"version": 1,`), 1)
	if _, err := VerifyStatement(bytes.NewReader(as1)); !errors.Is(err, ErrBadStatement) || !strings.Contains(err.Error(), "tallies") {
		t.Fatalf("version 2 relabelled 1: %v", err)
	}
}

// TestVersion1StatementStillVerifies reads a statement written by the
// version 1 code (before tallies; testdata/statement-v1.json, exported from
// the ledger statementLedger made then): it verifies as it is, and not with
// any byte changed, nor relabelled as the current version.
func TestVersion1StatementStillVerifies(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "statement-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := VerifyStatement(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	want := Totals{Earned: 107, Spent: 290, Balance: 183, Receipts: 4, Unsigned: 1, Peers: 2}
	if st.Version != 1 || len(st.Receipts) != 5 || len(st.Tallies) != 0 || st.Totals != want || len(st.Peers) != 2 {
		t.Fatalf("version 1 statement read as %+v", st)
	}
	eachByteChangedFails(t, data)
	as2 := bytes.Replace(data, []byte(`"version": 1,`), []byte(`"version": 2,`), 1)
	if _, err := VerifyStatement(bytes.NewReader(as2)); !errors.Is(err, ErrBadStatement) {
		t.Fatalf("version 1 relabelled 2: %v", err)
	}
}

func enc(s *receipt.Signed) string { return base64.StdEncoding.EncodeToString(s.Marshal()) }

func encTally(s *receipt.SignedTally) string { return base64.StdEncoding.EncodeToString(s.Marshal()) }
