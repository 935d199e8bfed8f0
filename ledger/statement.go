package ledger

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/receipt"
)

// StatementVersion is the version of the statement format.
const StatementVersion = 1

// Statement is a ledger's account of a period: every receipt that started in
// [From, To), as signed, with the balances they add up to. Anyone can check
// it with VerifyStatement: the receipts' signatures prove the work, and the
// sums must follow from the receipts. The period, Peer and the claim that
// no receipt is missing are the exporter's word; Checksum catches damage
// to them, not fraud.
type Statement struct {
	Version int       `json:"version"`
	Peer    peer.ID   `json:"peer,omitempty"` // whose ledger: the server or requester of every receipt
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	// Receipts are base64 (standard, padded) of receipt.Signed.Marshal, by
	// start time, then ID.
	Receipts []string  `json:"receipts"`
	Peers    []Balance `json:"peers"` // sums per counterpart over Receipts, ordered as Balances orders them
	Totals   Totals    `json:"totals"`
	// Checksum is "sha256:" and the hex SHA-256 of the statement as
	// WriteStatement writes it with Checksum empty.
	Checksum string `json:"checksum"`
}

// Statement is the ledger's statement of the receipts that started in
// [from, to).
func (l *Ledger) Statement(from, to time.Time) (*Statement, error) {
	if !from.Before(to) {
		return nil, fmt.Errorf("statement: period from %s to %s is empty", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	ctx := context.Background()
	tx, err := l.r.BeginTx(ctx, nil) // one snapshot for owner and receipts
	if err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	defer tx.Rollback()
	st := &Statement{Version: StatementVersion, From: from.UTC(), To: to.UTC(), Receipts: []string{}}
	var owner []byte
	if err := tx.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'owner'").Scan(&owner); err == nil {
		st.Peer = peer.ID(owner)
	}
	rows, err := tx.QueryContext(ctx, "SELECT raw FROM receipts WHERE start >= ? AND start <= ? ORDER BY start, id",
		from.UnixMilli(), to.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	defer rows.Close()
	var signed []*receipt.Signed
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, fmt.Errorf("statement: %w", err)
		}
		s, err := receipt.UnmarshalSigned(raw)
		if err != nil {
			return nil, fmt.Errorf("statement: stored receipt unreadable: %w", err)
		}
		if !inPeriod(s, st.From, st.To) {
			continue
		}
		signed = append(signed, s)
		st.Receipts = append(st.Receipts, base64.StdEncoding.EncodeToString(raw))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	st.Peers, st.Totals, err = sums(st.Peer, signed)
	if err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	if st.Checksum, err = checksum(st); err != nil {
		return nil, err
	}
	return st, nil
}

func inPeriod(s *receipt.Signed, from, to time.Time) bool {
	return !s.Start.Before(from) && s.Start.Before(to)
}

// sums adds receipts up per counterpart of self, as the ledger does: a
// receipt counts when it has the requester's signature (whose validity the
// caller checked).
func sums(self peer.ID, rs []*receipt.Signed) ([]Balance, Totals, error) {
	var t Totals
	if len(rs) > 0 && self == "" {
		return nil, t, errors.New("receipts but no owner")
	}
	by := make(map[peer.ID]*Balance)
	for _, s := range rs {
		e := entry{signed: len(s.RequesterSig) > 0, cost: int64(min(s.Cost, MaxCost))}
		switch {
		case s.Server == self && s.Requester != self:
			e.other, e.served = s.Requester, true
		case s.Requester == self && s.Server != self:
			e.other = s.Server
		default:
			return nil, t, fmt.Errorf("receipt %s: %w: not one of %s", s.ID, ErrNotParty, self)
		}
		b := by[e.other]
		if b == nil {
			b = &Balance{Peer: e.other}
			by[e.other] = b
		}
		d := e.balance()
		b.Earned += d.Earned
		b.Spent += d.Spent
		b.Balance += d.Balance
		b.Receipts += d.Receipts
		b.Unsigned += d.Unsigned
	}
	out := make([]Balance, 0, len(by))
	for _, b := range by {
		out = append(out, *b)
		t.add(*b)
		t.Peers++
	}
	slices.SortFunc(out, func(a, b Balance) int {
		return cmp.Or(cmp.Compare(b.Balance, a.Balance), cmp.Compare(a.Peer, b.Peer))
	})
	return out, t, nil
}

// WriteStatement writes st as indented JSON, the form VerifyStatement
// reads back.
func WriteStatement(w io.Writer, st *Statement) error {
	b, err := encode(st)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func encode(st *Statement) ([]byte, error) {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	return append(b, '\n'), nil
}

func checksum(st *Statement) (string, error) {
	c := *st
	c.Checksum = ""
	b, err := encode(&c)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:]), nil
}

