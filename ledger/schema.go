package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// A migration moves the schema from version n-1 to n, where n is its place
// in migrations counted from 1. Migrations are only ever appended: a file at
// version n has run exactly the first n. A new version is a new function at
// the end of the list that alters tables with SQL (ALTER TABLE, new tables,
// copying rows); it runs inside the one transaction that also records it.
var migrations = []func(ctx context.Context, tx *sql.Tx) error{
	schemaV1,
	schemaV2,
	schemaV3,
}

// schemaV1 is the first schema.
//
// Tables are STRICT, so a value of the wrong type (an aggregate that
// overflowed into a float, say) is an error rather than stored. Amounts are
// micro-credits; times are Unix milliseconds.
//
//	meta          key/value facts about the ledger: its owner's peer ID
//	counterparts  one row per peer we have a receipt with, holding the
//	              aggregates of its receipts (updated with each receipt)
//	receipts      every receipt once: its ID, counterpart, whether we served
//	              (1) or were served (0), whether both signed it, its start,
//	              tokens and cost, and the signed bytes as received
//	api_keys      keys of the local HTTP API by name: the SHA-256 of the
//	              secret, the budget per period and the use of the current
//	              period (epoch counts periods since created)
func schemaV1(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
) STRICT;

CREATE TABLE counterparts (
	id       INTEGER PRIMARY KEY,
	peer     BLOB NOT NULL UNIQUE,
	earned   INTEGER NOT NULL DEFAULT 0 CHECK (earned >= 0),
	spent    INTEGER NOT NULL DEFAULT 0 CHECK (spent >= 0),
	signed   INTEGER NOT NULL DEFAULT 0 CHECK (signed >= 0),
	unsigned INTEGER NOT NULL DEFAULT 0 CHECK (unsigned >= 0)
) STRICT;

CREATE TABLE receipts (
	id     BLOB NOT NULL UNIQUE CHECK (length(id) = 16),
	peer   INTEGER NOT NULL REFERENCES counterparts (id),
	served INTEGER NOT NULL CHECK (served IN (0, 1)),
	signed INTEGER NOT NULL CHECK (signed IN (0, 1)),
	start  INTEGER NOT NULL,
	tokens INTEGER NOT NULL CHECK (tokens >= 0),
	cost   INTEGER NOT NULL CHECK (cost >= 0),
	raw    BLOB NOT NULL
) STRICT;

-- ServedTokens: tokens served to a peer since a time, from the index alone.
CREATE INDEX receipts_by_peer ON receipts (peer, served, start, tokens);
-- Statement: receipts of a period in order.
CREATE INDEX receipts_by_start ON receipts (start);

CREATE TABLE api_keys (
	name    TEXT PRIMARY KEY,
	hash    BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
	budget  INTEGER NOT NULL CHECK (budget > 0),
	period  INTEGER NOT NULL CHECK (period > 0),
	created INTEGER NOT NULL,
	epoch   INTEGER NOT NULL DEFAULT 0 CHECK (epoch >= 0),
	used    INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
	carry   INTEGER NOT NULL DEFAULT 0 CHECK (carry >= 0)
) STRICT;
`)
	return err
}

// schemaV2 adds signed tallies (receipt.SignedTally): expert calls and
// shard bytes one peer did for another over a window, settled in one
// record. They count in the same counterparts aggregates as receipts.
//
//	tallies       every tally once: its ID, counterpart, whether we did the
//	              work (1, we were the worker) or paid for it (0), whether
//	              both signed it (a disputed one has the payer's signature
//	              only), its kind, window and cost, and the signed bytes as
//	              received
//	counterparts  gains the count of signed tallies and of disputed ones;
//	              earned and spent now sum signed tallies too
func schemaV2(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `
CREATE TABLE tallies (
	id     BLOB NOT NULL UNIQUE CHECK (length(id) = 16),
	peer   INTEGER NOT NULL REFERENCES counterparts (id),
	worked INTEGER NOT NULL CHECK (worked IN (0, 1)),
	signed INTEGER NOT NULL CHECK (signed IN (0, 1)),
	kind   INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 255),
	start  INTEGER NOT NULL,
	end    INTEGER NOT NULL CHECK (end >= start),
	cost   INTEGER NOT NULL CHECK (cost >= 0),
	raw    BLOB NOT NULL
) STRICT;

