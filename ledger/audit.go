package ledger

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/receipt"
)

// The audit chain is an append-only, hash-chained log of what this peer
// did, kept in the ledger's database (tables audit, audit_checkpoints and
// audit_head; see schemaV3).
//
// Entry i holds its sequence number, time, kind, counterpart, model, tokens,
// outcome, the SHA-256 of the request and of the answer text, and, only
// when prompts are audited, the request and answer themselves; then
// prev, the hash of entry i-1 (32 zero bytes for entry 1), and its own hash:
// SHA-256 of the canonical encoding of all of the above (auditRow.sum).
//
// Every Every entries (seq a multiple of it) and whenever Interval has
// passed since the last checkpoint with entries after it, a checkpoint is
// written: (seq, time, the hash of entry seq, the digest of the previous
// checkpoint) signed with the host's key; the checkpoints form a chain of
// their own. Closing the Writer writes one too. The head, a single signed
// record of the last entry's (seq, hash) and the last checkpoint's digest,
// is rewritten in the same transaction as every batch of entries.
//
// What VerifyAudit detects, and what it cannot:
//   - An entry edited in place (any column but seq) whose hash was left as
//     it was: its hash no longer matches its content ("edited").
//   - An entry edited with its hash recomputed: the next entry's prev no
//     longer matches ("edited, hash recomputed"). When the whole rest of the
//     chain was recomputed, the next checkpoint's signed hash, or the head's,
//     no longer matches, which bounds the edit to the entries since the
//     checkpoint before.
//   - Deleted entries: a gap in seq ("missing"); deleted from the start, a
//     chain not starting at 1.
//   - Reordered entries (the contents of two rows swapped, or their seqs
//     exchanged): each holds content that hashes right only under the
//     other's seq ("out of order").
//   - A truncated tail: the signed head, and any checkpoint beyond the last
//     entry, name entries that are not there ("truncated"). Deleting the
//     last checkpoints breaks the head's link to them; deleting the head
//     while entries remain is reported; a forged checkpoint or head fails
//     its signature.
//   - Not detectable from the file alone: whoever holds the host's key (it
//     lives in the same data dir) can rewrite the chain and sign it anew;
//     the file (or all three tables together) rolled back to an earlier
//     state of itself, or emptied entirely, is a consistent chain. A head or
//     checkpoint kept elsewhere (mwpeer audit export) pins the past against
//     both: a later chain must still contain it.

// Kinds of audit entries.
const (
	AuditServed    = "served"     // this peer answered a peer's prompt; Outcome says how it ended
	AuditRefused   = "refused"    // this peer refused a peer's request by policy (consent, quota, ...)
	AuditRequested = "requested"  // this peer asked another for an answer
	AuditTally     = "tally"      // a tally of expert calls or shard bytes settled with a peer
	AuditDropped   = "dropped"    // Tokens entries were lost before they reached the disk (full buffer, failed write)
	AuditOutvoted  = "outvoted"   // a peer's answer to a verified request differed from the one two others agreed on; Outcome says where
	AuditBadExpert = "bad_expert" // an expert host answered rows that were not finite or that other replicas outvoted; Outcome says why
)

// AuditEntry is one entry of the audit chain.
type AuditEntry struct {
	Seq   int64     `json:"seq"`  // set when appended, from 1
	Time  time.Time `json:"time"` // kept to the millisecond; zero: when appended
	Kind  string    `json:"kind"`
	Peer  peer.ID   `json:"peer,omitempty"` // the counterpart
	Model string    `json:"model,omitempty"`
	// Tokens are an answer's prompt and completion tokens; for a tally, its
	// expert calls or shard bytes; for AuditDropped, the entries lost.
	Tokens  int64  `json:"tokens"`
	Outcome string `json:"outcome,omitempty"` // "ok" or an error code; for a tally its kind and side
	// RequestHash is RequestHash of the request (a tally: receipt.Sum of
	// its content); AnswerHash the SHA-256 of the answer text. Zero: none.
	RequestHash receipt.Hash `json:"-"`
	AnswerHash  receipt.Hash `json:"-"`
	// Prompt and Answer are the request (as RequestHash hashes it) and the
	// answer text, kept only when prompts are audited; HasPrompt and
	// HasAnswer say they were.
	Prompt, Answer       string       `json:"-"`
	HasPrompt, HasAnswer bool         `json:"-"`
	Prev, Hash           receipt.Hash `json:"-"` // set when appended
}

