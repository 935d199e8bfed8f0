package ledger

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/receipt"
)

// Errors of storing receipts and tallies.
var (
	// ErrConflict: a different receipt (or tally) is already stored under
	// the ID, as when a request ID is replayed with other content.
	ErrConflict = errors.New("a different record is stored under this ID")
	// ErrNotParty: the receipt is neither served by nor for the peer
	// storing it; or the tally names it neither payer nor worker.
	ErrNotParty = errors.New("between other peers")
)

// Balance is the account of one counterpart. Amounts are micro-credits, and
// only receipts and tallies both peers signed count.
type Balance struct {
	Peer     peer.ID `json:"id"`
	Earned   int64   `json:"earned"`   // for work we did for Peer: answers, expert calls, shard bytes
	Spent    int64   `json:"spent"`    // for work Peer did for us
	Balance  int64   `json:"balance"`  // Spent - Earned: the credit Peer holds with us, positive when it gave us more than it took
	Receipts int64   `json:"receipts"` // signed by both
	Unsigned int64   `json:"unsigned"` // the requester's signature missing; they count for nothing
	Tallies  int64   `json:"tallies"`  // signed by both
	Disputed int64   `json:"disputed"` // tallies the worker did not countersign; they count for nothing
}

// Totals sums balances over counterparts.
type Totals struct {
	Earned   int64 `json:"earned"`
	Spent    int64 `json:"spent"`
	Balance  int64 `json:"balance"`
	Receipts int64 `json:"receipts"`
	Unsigned int64 `json:"unsigned"`
	Tallies  int64 `json:"tallies"`
	Disputed int64 `json:"disputed"`
	Peers    int64 `json:"peers"`
}

func (t *Totals) add(b Balance) {
	t.Earned += b.Earned
	t.Spent += b.Spent
	t.Balance += b.Balance
	t.Receipts += b.Receipts
	t.Unsigned += b.Unsigned
	t.Tallies += b.Tallies
	t.Disputed += b.Disputed
}

// merge adds o to t.
func (t *Totals) merge(o Totals) {
	t.add(Balance{Earned: o.Earned, Spent: o.Spent, Balance: o.Balance, Receipts: o.Receipts, Unsigned: o.Unsigned,
		Tallies: o.Tallies, Disputed: o.Disputed})
	t.Peers += o.Peers
}

// addBalance adds b to the balance a counts.
func (a *Balance) addBalance(b Balance) {
	a.Earned += b.Earned
	a.Spent += b.Spent
	a.Balance += b.Balance
	a.Receipts += b.Receipts
	a.Unsigned += b.Unsigned
	a.Tallies += b.Tallies
	a.Disputed += b.Disputed
}

// MaxCost bounds a receipt's cost: 2^53 micro-credits, about 9 billion
// credits, far above any answer. Sums of such amounts stay exact as JSON
// numbers read by JavaScript and cannot overflow in any real ledger (and a
// sum that would is an error, never a wrapped number).
const MaxCost = 1 << 53

// entry is a verified receipt or tally as it is stored.
type entry struct {
	id      receipt.ID
	tally   receipt.Kind // the kind of a tally; 0 for a receipt
	other   peer.ID      // the counterpart
	served  bool         // we did the work: served the answer, or were the tally's worker
	signed  bool         // both signatures present and valid
	start   int64        // Unix milliseconds
	end     int64        // a tally's window end, Unix milliseconds
	tokens  int64        // a receipt's
	cost    int64
	content []byte // the signed form without signatures, which decides "the same receipt"
	raw     []byte // receipt.Signed.Marshal or receipt.SignedTally.Marshal as received
}

// what names the entry in errors.
func (e *entry) what() string {
	if e.tally != 0 {
		return "tally " + e.id.String()
	}
	return "receipt " + e.id.String()
}

// balance is what the entry adds to its counterpart's balance.
func (e *entry) balance() Balance {
	b := Balance{Peer: e.other}
	switch {
	case !e.signed && e.tally != 0:
		b.Disputed = 1
		return b
	case !e.signed:
		b.Unsigned = 1
		return b
	case e.tally != 0:
		b.Tallies = 1
	default:
		b.Receipts = 1
	}
	if e.served {
		b.Earned = e.cost
	} else {
		b.Spent = e.cost
	}
	b.Balance = b.Spent - b.Earned
	return b
}