-- Sums per counterpart (an audit, a recount) from the index alone.
CREATE INDEX tallies_by_peer ON tallies (peer, worked, signed, cost);
-- Statement: tallies of a period in order.
CREATE INDEX tallies_by_start ON tallies (start);

ALTER TABLE counterparts ADD COLUMN tallies INTEGER NOT NULL DEFAULT 0 CHECK (tallies >= 0);
ALTER TABLE counterparts ADD COLUMN disputed INTEGER NOT NULL DEFAULT 0 CHECK (disputed >= 0);
`)
	return err
}

// schemaV3 adds the audit chain (see audit.go): what this peer served,
// asked for, settled and refused, hash-chained, with signed checkpoints.
//
//	audit              one row per entry, seq from 1 with no gaps: its time,
//	                   kind, counterpart (peer ID bytes, empty for none),
//	                   model, tokens, outcome, the SHA-256 of the request and
//	                   of the answer (NULL: none), the request and answer
//	                   themselves only when prompts are audited (else NULL),
//	                   the previous entry's hash and its own
//	audit_checkpoints  a signed (seq, time, hash of entry seq, digest of the
//	                   previous checkpoint) every 1,000 entries or minute
//	audit_head         one row: the signed (seq, hash) of the last entry and
//	                   the last checkpoint's digest, rewritten with each batch
func schemaV3(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `
CREATE TABLE audit (
	seq     INTEGER PRIMARY KEY CHECK (seq > 0),
	time    INTEGER NOT NULL,
	kind    TEXT NOT NULL,
	peer    BLOB NOT NULL,
	model   TEXT NOT NULL,
	tokens  INTEGER NOT NULL,
	outcome TEXT NOT NULL,
	request BLOB CHECK (request IS NULL OR length(request) = 32),
	answer  BLOB CHECK (answer IS NULL OR length(answer) = 32),
	prompt  TEXT,
	text    TEXT,
	prev    BLOB NOT NULL CHECK (length(prev) = 32),
	hash    BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;

CREATE TABLE audit_checkpoints (
	seq    INTEGER PRIMARY KEY,
	time   INTEGER NOT NULL,
	hash   BLOB NOT NULL CHECK (length(hash) = 32),
	prev   BLOB NOT NULL CHECK (length(prev) = 32),
	signer BLOB NOT NULL,
	sig    BLOB NOT NULL
) STRICT;

CREATE TABLE audit_head (
	id     INTEGER PRIMARY KEY CHECK (id = 1),
	seq    INTEGER NOT NULL,
	time   INTEGER NOT NULL,
	hash   BLOB NOT NULL CHECK (length(hash) = 32),
	cp     BLOB NOT NULL CHECK (length(cp) = 32),
	signer BLOB NOT NULL,
	sig    BLOB NOT NULL
) STRICT;
`)
	return err
}

// version reads the schema version of the database: 0 for an empty file.
// A database with tables but no version table is not a ledger.
func version(ctx context.Context, q querier) (int, error) {
	var tables int
	var versioned bool
	err := q.QueryRowContext(ctx, `SELECT count(*), coalesce(max(name = 'schema_version'), 0)
		FROM sqlite_schema WHERE type = 'table'`).Scan(&tables, &versioned)
	if err != nil {
		return 0, fmt.Errorf("not a readable SQLite database: %w", err)
	}
	switch {
	case tables == 0:
		return 0, nil
	case !versioned:
		return 0, errors.New("a SQLite database but not a ledger (no schema_version table)")
	}
	var v int
	if err := q.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	if v > len(migrations) {
		return v, fmt.Errorf("schema version %d is newer than this mwpeer knows (%d); use a newer mwpeer", v, len(migrations))
	}
	return v, nil
}

// migrate applies the missing migrations in one write transaction, reading
// the version again under the write lock: another process may have
// migrated the file in the meantime.
func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	v, err := version(ctx, tx)
	if err != nil {
		return err
	}
	if v == 0 {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE schema_version (
			version INTEGER PRIMARY KEY,
			applied INTEGER NOT NULL
		) STRICT`); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
	}
	for n := v + 1; n <= len(migrations); n++ {
		if err := migrations[n-1](ctx, tx); err != nil {
			return fmt.Errorf("migrate to schema version %d: %w", n, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO schema_version (version, applied) VALUES (?, ?)", n, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("record schema version %d: %w", n, err)
		}
	}
	return tx.Commit()
}