// RequestHash is the hash an audit entry keeps of a request: SHA-256 of its
// JSON form, the same on the requesting and the serving side. Prompt holds
// exactly those bytes when prompts are audited.
func RequestHash(req inference.Request) (receipt.Hash, []byte) {
	b, err := json.Marshal(req)
	if err != nil { // a request decoded from JSON always encodes
		return receipt.Hash{}, nil
	}
	return receipt.Sum(b), b
}

// Checkpoints of a Chain, by default.
const (
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = time.Minute
)

// Chain appends entries to the audit chain of a ledger and signs its
// checkpoints and head with the host's key. Its methods are safe for
// concurrent use; appends are serialized.
type Chain struct {
	// Now is the clock of entries and checkpoints; time.Now unless a test
	// moves time. Every and Interval say when checkpoints are written. Set
	// them before the Chain is used.
	Now      func() time.Time
	Every    int64
	Interval time.Duration

	l      *Ledger
	key    crypto.PrivKey
	signer peer.ID

	mu     sync.Mutex
	st     chainState
	loaded bool
}

// chainState is where the chain ends, as committed.
type chainState struct {
	seq      int64
	hash     receipt.Hash
	cpSeq    int64        // the last checkpoint's entry (0: none)
	cpTime   int64        // its time, Unix ms; with none, when the Chain first looked
	cpDigest receipt.Hash // its digest (zero: none)
}

// NewChain is the audit chain of l, signed with key.
func NewChain(l *Ledger, key crypto.PrivKey) (*Chain, error) {
	if key == nil {
		return nil, errors.New("audit chain: no key")
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("audit chain: %w", err)
	}
	return &Chain{Now: time.Now, Every: DefaultCheckpointEvery, Interval: DefaultCheckpointInterval, l: l, key: key, signer: id}, nil
}

// Append appends entries in one transaction, in order, setting their Seq,
// Prev and Hash (and a zero Time to now), and writes the checkpoints that
// fall due and the head. When it returns nil they are on disk.
func (c *Chain) Append(entries ...AuditEntry) error {
	_, err := c.append(entries)
	return err
}

