package ledger

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/receipt"
)

func TestReopenKeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), File)
	me, them := newParty(t), newParty(t)
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Put(me.id, both(t, me, them, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddKey("alice", 10, 0); err != nil {
		t.Fatal(err)
	}
	before, _, _ := l.Balances()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openAt(t, path)
	after, tot, err := l.Balances()
	if err != nil || len(after) != 1 || after[0] != before[0] || l.Counters() != tot {
		t.Fatalf("after reopening: %+v %+v %v; before %+v", after, tot, err, before)
	}
	if ks, _ := l.Keys(); len(ks) != 1 {
		t.Fatalf("keys after reopening: %+v", ks)
	}
	if v, _ := version(context.Background(), l.r); v != len(migrations) {
		t.Fatalf("schema version %d", v)
	}
	if _, err := l.Put(newParty(t).id, both(t, me, them, nil)); err == nil {
		t.Fatal("the owner was forgotten")
	}
	audit(t, l)
}

// TestMigrationToNextVersion opens a file at the latest schema version with
// code that knows one more, as a future release will, and a file at that
// next version with code that knows only the latest.
func TestMigrationToNextVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), File)
	me, them := newParty(t), newParty(t)
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Put(me.id, both(t, me, them, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.PutTally(me.id, agreed(t, them, me, nil)); err != nil {
		t.Fatal(err)
	}
	l.Close()

	latest := migrations
	next := len(latest) + 1
	t.Cleanup(func() { migrations = latest })
	migrations = append(latest[:len(latest):len(latest)], func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `ALTER TABLE receipts ADD COLUMN note TEXT NOT NULL DEFAULT '';
			CREATE TABLE future (id BLOB PRIMARY KEY) STRICT`)
		return err
	})
	l = openAt(t, path)
	if v, _ := version(context.Background(), l.r); v != next {
		t.Fatalf("version %d after migrating, want %d", v, next)
	}
	var n int
	if err := l.r.QueryRow("SELECT count(*) FROM receipts WHERE note = ''").Scan(&n); err != nil || n != 1 {
		t.Fatalf("migrated receipts: %d, %v", n, err)
	}
	if _, err := l.Put(me.id, both(t, me, them, nil)); err != nil {
		t.Fatal(err)
	}
	audit(t, l)
	l.Close()

	// Opening it again at the next version migrates nothing.
	l = openAt(t, path)
	l.Close()

	migrations = latest
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("a version %d file opened by version %d code: %v", next, len(latest), err)
	}
}

// writeV1 writes a ledger at path as the version 1 code left it: the schema
// of schemaV1 alone, and owner's receipts with their aggregates as version
// 1's Put stored them.
func writeV1(t *testing.T, path string, owner peer.ID, rs []*receipt.Signed) {
	t.Helper()
	ctx := context.Background()
	if err := create(path); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("PRAGMA journal_mode = WAL"); err != nil {
		t.Fatal(err)
	}
	all := migrations
	migrations = all[:1]
	err = migrate(ctx, db)
	migrations = all
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := tx.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec("INSERT INTO meta (key, value) VALUES ('owner', ?)", []byte(owner))
	for _, s := range rs {
		other, served := s.Server, false
		if s.Server == owner {
			other, served = s.Requester, true
		}
		signed := s.RequesterSig != nil
		exec("INSERT INTO counterparts (peer) VALUES (?) ON CONFLICT (peer) DO NOTHING", []byte(other))
		var pid int64
		if err := tx.QueryRow("SELECT id FROM counterparts WHERE peer = ?", []byte(other)).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		exec("INSERT INTO receipts (id, peer, served, signed, start, tokens, cost, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
			s.ID[:], pid, served, signed, s.Start.UnixMilli(), int64(s.PromptTokens)+int64(s.CompletionTokens), int64(s.Cost), s.Marshal())
		var earned, spent, n, u int64
		switch {
		case !signed:
			u = 1
		case served:
			earned, n = int64(s.Cost), 1
		default:
			spent, n = int64(s.Cost), 1
		}
		exec("UPDATE counterparts SET earned = earned + ?, spent = spent + ?, signed = signed + ?, unsigned = unsigned + ? WHERE id = ?",
			earned, spent, n, u, pid)
	}
	exec(`INSERT INTO api_keys (name, hash, budget, period, created) VALUES ('alice', ?, 1000, ?, ?)`,
		bytes.Repeat([]byte{7}, 32), DefaultKeyPeriod.Milliseconds(), epoch.UnixMilli())
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if v, err := version(ctx, db); err != nil || v != 1 {
		t.Fatalf("written at version %d, %v", v, err)
	}
}