// checkReceipt verifies s for the ledger of self and builds its entry;
// verified says its signatures were checked already, so only its form is.
func checkReceipt(self peer.ID, s *receipt.Signed, verified bool) (*entry, error) {
	if s == nil {
		return nil, errors.New("no receipt")
	}
	if self == "" {
		return nil, errors.New("no peer ID for self")
	}
	if verified {
		if err := s.Validate(); err != nil {
			return nil, err
		}
	} else if err := s.VerifyServer(); err != nil {
		return nil, err
	}
	e := &entry{id: s.ID, start: s.Start.UnixMilli(), tokens: int64(s.PromptTokens) + int64(s.CompletionTokens)}
	if len(s.RequesterSig) > 0 {
		if !verified {
			if err := s.VerifyRequester(s.RequesterSig); err != nil {
				return nil, err
			}
		}
		e.signed = true
	}
	switch {
	case s.Server == s.Requester:
		return nil, fmt.Errorf("%w: %s served itself", ErrNotParty, s.Server.ShortString())
	case s.Server == self:
		e.other, e.served = s.Requester, true
	case s.Requester == self:
		e.other = s.Server
	default:
		return nil, fmt.Errorf("%w: %s served %s, and we are %s", ErrNotParty,
			s.Server.ShortString(), s.Requester.ShortString(), self.ShortString())
	}
	if s.Cost > MaxCost {
		return nil, fmt.Errorf("%w: cost %d above %d", receipt.ErrMalformed, s.Cost, uint64(MaxCost))
	}
	e.cost = int64(s.Cost)
	e.content = s.Receipt.Marshal()
	e.raw = s.Marshal()
	return e, nil
}

// Put stores s in the ledger of self, which must be its server or its
// requester. It verifies the server's signature, and the requester's when
// there is one; a receipt without it is stored as unsigned and counts for
// nothing until the same receipt arrives countersigned.
//
// added reports whether the ledger changed: a new receipt, or a stored
// unsigned one now countersigned. The same receipt again is (false, nil);
// a different receipt under a stored ID is ErrConflict. When Put returns
// nil the receipt is on disk.
func (l *Ledger) Put(self peer.ID, s *receipt.Signed) (added bool, err error) {
	e, err := checkReceipt(self, s, false)
	if err != nil {
		return false, fmt.Errorf("receipt %s: %w", receiptID(s), err)
	}
	n, err := l.store(self, 1, func(int) (*entry, error) { return e, nil })
	return n > 0, err
}

// PutBatch stores receipts as Put does, all in one transaction: all of them
// or, on any error, none. Signatures are checked on every CPU, chunks ahead
// of the inserts. It returns how many receipts changed the ledger.
func (l *Ledger) PutBatch(self peer.ID, batch []*receipt.Signed) (added int, err error) {
	return l.putBatch(self, batch, false)
}

// putBatch is PutBatch; verified says the signatures were checked already
// (by the infer protocol, for the Writer), so only the form is.
func (l *Ledger) putBatch(self peer.ID, batch []*receipt.Signed, verified bool) (added int, err error) {
	return l.putChecked(self, len(batch), func(i int) (*entry, error) {
		e, err := checkReceipt(self, batch[i], verified)
		if err != nil {
			return nil, fmt.Errorf("receipt %d (%s): %w", i, receiptID(batch[i]), err)
		}
		return e, nil
	})
}

