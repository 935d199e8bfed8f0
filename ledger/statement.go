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

// StatementVersion is the version of the statement format Statement
// writes. Version 2 added tallies; VerifyStatement reads version 1
// statements too, which hold receipts only.
const StatementVersion = 2

// Statement is a ledger's account of a period: every receipt and every
// tally that started in [From, To), as signed, with the balances they add
// up to. Anyone can check it with VerifyStatement: the signatures prove the
// work, and the sums must follow from the receipts and tallies. The period,
// Peer and the claim that nothing is missing are the exporter's word;
// Checksum catches damage to them, not fraud.
type Statement struct {
	Version int       `json:"version"`
	Peer    peer.ID   `json:"peer,omitempty"` // whose ledger: a party to every receipt and tally
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	// Receipts are base64 (standard, padded) of receipt.Signed.Marshal, by
	// start time, then ID.
	Receipts []string `json:"receipts"`
	// Tallies are base64 (standard, padded) of receipt.SignedTally.Marshal,
	// by start of window, then ID. Version 1 statements have none.
	Tallies []string  `json:"tallies"`
	Peers   []Balance `json:"peers"` // sums per counterpart over Receipts and Tallies, ordered as Balances orders them
	Totals  Totals    `json:"totals"`
	// Checksum is "sha256:" and the hex SHA-256 of the statement as
	// WriteStatement writes it with Checksum empty.
	Checksum string `json:"checksum"`
}