// TestMigrationFromV1KeepsReceiptsAndBalances opens a version 1 ledger:
// it migrates to the latest version in place, keeps every receipt, balance
// and key, and then takes tallies beside the receipts.
func TestMigrationFromV1KeepsReceiptsAndBalances(t *testing.T) {
	path := filepath.Join(t.TempDir(), File)
	me, a, b := newParty(t), newParty(t), newParty(t)
	cost := func(c uint64) func(*receipt.Receipt) { return func(r *receipt.Receipt) { r.Cost = c } }
	unsigned := serve(t, me, b, cost(999))
	rs := []*receipt.Signed{
		both(t, me, a, cost(100)), // earned
		both(t, a, me, cost(250)), // spent
		unsigned,
		both(t, b, me, cost(40)),
		both(t, me, b, cost(7)),
	}
	writeV1(t, path, me.id, rs)

	l := openAt(t, path)
	if v, _ := version(context.Background(), l.r); v != len(migrations) {
		t.Fatalf("schema version %d after opening, want %d", v, len(migrations))
	}
	want := []Balance{
		{Peer: b.id, Earned: 7, Spent: 40, Balance: 33, Receipts: 2, Unsigned: 1},
		{Peer: a.id, Earned: 100, Spent: 250, Balance: 150, Receipts: 2},
	}
	slices.SortFunc(want, func(x, y Balance) int { return cmp.Or(cmp.Compare(y.Balance, x.Balance), cmp.Compare(x.Peer, y.Peer)) })
	bs, tot, err := l.Balances()
	if err != nil || !slices.Equal(bs, want) {
		t.Fatalf("balances after migrating: %+v, %v; want %+v", bs, err, want)
	}
	if (tot != Totals{Earned: 107, Spent: 290, Balance: 183, Receipts: 4, Unsigned: 1, Peers: 2}) || l.Counters() != tot {
		t.Fatalf("totals %+v, counters %+v", tot, l.Counters())
	}
	if ks, err := l.Keys(); err != nil || len(ks) != 1 || ks[0].Name != "alice" {
		t.Fatalf("keys after migrating: %+v, %v", ks, err)
	}
	audit(t, l)

	// The receipts are the ones stored: each again is no news, the
	// unsigned one upgrades, and the owner is kept.
	for _, s := range rs {
		if added, err := l.Put(me.id, s); err != nil || added {
			t.Fatalf("receipt %s again: %v, %v", s.ID, added, err)
		}
	}
	if added, err := l.Put(me.id, signedBy(t, unsigned, b)); err != nil || !added {
		t.Fatalf("upgrade after migrating: %v, %v", added, err)
	}
	if _, err := l.Put(a.id, both(t, a, b, nil)); err == nil {
		t.Fatal("the owner was forgotten")
	}
	// And tallies count beside them.
	st := agreed(t, a, me, nil)
	if added, err := l.PutTally(me.id, st); err != nil || !added {
		t.Fatalf("tally after migrating: %v, %v", added, err)
	}
	ba, _ := l.Balance(a.id)
	if e := 100 + int64(st.Cost); (ba != Balance{Peer: a.id, Earned: e, Spent: 250, Balance: 250 - e, Receipts: 2, Tallies: 1}) {
		t.Fatalf("balance of a with a tally: %+v", ba)
	}
	audit(t, l)
	stmt, err := l.Statement(epoch, epoch.Add(time.Hour))
	if err != nil || len(stmt.Receipts) != len(rs) || len(stmt.Tallies) != 1 {
		t.Fatalf("statement after migrating: %v, %v", stmt, err)
	}
}

func TestUnreadableFilesAreErrorsAndLeftAlone(t *testing.T) {
	dir := t.TempDir()
	valid := filepath.Join(dir, "valid.db")
	l, err := Open(valid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Put(newParty(t).id, both(t, newParty(t), newParty(t), nil)); err == nil {
		t.Fatal("stored a receipt between other peers")
	}
	l.Close()
	good, _ := os.ReadFile(valid)

	header := bytes.Clone(good)
	copy(header[16:], "garbage garbage garbage")
	other := filepath.Join(dir, "other.db")
	db, err := sql.Open("sqlite", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE notes (x TEXT)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	otherBytes, _ := os.ReadFile(other)

	for _, c := range []struct {
		name string
		data []byte
	}{
		{"text", []byte("these are not the receipts you are looking for\n")},
		{"random", bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 2048)},
		{"damaged header", header},
		{"truncated", good[:100]},
		{"another database", otherBytes},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), File)
			if err := os.WriteFile(path, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if l, err := Open(path); err == nil {
				l.Close()
				t.Fatal("opened")
			} else {
				t.Log(err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, c.data) {
				t.Fatal("the file was changed")
			}
		})
	}
	for _, path := range []string{"", filepath.Join(dir, "a?b.db"), dir, filepath.Join(dir, "missing", File)} {
		if l, err := Open(path); err == nil {
			l.Close()
			t.Errorf("Open(%q) succeeded", path)
		}
	}
}

func TestFileIsPrivate(t *testing.T) {
	dir := t.TempDir()
	l := openAt(t, filepath.Join(dir, File))
	if _, err := l.AddKey("alice", 10, 0); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{File, File + "-wal", File + "-shm"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", name, st.Mode().Perm())
		}
	}
	// A file made readable by others is narrowed when opened.
	l.Close()
	path := filepath.Join(dir, File)
	os.Chmod(path, 0o644)
	openAt(t, path)
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("reopened file has mode %v", st.Mode().Perm())
	}
}

// TestSecondProcessReadsWhileThePeerWrites opens the same file twice, as
// the mwpeer ledger command does beside a running peer.
func TestSecondProcessReadsWhileThePeerWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), File)
	peerSide := openAt(t, path)
	cli := openAt(t, path)
	me, them := newParty(t), newParty(t)
	if _, err := peerSide.Put(me.id, both(t, me, them, nil)); err != nil {
		t.Fatal(err)
	}
	if b, err := cli.Balance(them.id); err != nil || b.Receipts != 1 {
		t.Fatalf("the second opener sees %+v, %v", b, err)
	}
	if _, err := cli.AddKey("alice", 10, 0); err != nil {
		t.Fatal(err)
	}
	if has, err := peerSide.HasKeys(); err != nil || !has {
		t.Fatalf("the peer does not see the new key: %v", err)
	}
}