// putChecked stores n receipts or tallies in one transaction: all of them
// or, on any error, none. check(i) verifies the i-th and builds its entry;
// it runs on every CPU, chunks ahead of the inserts.
func (l *Ledger) putChecked(self peer.ID, n int, check func(i int) (*entry, error)) (added int, err error) {
	if n == 0 {
		return 0, nil
	}
	const chunk = 128
	chunks := (n + chunk - 1) / chunk
	entries := make([]*entry, n)
	errs := make([]error, chunks)
	ready := make([]chan struct{}, chunks) // closed when a chunk is checked
	for c := range ready {
		ready[c] = make(chan struct{})
	}
	var (
		next atomic.Int64
		stop atomic.Bool // the transaction failed: checking further is waste
		wg   sync.WaitGroup
	)
	for range min(runtime.GOMAXPROCS(0), chunks) {
		wg.Go(func() {
			for {
				c := int(next.Add(1) - 1)
				if c >= chunks {
					return
				}
				for i := c * chunk; i < min((c+1)*chunk, n) && !stop.Load(); i++ {
					e, err := check(i)
					if err != nil {
						errs[c] = err
						break
					}
					entries[i] = e
				}
				close(ready[c])
			}
		})
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	return l.store(self, n, func(i int) (*entry, error) {
		c := i / chunk
		if i%chunk == 0 {
			<-ready[c]
		}
		if errs[c] != nil {
			return nil, errs[c]
		}
		return entries[i], nil
	})
}

func receiptID(s *receipt.Signed) string {
	if s == nil {
		return "(nil)"
	}
	return s.ID.String()
}

// store writes n verified entries, got in order from entry, in one
// transaction and, once it committed, adds them to the counters.
func (l *Ledger) store(self peer.ID, n int, entry func(i int) (*entry, error)) (int, error) {
	ctx := context.Background()
	var (
		added int
		delta Totals
	)
	claimed := false
	var p *putTx
	err := l.write(ctx, func(tx *sql.Tx) error {
		added, delta, claimed = 0, Totals{}, false
		var err error
		if claimed, err = l.claim(ctx, tx, self); err != nil {
			return err
		}
		p = l.putTx(ctx, tx)
		for i := range n {
			e, err := entry(i)
			if err != nil {
				return err
			}
			ok, d, err := p.put(ctx, e)
			if err != nil {
				return fmt.Errorf("%s: %w", e.what(), err)
			}
			if ok {
				added++
				delta.merge(d)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	p.committed()
	l.mu.Lock()
	if claimed {
		l.owner = self
	}
	l.counters.merge(delta)
	l.mu.Unlock()
	return added, nil
}

// claim checks that self owns the ledger, making it the owner of a ledger
// that had none. A ledger holds one peer's receipts and tallies: its
// statements say whose they are.
func (l *Ledger) claim(ctx context.Context, tx *sql.Tx, self peer.ID) (claimed bool, err error) {
	l.mu.Lock()
	owner := l.owner
	l.mu.Unlock()
	if owner == "" {
		var b []byte
		err := tx.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'owner'").Scan(&b)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err := tx.ExecContext(ctx, "INSERT INTO meta (key, value) VALUES ('owner', ?)", []byte(self))
			return err == nil, err
		case err != nil:
			return false, err
		}
		owner = peer.ID(b)
	}
	if owner != self {
		return false, fmt.Errorf("the ledger %s belongs to %s, not %s", l.path, owner, self)
	}
	return false, nil
}

// putStmts are the prepared statements of storing a receipt or a tally,
// which is done often enough that parsing them each time would cost as much
// as the rest of the insert.
type putStmts struct {
	find, insert, findTally, insertTally, add *sql.Stmt
}

// maxKnown bounds the cache of counterpart rows.
const maxKnown = 1 << 16

func (ps *putStmts) prepare(db *sql.DB) error {
	var err error
	for _, s := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&ps.find, "SELECT signed, raw FROM receipts WHERE id = ?"},
		{&ps.insert, `INSERT INTO receipts (id, peer, served, signed, start, tokens, cost, raw)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`},
		{&ps.findTally, "SELECT signed, raw FROM tallies WHERE id = ?"},
		{&ps.insertTally, `INSERT INTO tallies (id, peer, worked, signed, kind, start, end, cost, raw)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`},
		{&ps.add, `UPDATE counterparts SET earned = earned + ?, spent = spent + ?,
			signed = signed + ?, unsigned = unsigned + ?, tallies = tallies + ?, disputed = disputed + ? WHERE id = ?`},
	} {
		if *s.stmt, err = db.Prepare(s.sql); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
	}
	return nil
}

func (ps *putStmts) close() {
	for _, s := range []*sql.Stmt{ps.find, ps.insert, ps.findTally, ps.insertTally, ps.add} {
		if s != nil {
			s.Close()
		}
	}
}

// putTx stores receipts and tallies in one transaction.
type putTx struct {
	l                                         *Ledger
	tx                                        *sql.Tx
	find, insert, findTally, insertTally, add *sql.Stmt
	rows                                      map[peer.ID]int64 // counterpart rows this transaction looked up or made
}

// putTx binds the prepared statements to tx. Those of tallies are bound on
// first use: most transactions store receipts only.
func (l *Ledger) putTx(ctx context.Context, tx *sql.Tx) *putTx {
	return &putTx{l: l, tx: tx, find: tx.StmtContext(ctx, l.put.find), insert: tx.StmtContext(ctx, l.put.insert),
		add: tx.StmtContext(ctx, l.put.add), rows: make(map[peer.ID]int64)}
}

// committed remembers the counterpart rows of a committed transaction.
// Rows are never deleted, so a row ID stays right once committed.
func (p *putTx) committed() {
	p.l.mu.Lock()
	defer p.l.mu.Unlock()
	for other, id := range p.rows {
		if len(p.l.known) >= maxKnown {
			return
		}
		p.l.known[other] = id
	}
}

// counterpart is the row of other, made if missing; fresh reports that it
// has no receipts or tallies yet.
func (p *putTx) counterpart(ctx context.Context, other peer.ID) (id int64, fresh bool, err error) {
	if id, ok := p.rows[other]; ok {
		return id, false, nil
	}
	p.l.mu.Lock()
	id, ok := p.l.known[other]
	p.l.mu.Unlock()
	if ok {
		return id, false, nil
	}
	if _, err := p.tx.ExecContext(ctx, "INSERT INTO counterparts (peer) VALUES (?) ON CONFLICT (peer) DO NOTHING", []byte(other)); err != nil {
		return 0, false, fmt.Errorf("counterpart %s: %w", other.ShortString(), err)
	}
	var n int64
	if err := p.tx.QueryRowContext(ctx, "SELECT id, signed + unsigned + tallies + disputed FROM counterparts WHERE peer = ?",
		[]byte(other)).Scan(&id, &n); err != nil {
		return 0, false, fmt.Errorf("counterpart %s: %w", other.ShortString(), err)
	}
	p.rows[other] = id
	return id, n == 0, nil
}

// put stores one entry and adds it to its counterpart's row. d is what it
// added to the totals (Peers 1 for a new counterpart).
func (p *putTx) put(ctx context.Context, e *entry) (added bool, d Totals, err error) {
	pid, fresh, err := p.counterpart(ctx, e.other)
	if err != nil {
		return false, d, err
	}
	var res sql.Result
	if e.tally != 0 {
		if p.insertTally == nil {
			p.findTally, p.insertTally = p.tx.StmtContext(ctx, p.l.put.findTally), p.tx.StmtContext(ctx, p.l.put.insertTally)
		}
		res, err = p.insertTally.ExecContext(ctx, e.id[:], pid, e.served, e.signed, int64(e.tally), e.start, e.end, e.cost, e.raw)
	} else {
		res, err = p.insert.ExecContext(ctx, e.id[:], pid, e.served, e.signed, e.start, e.tokens, e.cost, e.raw)
	}
	if err != nil {
		return false, d, err
	}
	b := e.balance()
	if n, err := res.RowsAffected(); err != nil {
		return false, d, err
	} else if n == 1 {
		if err := p.addTo(ctx, pid, e.other, b); err != nil {
			return false, d, err
		}
		d.add(b)
		if fresh {
			d.Peers = 1
		}
		return true, d, nil
	}

	// The ID is stored: the same receipt (or tally), maybe now
	// countersigned, or a conflict.
	var (
		signed bool
		raw    []byte
		same   bool
	)
	if e.tally != 0 {
		if err := p.findTally.QueryRowContext(ctx, e.id[:]).Scan(&signed, &raw); err != nil {
			return false, d, err
		}
		stored, err := receipt.UnmarshalSignedTally(raw)
		if err != nil {
			return false, d, fmt.Errorf("stored tally unreadable: %w", err)
		}
		same = bytes.Equal(stored.Tally.Marshal(), e.content)
	} else {
		if err := p.find.QueryRowContext(ctx, e.id[:]).Scan(&signed, &raw); err != nil {
			return false, d, err
		}
		stored, err := receipt.UnmarshalSigned(raw)
		if err != nil {
			return false, d, fmt.Errorf("stored receipt unreadable: %w", err)
		}
		same = bytes.Equal(stored.Receipt.Marshal(), e.content)
	}
	if !same {
		return false, d, ErrConflict
	}
	if signed || !e.signed {
		return false, d, nil
	}
	// It was unsigned (disputed) and now comes countersigned: it counts,
	// and no longer as unsigned.
	upgrade := "UPDATE receipts SET signed = 1, raw = ? WHERE id = ?"
	if e.tally != 0 {
		upgrade = "UPDATE tallies SET signed = 1, raw = ? WHERE id = ?"
		b.Disputed = -1
	} else {
		b.Unsigned = -1
	}
	if _, err := p.tx.ExecContext(ctx, upgrade, e.raw, e.id[:]); err != nil {
		return false, d, err
	}
	if err := p.addTo(ctx, pid, e.other, b); err != nil {
		return false, d, err
	}
	d.add(b)
	return true, d, nil
}

// addTo adds b to the aggregates of the counterpart row pid (of other).
func (p *putTx) addTo(ctx context.Context, pid int64, other peer.ID, b Balance) error {
	if _, err := p.add.ExecContext(ctx, b.Earned, b.Spent, b.Receipts, b.Unsigned, b.Tallies, b.Disputed, pid); err != nil {
		return fmt.Errorf("counterpart %s: %w", other.ShortString(), err)
	}
	return nil
}

// Balance is the account of p; a peer without receipts or tallies has a
// zero one.
func (l *Ledger) Balance(p peer.ID) (Balance, error) {
	b := Balance{Peer: p}
	err := l.balance.QueryRowContext(context.Background(), []byte(p)).Scan(&b.Earned, &b.Spent, &b.Receipts, &b.Unsigned,
		&b.Tallies, &b.Disputed)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return b, fmt.Errorf("balance of %s: %w", p.ShortString(), err)
	}
	b.Balance = b.Spent - b.Earned
	return b, nil
}

// Balances are the accounts of every counterpart, the highest balance first
// (then by peer ID), and their totals.
func (l *Ledger) Balances() ([]Balance, Totals, error) {
	var t Totals
	rows, err := l.r.QueryContext(context.Background(), `SELECT peer, earned, spent, signed, unsigned, tallies, disputed
		FROM counterparts ORDER BY spent - earned DESC, peer`)
	if err != nil {
		return nil, t, fmt.Errorf("balances: %w", err)
	}
	defer rows.Close()
	var out []Balance
	for rows.Next() {
		var (
			b  Balance
			id []byte
		)
		if err := rows.Scan(&id, &b.Earned, &b.Spent, &b.Receipts, &b.Unsigned, &b.Tallies, &b.Disputed); err != nil {
			return nil, t, fmt.Errorf("balances: %w", err)
		}
		b.Peer = peer.ID(id)
		b.Balance = b.Spent - b.Earned
		t.add(b)
		t.Peers++
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, t, fmt.Errorf("balances: %w", err)
	}
	return out, t, nil
}

// totals sums the counterparts' rows.
func totals(ctx context.Context, q querier) (Totals, error) {
	var t Totals
	err := q.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(earned), 0), coalesce(sum(spent), 0),
		coalesce(sum(signed), 0), coalesce(sum(unsigned), 0), coalesce(sum(tallies), 0), coalesce(sum(disputed), 0)
		FROM counterparts`).
		Scan(&t.Peers, &t.Earned, &t.Spent, &t.Receipts, &t.Unsigned, &t.Tallies, &t.Disputed)
	t.Balance = t.Spent - t.Earned
	return t, err
}

// Counters are the ledger's totals as this process knows them, without a
// query: read at Open, then moved by every receipt and tally stored through
// this Ledger. Receipts, Tallies, Earned and Spent only grow (Prometheus
// counters); Unsigned and Disputed fall when one is upgraded and Peers only
// grows (gauges).
func (l *Ledger) Counters() Totals {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counters
}

// ServedTokens is the number of tokens (prompt and completion) we served p
// in answers that started at or after since: what a daily free allowance
// is measured against. Unsigned receipts count here, unlike in balances: a
// peer that refuses to countersign still took the work.
func (l *Ledger) ServedTokens(p peer.ID, since time.Time) (int64, error) {
	var n int64
	err := l.r.QueryRowContext(context.Background(), `SELECT coalesce(sum(r.tokens), 0)
		FROM counterparts c JOIN receipts r ON r.peer = c.id
		WHERE c.peer = ? AND r.served = 1 AND r.start >= ?`, []byte(p), ceilMilli(since)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("tokens served to %s: %w", p.ShortString(), err)
	}
	return n, nil
}

// ceilMilli is the first Unix millisecond at or after t.
func ceilMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}