// Statement is the ledger's statement of the receipts and tallies that
// started in [from, to).
func (l *Ledger) Statement(from, to time.Time) (*Statement, error) {
	if !from.Before(to) {
		return nil, fmt.Errorf("statement: period from %s to %s is empty", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	ctx := context.Background()
	tx, err := l.r.BeginTx(ctx, nil) // one snapshot for owner, receipts and tallies
	if err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	defer tx.Rollback()
	st := &Statement{Version: StatementVersion, From: from.UTC(), To: to.UTC(), Receipts: []string{}, Tallies: []string{}}
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
		if !inPeriod(s.Start, st.From, st.To) {
			continue
		}
		signed = append(signed, s)
		st.Receipts = append(st.Receipts, base64.StdEncoding.EncodeToString(raw))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	rows.Close()
	rows, err = tx.QueryContext(ctx, "SELECT raw FROM tallies WHERE start >= ? AND start <= ? ORDER BY start, id",
		from.UnixMilli(), to.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	defer rows.Close()
	var tallies []*receipt.SignedTally
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, fmt.Errorf("statement: %w", err)
		}
		t, err := receipt.UnmarshalSignedTally(raw)
		if err != nil {
			return nil, fmt.Errorf("statement: stored tally unreadable: %w", err)
		}
		if !inPeriod(t.Start, st.From, st.To) {
			continue
		}
		tallies = append(tallies, t)
		st.Tallies = append(st.Tallies, base64.StdEncoding.EncodeToString(raw))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	st.Peers, st.Totals, err = sums(st.Peer, signed, tallies)
	if err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	if st.Checksum, err = checksum(st); err != nil {
		return nil, err
	}
	return st, nil
}

func inPeriod(start, from, to time.Time) bool {
	return !start.Before(from) && start.Before(to)
}

// sums adds receipts and tallies up per counterpart of self, as the ledger
// does: a receipt counts when it has the requester's signature, a tally
// when it has the worker's (whose validity the caller checked).
func sums(self peer.ID, rs []*receipt.Signed, ts []*receipt.SignedTally) ([]Balance, Totals, error) {
	var t Totals
	if len(rs)+len(ts) > 0 && self == "" {
		return nil, t, errors.New("receipts but no owner")
	}
	by := make(map[peer.ID]*Balance)
	add := func(e entry) {
		b := by[e.other]
		if b == nil {
			b = &Balance{Peer: e.other}
			by[e.other] = b
		}
		b.addBalance(e.balance())
	}
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
		add(e)
	}
	for _, s := range ts {
		e := entry{tally: s.Kind, signed: len(s.WorkerSig) > 0, cost: int64(min(s.Cost, MaxCost))}
		switch {
		case s.Worker == self && s.Payer != self:
			e.other, e.served = s.Payer, true
		case s.Payer == self && s.Worker != self:
			e.other = s.Worker
		default:
			return nil, t, fmt.Errorf("tally %s: %w: not one of %s", s.ID, ErrNotParty, self)
		}
		if e.tally == 0 { // Validate refuses it; an entry of kind 0 would count as a receipt
			return nil, t, fmt.Errorf("tally %s: %w: no kind", s.ID, receipt.ErrMalformed)
		}
		add(e)
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

// encode is st in the JSON form of its version.
func encode(st *Statement) ([]byte, error) {
	var v any = st
	if st.Version == 1 {
		v1, err := st.v1()
		if err != nil {
			return nil, fmt.Errorf("statement: %w", err)
		}
		v = v1
	}
	b, err := json.MarshalIndent(v, "", "  ")
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

// VerifyStatement reads a statement written by WriteStatement (of this
// version, or of version 1) and checks it: every receipt and tally decodes
// and carries valid signatures (both for a signed one; the server's for an
// unsigned receipt, the payer's for a disputed tally), started within the
// period, is one of the statement's peer and appears once in order; every
// sum equals what the receipts and tallies add up to; and the file is
// exactly as written, checksum included, so that changing any byte of it
// fails (checked first: a damaged file fails fast). Errors wrap
// ErrBadStatement and say which check failed.
func VerifyStatement(r io.Reader) (*Statement, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read statement: %w", err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadStatement, fmt.Sprintf(format, args...))
	}
	var head struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, bad("not a statement: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var st Statement
	switch head.Version {
	case StatementVersion:
		err = dec.Decode(&st)
	case 1:
		var v1 statementV1
		err = dec.Decode(&v1)
		st = v1.statement()
	default:
		return nil, bad("version %d, want %d or 1", head.Version, StatementVersion)
	}
	if err != nil {
		return nil, bad("not a statement: %v", err)
	}
	// The file as written first: it is cheap to check, and a damaged file
	// then fails before every signature in it is checked.
	sum, err := checksum(&st)
	if err != nil {
		return nil, bad("%v", err)
	}
	if sum != st.Checksum {
		return nil, bad("checksum %s, the content hashes to %s", st.Checksum, sum)
	}
	canon, err := encode(&st)
	if err != nil {
		return nil, bad("%v", err)
	}
	if !bytes.Equal(canon, data) {
		i := 0
		for i < len(canon) && i < len(data) && canon[i] == data[i] {
			i++
		}
		return nil, bad("not as written: byte %d differs from the canonical form", i)
	}
	// Then what it says.
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
		if !inPeriod(s.Start, st.From, st.To) {
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
	tallies := make([]*receipt.SignedTally, 0, len(st.Tallies))
	seen = make(map[receipt.ID]bool, len(st.Tallies))
	for i, enc := range st.Tallies {
		raw, err := base64.StdEncoding.Strict().DecodeString(enc)
		if err != nil {
			return nil, bad("tally %d: %v", i, err)
		}
		t, err := receipt.UnmarshalSignedTally(raw)
		if err != nil {
			return nil, bad("tally %d: %v", i, err)
		}
		if len(t.WorkerSig) > 0 {
			err = t.Verify()
		} else {
			err = t.VerifyPayer()
		}
		if err != nil {
			return nil, bad("tally %d (%s): %v", i, t.ID, err)
		}
		if t.Cost > MaxCost {
			return nil, bad("tally %d (%s): cost %d above %d", i, t.ID, t.Cost, uint64(MaxCost))
		}
		if !inPeriod(t.Start, st.From, st.To) {
			return nil, bad("tally %d (%s) started %s, outside the period", i, t.ID, t.Start.UTC().Format(time.RFC3339Nano))
		}
		if seen[t.ID] {
			return nil, bad("tally %d (%s) appears twice", i, t.ID)
		}
		seen[t.ID] = true
		if i > 0 {
			p := tallies[i-1]
			if c := cmp.Or(p.Start.Compare(t.Start), bytes.Compare(p.ID[:], t.ID[:])); c > 0 {
				return nil, bad("tally %d (%s) out of order", i, t.ID)
			}
		}
		tallies = append(tallies, t)
	}
	peers, totals, err := sums(st.Peer, signed, tallies)
	if err != nil {
		return nil, bad("%v", err)
	}
	if !slices.Equal(peers, st.Peers) {
		return nil, bad("per-peer sums differ from the receipts and tallies: %s", diffPeers(st.Peers, peers))
	}
	if totals != st.Totals {
		return nil, bad("totals %+v, the receipts and tallies add up to %+v", st.Totals, totals)
	}
	return &st, nil
}

// diffPeers names the first counterpart whose sums differ.
func diffPeers(claimed, actual []Balance) string {
	if len(claimed) != len(actual) {
		return fmt.Sprintf("%d peers listed, the receipts and tallies have %d", len(claimed), len(actual))
	}
	for i := range claimed {
		if claimed[i] != actual[i] {
			return fmt.Sprintf("listed %+v, the receipts and tallies add up to %+v", claimed[i], actual[i])
		}
	}
	return "same"
}

// statementV1 is the form of version 1 statements, made before the ledger
// kept tallies: no tallies, and balances and totals without their counts.
// VerifyStatement still reads it, so that a statement exported then still
// verifies.
type statementV1 struct {
	Version  int         `json:"version"`
	Peer     peer.ID     `json:"peer,omitempty"`
	From     time.Time   `json:"from"`
	To       time.Time   `json:"to"`
	Receipts []string    `json:"receipts"`
	Peers    []balanceV1 `json:"peers"`
	Totals   totalsV1    `json:"totals"`
	Checksum string      `json:"checksum"`
}

type balanceV1 struct {
	Peer     peer.ID `json:"id"`
	Earned   int64   `json:"earned"`
	Spent    int64   `json:"spent"`
	Balance  int64   `json:"balance"`
	Receipts int64   `json:"receipts"`
	Unsigned int64   `json:"unsigned"`
}

type totalsV1 struct {
	Earned   int64 `json:"earned"`
	Spent    int64 `json:"spent"`
	Balance  int64 `json:"balance"`
	Receipts int64 `json:"receipts"`
	Unsigned int64 `json:"unsigned"`
	Peers    int64 `json:"peers"`
}

// statement is v in the current type, without tallies.
func (v *statementV1) statement() Statement {
	st := Statement{Version: v.Version, Peer: v.Peer, From: v.From, To: v.To, Receipts: v.Receipts, Checksum: v.Checksum,
		Totals: Totals{Earned: v.Totals.Earned, Spent: v.Totals.Spent, Balance: v.Totals.Balance,
			Receipts: v.Totals.Receipts, Unsigned: v.Totals.Unsigned, Peers: v.Totals.Peers}}
	if v.Peers != nil {
		st.Peers = make([]Balance, len(v.Peers))
		for i, b := range v.Peers {
			st.Peers[i] = Balance{Peer: b.Peer, Earned: b.Earned, Spent: b.Spent, Balance: b.Balance, Receipts: b.Receipts, Unsigned: b.Unsigned}
		}
	}
	return st
}

// v1 is st in the version 1 form, which has no place for tallies.
func (st *Statement) v1() (*statementV1, error) {
	t := st.Totals
	if len(st.Tallies) > 0 || t.Tallies != 0 || t.Disputed != 0 {
		return nil, errors.New("a version 1 statement holds no tallies")
	}
	v := &statementV1{Version: st.Version, Peer: st.Peer, From: st.From, To: st.To, Receipts: st.Receipts, Checksum: st.Checksum,
		Totals: totalsV1{Earned: t.Earned, Spent: t.Spent, Balance: t.Balance, Receipts: t.Receipts, Unsigned: t.Unsigned, Peers: t.Peers}}
	if st.Peers != nil {
		v.Peers = make([]balanceV1, len(st.Peers))
		for i, b := range st.Peers {
			if b.Tallies != 0 || b.Disputed != 0 {
				return nil, errors.New("a version 1 statement holds no tallies")
			}
			v.Peers[i] = balanceV1{Peer: b.Peer, Earned: b.Earned, Spent: b.Spent, Balance: b.Balance, Receipts: b.Receipts, Unsigned: b.Unsigned}
		}
	}
	return v, nil
}
