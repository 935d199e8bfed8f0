package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// File is the ledger's file name in the data dir.
const File = "ledger.db"

// busyTimeout is how long a statement waits for another process's write
// lock (the CLI adding a key while the peer stores a receipt) before it
// fails with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// Ledger is an open ledger file. Its methods are safe for concurrent use.
type Ledger struct {
	// Now is the clock of key periods; time.Now unless a test moves time.
	// Set it before the Ledger is used.
	Now func() time.Time

	path string
	w    *sql.DB // the one writing connection: transactions BEGIN IMMEDIATE, one at a time
	r    *sql.DB // read-only connections, which WAL lets run beside the writer

	put     putStmts  // on w
	balance *sql.Stmt // on r

	mu       sync.Mutex
	owner    peer.ID           // the peer whose ledger this is, once known
	counters Totals            // receipts and credits, kept from Open on
	known    map[peer.ID]int64 // counterpart row IDs of committed rows
}

// Open opens the ledger at path, creating it (mode 0600) when it does not
// exist, and applies missing schema migrations. A file that is not a
// ledger, is damaged, or has a newer schema is an error; the file is never
// replaced or rewritten then.
func Open(path string) (*Ledger, error) {
	if path == "" {
		return nil, errors.New("ledger: no path")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("ledger %s: the path may not contain ? or #", path)
	}
	if err := create(path); err != nil {
		return nil, err
	}
	l := &Ledger{Now: time.Now, path: path, known: make(map[peer.ID]int64)}
	var err error
	l.w, err = sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	l.w.SetMaxOpenConns(1)
	l.w.SetConnMaxIdleTime(0)
	if err := l.init(); err != nil {
		l.w.Close()
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	l.r, err = sql.Open("sqlite", dsn(path, true))
	if err != nil {
		l.w.Close()
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	l.r.SetMaxOpenConns(4)
	if err := l.prepare(); err != nil {
		l.Close()
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	if err := l.load(); err != nil {
		l.Close()
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	return l, nil
}

// create makes an empty file of mode 0600 at path unless one exists, so the
// database never exists with wider permissions (SQLite gives its -wal and
// -shm files the mode of the database). An existing file readable by others
// is narrowed to 0600.
func create(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("ledger %s: not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := f.Chmod(0o600); err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
	}
	return nil
}

// writerCache is the page cache of the writing connection, in bytes: it
// holds the upper levels of the receipt indexes, whose inserts land at
// random places (IDs are random).
const writerCache = 16 << 20

// dsn is the driver's connection string. Every connection waits up to
// busyTimeout for a lock. The writer (in WAL mode, which init sets and the
// file keeps) uses synchronous=FULL: each commit is fsynced to the WAL
// before Put returns, so it survives power loss, not only a killed
// process. It begins every transaction IMMEDIATE, taking the write lock up
// front instead of failing to upgrade a read lock. Readers are query_only.
func dsn(path string, readOnly bool) string {
	q := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)", busyTimeout.Milliseconds())
	if readOnly {
		return path + "?" + q + "&_query_only=1"
	}
	return path + "?" + q + "&_synchronous=FULL&_txlock=immediate&_pragma=cache_size(-" + strconv.Itoa(writerCache>>10) + ")"
}

func (l *Ledger) prepare() error {
	if err := l.put.prepare(l.w); err != nil {
		return err
	}
	var err error
	l.balance, err = l.r.Prepare("SELECT earned, spent, signed, unsigned, tallies, disputed FROM counterparts WHERE peer = ?")
	return err
}

// Close closes the ledger. Committed receipts are on disk whether or not it
// is called.
func (l *Ledger) Close() error {
	l.put.close()
	if l.balance != nil {
		l.balance.Close()
	}
	var errs []error
	if l.r != nil {
		errs = append(errs, l.r.Close())
	}
	errs = append(errs, l.w.Close())
	return errors.Join(errs...)
}

// Path is the ledger's file.
func (l *Ledger) Path() string { return l.path }

// init checks the file is a ledger (or empty), switches it to WAL and
// migrates it. Nothing is written to a file that is not a ledger.
func (l *Ledger) init() error {
	ctx := context.Background()
	v, err := version(ctx, l.w) // the first statement: a file that is not a database fails here
	if err != nil {
		return err
	}
	var mode string
	if err := l.w.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return fmt.Errorf("WAL mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %s, not WAL", mode)
	}
	if v == len(migrations) {
		return nil
	}
	return migrate(ctx, l.w)
}

// load reads what the ledger keeps in memory: its owner and the counters.
func (l *Ledger) load() error {
	ctx := context.Background()
	var owner []byte
	err := l.r.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'owner'").Scan(&owner)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return err
	default:
		l.owner = peer.ID(owner)
	}
	t, err := totals(ctx, l.r)
	if err != nil {
		return err
	}
	l.counters = t
	return nil
}

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// write runs fn in a write transaction and commits it.
func (l *Ledger) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := l.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}