func (c *Chain) append(entries []AuditEntry) ([]AuditEntry, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.Now()
	for i := range entries {
		if entries[i].Time.IsZero() {
			entries[i].Time = now
		}
	}
	err := c.write(func(ctx context.Context, tx *sql.Tx, s *chainState) error {
		ins, err := tx.PrepareContext(ctx, `INSERT INTO audit (seq, time, kind, peer, model, tokens, outcome, request, answer,
			prompt, text, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer ins.Close()
		var buf []byte
		for i := range entries {
			e := &entries[i]
			e.Seq, e.Prev = s.seq+1, s.hash
			r := rowOf(e)
			e.Hash, buf = r.sum(buf[:0])
			if _, err := ins.ExecContext(ctx, r.seq, r.time, e.Kind, []byte(e.Peer), e.Model, e.Tokens, e.Outcome,
				nullHash(e.RequestHash), nullHash(e.AnswerHash), nullString(e.Prompt, e.HasPrompt), nullString(e.Answer, e.HasAnswer),
				e.Prev[:], e.Hash[:]); err != nil {
				return fmt.Errorf("audit entry %d: %w", e.Seq, err)
			}
			s.seq, s.hash = e.Seq, e.Hash
			if c.Every > 0 && e.Seq%c.Every == 0 {
				if err := c.checkpoint(ctx, tx, s, now); err != nil {
					return err
				}
			}
		}
		if s.seq > s.cpSeq && now.UnixMilli()-s.cpTime >= c.Interval.Milliseconds() {
			if err := c.checkpoint(ctx, tx, s, now); err != nil {
				return err
			}
		}
		return c.head(ctx, tx, s, now)
	})
	return entries, err
}

// Checkpoint writes a checkpoint of the last entry unless it has one, as
// the Writer does when it closes.
func (c *Chain) Checkpoint() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checkpointIf(func(chainState) bool { return true })
}

// Tick writes a checkpoint when Interval has passed since the last one and
// entries followed it; the Writer calls it while no entries come.
func (c *Chain) Tick() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.Now().UnixMilli()
	if c.loaded && (c.st.seq == c.st.cpSeq || now-c.st.cpTime < c.Interval.Milliseconds()) {
		return nil // nothing due, known without a transaction
	}
	return c.checkpointIf(func(s chainState) bool { return now-s.cpTime >= c.Interval.Milliseconds() })
}

func (c *Chain) checkpointIf(due func(chainState) bool) error {
	now := c.Now()
	return c.write(func(ctx context.Context, tx *sql.Tx, s *chainState) error {
		if s.seq == s.cpSeq || !due(*s) {
			return nil
		}
		if err := c.checkpoint(ctx, tx, s, now); err != nil {
			return err
		}
		return c.head(ctx, tx, s, now)
	})
}

// write runs fn in a write transaction on the chain's state, which it
// reads first if it is not known; the state fn leaves is kept once the
// transaction committed. c.mu is held.
func (c *Chain) write(fn func(ctx context.Context, tx *sql.Tx, s *chainState) error) error {
	ctx := context.Background()
	var s chainState
	err := c.l.write(ctx, func(tx *sql.Tx) error {
		s = c.st
		if !c.loaded {
			var err error
			if s, err = c.read(ctx, tx); err != nil {
				return err
			}
		}
		return fn(ctx, tx, &s)
	})
	if err != nil {
		c.loaded = false // read it again next time
		return fmt.Errorf("audit chain: %w", err)
	}
	c.st, c.loaded = s, true
	return nil
}

// read reads where the chain ends.
func (c *Chain) read(ctx context.Context, q querier) (chainState, error) {
	s := chainState{cpTime: c.Now().UnixMilli()}
	var h []byte
	err := q.QueryRowContext(ctx, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").Scan(&s.seq, &h)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return s, err
	}
	copy(s.hash[:], h)
	var cp checkpointRow
	err = q.QueryRowContext(ctx, "SELECT seq, time, hash, prev, signer, sig FROM audit_checkpoints ORDER BY seq DESC LIMIT 1").
		Scan(&cp.seq, &cp.time, &cp.hash, &cp.prev, &cp.signer, &cp.sig)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return s, err
	default:
		s.cpSeq, s.cpTime, s.cpDigest = cp.seq, cp.time, cp.digest()
	}
	return s, nil
}

// checkpoint signs and stores a checkpoint of the entry s ends at.
func (c *Chain) checkpoint(ctx context.Context, tx *sql.Tx, s *chainState, now time.Time) error {
	cp := checkpointRow{seq: s.seq, time: now.UnixMilli(), hash: s.hash[:], prev: s.cpDigest[:], signer: []byte(c.signer)}
	sig, err := c.key.Sign(cp.message())
	if err != nil {
		return fmt.Errorf("sign checkpoint %d: %w", s.seq, err)
	}
	cp.sig = sig
	if _, err := tx.ExecContext(ctx, "INSERT INTO audit_checkpoints (seq, time, hash, prev, signer, sig) VALUES (?, ?, ?, ?, ?, ?)",
		cp.seq, cp.time, cp.hash, cp.prev, cp.signer, cp.sig); err != nil {
		return fmt.Errorf("checkpoint %d: %w", s.seq, err)
	}
	s.cpSeq, s.cpTime, s.cpDigest = cp.seq, cp.time, cp.digest()
	return nil
}

// head signs and stores the head: where the chain ends now.
func (c *Chain) head(ctx context.Context, tx *sql.Tx, s *chainState, now time.Time) error {
	h := headRow{seq: s.seq, time: now.UnixMilli(), hash: s.hash[:], cp: s.cpDigest[:], signer: []byte(c.signer)}
	sig, err := c.key.Sign(h.message())
	if err != nil {
		return fmt.Errorf("sign head: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_head (id, seq, time, hash, cp, signer, sig) VALUES (1, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, time = excluded.time, hash = excluded.hash, cp = excluded.cp,
		signer = excluded.signer, sig = excluded.sig`, h.seq, h.time, h.hash, h.cp, h.signer, sig)
	return err
}

// auditRow is an entry as its hash encodes it.
type auditRow struct {
	seq, time                  int64
	kind, peer, model, outcome []byte
	tokens                     int64
	request, answer            []byte // nil or 32 bytes
	prompt, text               []byte
	hasPrompt, hasText         bool
	prev                       []byte
}

func rowOf(e *AuditEntry) auditRow {
	r := auditRow{seq: e.Seq, time: e.Time.UnixMilli(), kind: []byte(e.Kind), peer: []byte(e.Peer), model: []byte(e.Model),
		outcome: []byte(e.Outcome), tokens: e.Tokens, prev: e.Prev[:],
		prompt: []byte(e.Prompt), text: []byte(e.Answer), hasPrompt: e.HasPrompt, hasText: e.HasAnswer}
	if e.RequestHash != (receipt.Hash{}) {
		r.request = e.RequestHash[:]
	}
	if e.AnswerHash != (receipt.Hash{}) {
		r.answer = e.AnswerHash[:]
	}
	return r
}

// sum is the entry's hash: SHA-256 of
//
//	"mwpeer/audit/entry/1\n" seq:u64 time:i64 kind peer model tokens:i64
//	outcome request answer prompt? text? prev
//
// integers big-endian, byte strings as a uvarint length and the bytes, an
// optional one (prompt?, text?) as a byte 0 when absent, 1 and the string
// when present. buf is scratch space, returned for reuse.
func (r *auditRow) sum(buf []byte) (receipt.Hash, []byte) {
	buf = append(buf, "mwpeer/audit/entry/1\n"...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(r.seq))
	buf = binary.BigEndian.AppendUint64(buf, uint64(r.time))
	buf = appendBytes(buf, r.kind)
	buf = appendBytes(buf, r.peer)
	buf = appendBytes(buf, r.model)
	buf = binary.BigEndian.AppendUint64(buf, uint64(r.tokens))
	buf = appendBytes(buf, r.outcome)
	buf = appendBytes(buf, r.request)
	buf = appendBytes(buf, r.answer)
	buf = appendOptional(buf, r.prompt, r.hasPrompt)
	buf = appendOptional(buf, r.text, r.hasText)
	buf = appendBytes(buf, r.prev)
	return sha256.Sum256(buf), buf
}

func appendBytes(buf, b []byte) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(b)))
	return append(buf, b...)
}

