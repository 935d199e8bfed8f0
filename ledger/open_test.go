package ledger

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
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

// TestMigrationToV2 opens a version 1 file with code that knows a version
// 2, as a future release will, and a version 2 file with code that knows
// only version 1.
func TestMigrationToV2(t *testing.T) {
	path := filepath.Join(t.TempDir(), File)
	me, them := newParty(t), newParty(t)
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Put(me.id, both(t, me, them, nil)); err != nil {
		t.Fatal(err)
	}
	l.Close()

	v1 := migrations
	t.Cleanup(func() { migrations = v1 })
	migrations = append(v1[:len(v1):len(v1)], func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `ALTER TABLE receipts ADD COLUMN model TEXT NOT NULL DEFAULT '';
			CREATE TABLE tallies (id BLOB PRIMARY KEY) STRICT`)
		return err
	})
	l = openAt(t, path)
	if v, _ := version(context.Background(), l.r); v != 2 {
		t.Fatalf("version %d after migrating", v)
	}
	var n int
	if err := l.r.QueryRow("SELECT count(*) FROM receipts WHERE model = ''").Scan(&n); err != nil || n != 1 {
		t.Fatalf("migrated receipts: %d, %v", n, err)
	}
	if _, err := l.Put(me.id, both(t, me, them, nil)); err != nil {
		t.Fatal(err)
	}
	audit(t, l)
	l.Close()

	// Opening it again at version 2 migrates nothing.
	l = openAt(t, path)
	l.Close()

	migrations = v1
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("a version 2 file opened by version 1 code: %v", err)
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