// ErrBadStatement is the error of a statement that does not verify.
var ErrBadStatement = errors.New("statement does not verify")

// VerifyStatement reads a statement written by WriteStatement and checks
// it: every receipt decodes and carries valid signatures (both for a signed
// one, the server's for an unsigned one), started within the period, is a
// receipt of the statement's peer and appears once in order; every sum
// equals what the receipts add up to; and the file is exactly as written,
// checksum included, so that changing any byte of it fails. Errors wrap
// ErrBadStatement and say which check failed.
func VerifyStatement(r io.Reader) (*Statement, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read statement: %w", err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadStatement, fmt.Sprintf(format, args...))
	}
	var st Statement
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, bad("not a statement: %v", err)
	}
	if st.Version != StatementVersion {
		return nil, bad("version %d, want %d", st.Version, StatementVersion)
	}
	if !st.From.Before(st.To) {
		return nil, bad("empty period")
	}
	signed := make([]*receipt.Signed, 0, len(st.Receipts))
	seen := make(map[receipt.ID]bool, len(st.Receipts))
	for i, enc := range st.Receipts {
		raw, err := base64.StdEncoding.Strict().DecodeString(enc)
		if err != nil {
			return nil, bad("receipt %d: %v", i, err)
		}
		s, err := receipt.UnmarshalSigned(raw)
		if err != nil {
			return nil, bad("receipt %d: %v", i, err)
		}
		if len(s.RequesterSig) > 0 {
			err = s.Verify()
		} else {
			err = s.VerifyServer()
		}
		if err != nil {
			return nil, bad("receipt %d (%s): %v", i, s.ID, err)
		}
		if s.Cost > MaxCost {
			return nil, bad("receipt %d (%s): cost %d above %d", i, s.ID, s.Cost, uint64(MaxCost))
		}
		if !inPeriod(s, st.From, st.To) {
			return nil, bad("receipt %d (%s) started %s, outside the period", i, s.ID, s.Start.UTC().Format(time.RFC3339Nano))
		}
		if seen[s.ID] {
			return nil, bad("receipt %d (%s) appears twice", i, s.ID)
		}
		seen[s.ID] = true
		if i > 0 {
			p := signed[i-1]
			if c := cmp.Or(p.Start.Compare(s.Start), bytes.Compare(p.ID[:], s.ID[:])); c > 0 {
				return nil, bad("receipt %d (%s) out of order", i, s.ID)
			}
		}
		signed = append(signed, s)
	}
	peers, totals, err := sums(st.Peer, signed)
	if err != nil {
		return nil, bad("%v", err)
	}
	if !slices.Equal(peers, st.Peers) {
		return nil, bad("per-peer sums differ from the receipts: %s", diffPeers(st.Peers, peers))
	}
	if totals != st.Totals {
		return nil, bad("totals %+v, the receipts add up to %+v", st.Totals, totals)
	}
	sum, err := checksum(&st)
	if err != nil {
		return nil, err
	}
	if sum != st.Checksum {
		return nil, bad("checksum %s, the content hashes to %s", st.Checksum, sum)
	}
	canon, err := encode(&st)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, data) {
		i := 0
		for i < len(canon) && i < len(data) && canon[i] == data[i] {
			i++
		}
		return nil, bad("not as written: byte %d differs from the canonical form", i)
	}
	return &st, nil
}

// diffPeers names the first counterpart whose sums differ.
func diffPeers(claimed, actual []Balance) string {
	if len(claimed) != len(actual) {
		return fmt.Sprintf("%d peers listed, the receipts have %d", len(claimed), len(actual))
	}
	for i := range claimed {
		if claimed[i] != actual[i] {
			return fmt.Sprintf("listed %+v, the receipts add up to %+v", claimed[i], actual[i])
		}
	}
	return "same"
}