func appendOptional(buf, b []byte, present bool) []byte {
	if !present {
		return append(buf, 0)
	}
	return appendBytes(append(buf, 1), b)
}

func nullHash(h receipt.Hash) any {
	if h == (receipt.Hash{}) {
		return nil
	}
	return h[:]
}

func nullString(s string, present bool) any {
	if !present {
		return nil
	}
	return s
}

// checkpointRow is a signed checkpoint as stored.
type checkpointRow struct {
	seq, time               int64
	hash, prev, signer, sig []byte
}

// message is what the checkpoint's signature covers:
// "mwpeer/audit/checkpoint/1\n" seq:u64 time:i64 hash prev (32 bytes each).
func (cp *checkpointRow) message() []byte {
	b := append([]byte(nil), "mwpeer/audit/checkpoint/1\n"...)
	b = binary.BigEndian.AppendUint64(b, uint64(cp.seq))
	b = binary.BigEndian.AppendUint64(b, uint64(cp.time))
	b = append(b, cp.hash...)
	return append(b, cp.prev...)
}

// digest is what the next checkpoint and the head link to: SHA-256 of the
// message and the signature.
func (cp *checkpointRow) digest() receipt.Hash {
	return receipt.Sum(append(cp.message(), cp.sig...))
}

// headRow is the signed head as stored.
type headRow struct {
	seq, time             int64
	hash, cp, signer, sig []byte
}

// message is what the head's signature covers:
// "mwpeer/audit/head/1\n" seq:u64 time:i64 hash cp (32 bytes each).
func (h *headRow) message() []byte {
	b := append([]byte(nil), "mwpeer/audit/head/1\n"...)
	b = binary.BigEndian.AppendUint64(b, uint64(h.seq))
	b = binary.BigEndian.AppendUint64(b, uint64(h.time))
	b = append(b, h.hash...)
	return append(b, h.cp...)
}

// verifySig checks sig over msg by signer.
func verifySig(signer, msg, sig []byte) error {
	id, err := peer.IDFromBytes(signer)
	if err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("signer %s: %w", id.ShortString(), err)
	}
	ok, err := pub.Verify(msg, sig)
	if err != nil || !ok {
		return fmt.Errorf("bad signature (forged or altered)")
	}
	return nil
}

// Problems VerifyAudit reports, by what was done to the chain.
const (
	ProblemEdited     = "edited"
	ProblemDeleted    = "deleted"
	ProblemReordered  = "reordered"
	ProblemTruncated  = "truncated"
	ProblemCheckpoint = "checkpoint"
	ProblemHead       = "head"
)

// AuditProblem is one thing wrong with the chain, and where: entries
// First to Last (the same for one entry; 0 when it is not about entries).
type AuditProblem struct {
	Kind   string `json:"kind"`
	First  int64  `json:"first,omitempty"`
	Last   int64  `json:"last,omitempty"`
	Detail string `json:"detail"`
}

func (p AuditProblem) String() string { return p.Detail }

// AuditReport is what VerifyAudit found.
type AuditReport struct {
	Entries     int64   // rows in the chain
	First, Last int64   // their lowest and highest seq
	Checkpoints int     // signed checkpoints
	Signer      peer.ID // who signed them
	HeadSeq     int64   // the entry the signed head names (0: no head)
	Problems    []AuditProblem
	More        int // problems beyond those listed
}

// OK reports an intact chain.
func (r *AuditReport) OK() bool { return len(r.Problems) == 0 }

// maxProblems bounds the problems a report lists, and maxSuspects the
// entries whose hash does not match that it keeps to pair as reordered.
const (
	maxProblems = 100
	maxSuspects = 1000
)

func (r *AuditReport) add(kind string, first, last int64, format string, args ...any) {
	if len(r.Problems) >= maxProblems {
		r.More++
		return
	}
	r.Problems = append(r.Problems, AuditProblem{Kind: kind, First: first, Last: last, Detail: fmt.Sprintf(format, args...)})
}

// span names entries first to last.
func span(first, last int64) string {
	if first == last {
		return fmt.Sprintf("entry %d", first)
	}
	return fmt.Sprintf("entries %d-%d", first, last)
}

func short(h []byte) string {
	if len(h) > 8 {
		h = h[:8]
	}
	return hex.EncodeToString(h)
}

// VerifyAudit checks the whole audit chain as of one moment (a peer may go
// on appending): every entry's hash and link, every checkpoint's signature
// and link and its hash against the entry it names, the head's, and that
// they are all signed by the ledger's owner. The report says where each
// problem is; an error is a failure to read the chain, not a problem in it.
func (l *Ledger) VerifyAudit(ctx context.Context) (*AuditReport, error) {
	tx, err := l.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rep := &AuditReport{}

	var owner []byte
	if err := tx.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'owner'").Scan(&owner); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	signerOK := func(what string, signer []byte) bool {
		if rep.Signer == "" {
			rep.Signer = peer.ID(signer)
		}
		switch {
		case len(owner) > 0 && !bytes.Equal(signer, owner):
			rep.add(ProblemCheckpoint, 0, 0, "%s: signed by %s, not by the ledger's owner %s", what, peer.ID(signer), peer.ID(owner))
		case string(signer) != string(rep.Signer):
			rep.add(ProblemCheckpoint, 0, 0, "%s: signed by %s, not by %s like the others", what, peer.ID(signer), rep.Signer)
		default:
			return true
		}
		return false
	}

	// Checkpoints: each signed, each linked to the one before.
	cps := map[int64]checkpointRow{}
	var lastCP checkpointRow
	var lastDigest receipt.Hash
	rows, err := tx.QueryContext(ctx, "SELECT seq, time, hash, prev, signer, sig FROM audit_checkpoints ORDER BY seq")
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var cp checkpointRow
		if err := rows.Scan(&cp.seq, &cp.time, &cp.hash, &cp.prev, &cp.signer, &cp.sig); err != nil {
			rows.Close()
			return nil, err
		}
		rep.Checkpoints++
		what := fmt.Sprintf("checkpoint at %d", cp.seq)
		if signerOK(what, cp.signer) {
			if err := verifySig(cp.signer, cp.message(), cp.sig); err != nil {
				rep.add(ProblemCheckpoint, cp.seq, cp.seq, "%s: %v", what, err)
			}
		}
		if !bytes.Equal(cp.prev, lastDigest[:]) {
			prev := "none"
			if lastCP.seq > 0 {
				prev = fmt.Sprintf("the one at %d", lastCP.seq)
			}
			rep.add(ProblemCheckpoint, cp.seq, cp.seq, "%s: does not link to the checkpoint before it (%s): a checkpoint was deleted or altered", what, prev)
		}
		cps[cp.seq] = cp
		lastCP, lastDigest = cp, cp.digest()
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	// The head.
	var h headRow
	err = tx.QueryRowContext(ctx, "SELECT seq, time, hash, cp, signer, sig FROM audit_head WHERE id = 1").
		Scan(&h.seq, &h.time, &h.hash, &h.cp, &h.signer, &h.sig)
	haveHead := err == nil
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, err
	default:
		rep.HeadSeq = h.seq
		if signerOK("the head", h.signer) {
			if err := verifySig(h.signer, h.message(), h.sig); err != nil {
				rep.add(ProblemHead, 0, 0, "the head: %v", err)
				haveHead = false
			}
		}
		if haveHead && !bytes.Equal(h.cp, lastDigest[:]) {
			at := "none left"
			if lastCP.seq > 0 {
				at = fmt.Sprintf("the last is at %d", lastCP.seq)
			}
			rep.add(ProblemCheckpoint, lastCP.seq, lastCP.seq, "the head names a later checkpoint than those stored (%s): checkpoints were deleted", at)
		}
	}

	// Entries, in order.
	type suspect struct {
		row  auditRow
		hash []byte
	}
	var (
		suspects []suspect
		missing  [][2]int64
		edited   [][2]int64 // runs of entries whose hash does not match, reported after pairing
		expected = int64(1)
		prevHash = make([]byte, 32)
		prevOK   = true // the previous entry's hash matched its content
		buf      []byte
	)
	rows, err = tx.QueryContext(ctx, `SELECT seq, time, kind, peer, model, tokens, outcome, request, answer, prompt, text, prev, hash
		FROM audit ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			r            auditRow
			prompt, text sql.NullString
			hash         []byte
		)
		if err := rows.Scan(&r.seq, &r.time, (*sql.RawBytes)(&r.kind), (*sql.RawBytes)(&r.peer), (*sql.RawBytes)(&r.model), &r.tokens,
			(*sql.RawBytes)(&r.outcome), (*sql.RawBytes)(&r.request), (*sql.RawBytes)(&r.answer), &prompt, &text,
			(*sql.RawBytes)(&r.prev), (*sql.RawBytes)(&hash)); err != nil {
			return nil, err
		}
		r.prompt, r.hasPrompt = []byte(prompt.String), prompt.Valid
		r.text, r.hasText = []byte(text.String), text.Valid
		if rep.Entries == 0 {
			rep.First = r.seq
		}
		rep.Entries++
		rep.Last = r.seq
		gap := r.seq != expected
		if gap {
			if r.seq > expected {
				missing = append(missing, [2]int64{expected, r.seq - 1})
			}
		}
		var sum receipt.Hash
		sum, buf = r.sum(buf[:0])
		selfOK := bytes.Equal(sum[:], hash)
		if !selfOK {
			if len(suspects) < maxSuspects {
				suspects = append(suspects, suspect{row: r.clone(), hash: bytes.Clone(hash)})
			}
			if n := len(edited); n > 0 && edited[n-1][1] == r.seq-1 {
				edited[n-1][1] = r.seq
			} else {
				edited = append(edited, [2]int64{r.seq, r.seq})
			}
		} else if !gap && prevOK && !bytes.Equal(r.prev, prevHash) {
			rep.add(ProblemEdited, r.seq-1, r.seq-1, "entry %d: edited (its hash was recomputed; entry %d links to %s, it hashes to %s)",
				r.seq-1, r.seq, short(r.prev), short(prevHash))
		}
		if cp, ok := cps[r.seq]; ok && selfOK && !bytes.Equal(cp.hash, hash) {
			from := lastCheckpointBefore(cps, r.seq) + 1
			rep.add(ProblemEdited, from, r.seq,
				"entry %d: differs from its signed checkpoint (checkpoint says %s, entry has %s): %s were rewritten",
				r.seq, short(cp.hash), short(hash), span(from, r.seq))
		}
		copy(prevHash, hash)
		prevOK = selfOK
		expected = r.seq + 1
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}

	// Pair entries whose content hashes right under another seq: reordered.
	belongs := map[int64]int64{} // seq of a suspect -> the seq its content belongs at
	var tries int
	for _, s := range suspects {
		cands := make([]int64, 0, len(suspects))
		for _, o := range suspects {
			if o.row.seq != s.row.seq {
				cands = append(cands, o.row.seq)
			}
		}
		for _, m := range missing {
			for q := m[0]; q <= m[1] && q-m[0] < maxSuspects; q++ {
				cands = append(cands, q)
			}
		}
		for _, q := range cands {
			if tries++; tries > 1_000_000 {
				break
			}
			r := s.row
			r.seq = q
			var sum receipt.Hash
			sum, buf = r.sum(buf[:0])
			if bytes.Equal(sum[:], s.hash) {
				belongs[s.row.seq] = q
				break
			}
		}
	}
	// Missing seqs whose content was found elsewhere were moved, not
	// deleted; the seqs they were moved to are not entries of the chain.
	movedTo := map[int64]int64{} // seq the content belongs at -> where it was found
	vacated := map[int64]bool{}  // rows holding content moved from a missing seq
	for at, q := range belongs {
		movedTo[q] = at
		for _, m := range missing {
			if q >= m[0] && q <= m[1] {
				vacated[at] = true
			}
		}
	}
	last := rep.Last // of the chain, without vacated rows
	if rep.Entries == 0 {
		last = 0
	}
	for last > 0 && vacated[last] {
		last--
		for _, m := range missing {
			if m[1] == last {
				last = m[0] - 1
			}
		}
	}
	var gone [][2]int64
	for _, m := range missing {
		start := m[0]
		for q := m[0]; q <= m[1]+1; q++ {
			if _, moved := movedTo[q]; q <= m[1] && !moved {
				continue
			}
			if start < q {
				gone = append(gone, [2]int64{start, q - 1})
			}
			start = q + 1
		}
	}
	for at := range vacated {
		gone = append(gone, [2]int64{at, at})
	}
	slices.SortFunc(gone, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	var merged [][2]int64
	for _, g := range gone {
		if n := len(merged); n > 0 && merged[n-1][1]+1 >= g[0] {
			merged[n-1][1] = max(merged[n-1][1], g[1])
			continue
		}
		merged = append(merged, g)
	}
	for _, g := range merged {
		if g[0] > last {
			break
		}
		g[1] = min(g[1], last)
		rep.add(ProblemDeleted, g[0], g[1], "%s missing (deleted)", span(g[0], g[1]))
	}
	reported := map[int64]bool{}
	for _, run := range edited {
		start := run[0]
		flush := func(end int64) {
			if start <= end {
				rep.add(ProblemEdited, start, end, "%s: hash mismatch (edited)", span(start, end))
			}
		}
		for q := run[0]; q <= run[1]; q++ {
			at, ok := belongs[q]
			if !ok {
				continue
			}
			flush(q - 1)
			start = q + 1
			if reported[q] {
				continue
			}
			reported[q], reported[at] = true, true
			if back, ok := belongs[at]; ok && back == q {
				rep.add(ProblemReordered, min(q, at), max(q, at), "entries %d and %d out of order (swapped)", min(q, at), max(q, at))
			} else {
				rep.add(ProblemReordered, q, q, "entry %d out of order: it holds entry %d", q, at)
			}
		}
		flush(run[1])
	}

	// The tail against the head and the checkpoints.
	var cpAfter int64
	var cpAfterHash []byte
	for s, cp := range cps {
		if s > last && s > cpAfter {
			cpAfter, cpAfterHash = s, cp.hash
		}
	}
	switch {
	case haveHead && h.seq > last:
		msg := fmt.Sprintf("truncated after %d: the signed head says the chain ends at %d (hash %s)", last, h.seq, short(h.hash))
		if cpAfter > 0 {
			msg += fmt.Sprintf("; checkpoint at %d says %s", cpAfter, short(cpAfterHash))
		}
		rep.add(ProblemTruncated, last+1, h.seq, "%s", msg)
	case cpAfter > 0:
		rep.add(ProblemTruncated, last+1, cpAfter, "truncated after %d: checkpoint at %d says %s", last, cpAfter, short(cpAfterHash))
	case haveHead && h.seq < last:
		rep.add(ProblemHead, h.seq+1, last, "%s after the signed head (%d): not written by this peer's chain", span(h.seq+1, last), h.seq)
	case haveHead && h.seq == last && last == rep.Last && h.seq > 0 && !bytes.Equal(h.hash, prevHash) && lastCP.seq != last:
		rep.add(ProblemEdited, lastCP.seq+1, last, "entry %d differs from the signed head: %s were rewritten", last, span(lastCP.seq+1, last))
	}
	if !haveHead && rep.HeadSeq == 0 && (rep.Entries > 0 || rep.Checkpoints > 0) {
		rep.add(ProblemHead, 0, 0, "the signed head is missing (deleted)")
	}
	slices.SortStableFunc(rep.Problems, func(a, b AuditProblem) int { return cmp.Compare(a.First, b.First) })
	return rep, nil
}

// lastCheckpointBefore is the seq of the last checkpoint before seq (0: none).
func lastCheckpointBefore(cps map[int64]checkpointRow, seq int64) int64 {
	var best int64
	for s := range cps {
		if s < seq && s > best {
			best = s
		}
	}
	return best
}

// clone copies r's byte slices, which a sql.RawBytes scan reuses.
func (r auditRow) clone() auditRow {
	for _, b := range []*[]byte{&r.kind, &r.peer, &r.model, &r.outcome, &r.request, &r.answer, &r.prompt, &r.text, &r.prev} {
		if *b != nil {
			*b = bytes.Clone(*b)
		}
	}
	return r
}

// auditColumns are the columns of an AuditEntry, as scanEntry reads them.
const auditColumns = "seq, time, kind, peer, model, tokens, outcome, request, answer, prompt, text, prev, hash"

func scanEntry(rows *sql.Rows) (AuditEntry, error) {
	var (
		e                              AuditEntry
		ms                             int64
		peerID, request, answer, p, hh []byte
		prompt, text                   sql.NullString
	)
	if err := rows.Scan(&e.Seq, &ms, &e.Kind, &peerID, &e.Model, &e.Tokens, &e.Outcome, &request, &answer, &prompt, &text, &p, &hh); err != nil {
		return e, err
	}
	e.Time, e.Peer = time.UnixMilli(ms), peer.ID(peerID)
	copy(e.RequestHash[:], request)
	copy(e.AnswerHash[:], answer)
	copy(e.Prev[:], p)
	copy(e.Hash[:], hh)
	e.Prompt, e.HasPrompt = prompt.String, prompt.Valid
	e.Answer, e.HasAnswer = text.String, text.Valid
	return e, nil
}

// AuditEntries calls fn with every entry after seq, in order, until fn
// returns an error (which it returns).
func (l *Ledger) AuditEntries(ctx context.Context, after int64, fn func(AuditEntry) error) error {
	return auditEntries(ctx, l.r, after, fn)
}

func auditEntries(ctx context.Context, q querier, after int64, fn func(AuditEntry) error) error {
	rows, err := q.QueryContext(ctx, "SELECT "+auditColumns+" FROM audit WHERE seq > ? ORDER BY seq", after)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return rows.Err()
}

// AuditTail is the last n entries, in order.
func (l *Ledger) AuditTail(ctx context.Context, n int) ([]AuditEntry, error) {
	rows, err := l.r.QueryContext(ctx, "SELECT "+auditColumns+" FROM audit ORDER BY seq DESC LIMIT ?", n)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		out = append(out, e)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, rows.Err()
}

// exported is a line of WriteAudit: an entry, a checkpoint or the head.
type exported struct {
	Type    string `json:"type"` // entry, checkpoint, head
	Seq     int64  `json:"seq"`
	Time    string `json:"time"`
	Kind    string `json:"kind,omitempty"`
	Peer    string `json:"peer,omitempty"`
	Model   string `json:"model,omitempty"`
	Tokens  *int64 `json:"tokens,omitempty"`
	Outcome string `json:"outcome,omitempty"`
	Request string `json:"request_hash,omitempty"`
	Answer  string `json:"answer_hash,omitempty"`
	// Prompt and Text are present only when prompts were audited.
	Prompt     *string `json:"prompt,omitempty"`
	Text       *string `json:"answer,omitempty"`
	Prev       string  `json:"prev,omitempty"` // entries: the previous entry's hash; checkpoints: the previous checkpoint's digest
	Hash       string  `json:"hash"`
	Checkpoint string  `json:"checkpoint,omitempty"` // the head: the last checkpoint's digest
	Signer     string  `json:"signer,omitempty"`
	Sig        string  `json:"sig,omitempty"`
}

func hexOrEmpty(h receipt.Hash) string {
	if h == (receipt.Hash{}) {
		return ""
	}
	return hex.EncodeToString(h[:])
}

func rfc(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }

// WriteAudit writes the chain as of one moment as JSON lines: every entry
// in order, then every checkpoint, then the head; hashes and signatures in
// hex. A checkpoint or head kept from it pins the chain: a later chain must
// hold the same hash at its seq.
func (l *Ledger) WriteAudit(ctx context.Context, w io.Writer) error {
	tx, err := l.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer tx.Rollback()
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	err = auditEntries(ctx, tx, 0, func(e AuditEntry) error {
		x := exported{Type: "entry", Seq: e.Seq, Time: rfc(e.Time.UnixMilli()), Kind: e.Kind, Model: e.Model, Tokens: &e.Tokens,
			Outcome: e.Outcome, Request: hexOrEmpty(e.RequestHash), Answer: hexOrEmpty(e.AnswerHash),
			Prev: hex.EncodeToString(e.Prev[:]), Hash: hex.EncodeToString(e.Hash[:])}
		if e.Peer != "" {
			x.Peer = e.Peer.String()
		}
		if e.HasPrompt {
			x.Prompt = &e.Prompt
		}
		if e.HasAnswer {
			x.Text = &e.Answer
		}
		return enc.Encode(x)
	})
	if err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, "SELECT seq, time, hash, prev, signer, sig FROM audit_checkpoints ORDER BY seq")
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var cp checkpointRow
		if err := rows.Scan(&cp.seq, &cp.time, &cp.hash, &cp.prev, &cp.signer, &cp.sig); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		if err := enc.Encode(exported{Type: "checkpoint", Seq: cp.seq, Time: rfc(cp.time), Hash: hex.EncodeToString(cp.hash),
			Prev: hex.EncodeToString(cp.prev), Signer: peer.ID(cp.signer).String(), Sig: hex.EncodeToString(cp.sig)}); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	var h headRow
	err = tx.QueryRowContext(ctx, "SELECT seq, time, hash, cp, signer, sig FROM audit_head WHERE id = 1").
		Scan(&h.seq, &h.time, &h.hash, &h.cp, &h.signer, &h.sig)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("audit: %w", err)
	}
	return enc.Encode(exported{Type: "head", Seq: h.seq, Time: rfc(h.time), Hash: hex.EncodeToString(h.hash),
		Checkpoint: hex.EncodeToString(h.cp), Signer: peer.ID(h.signer).String(), Sig: hex.EncodeToString(h.sig)})
}
