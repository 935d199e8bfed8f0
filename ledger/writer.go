package ledger

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/receipt"
)

// ErrClosed is Queue's answer once the Writer is closed.
var ErrClosed = errors.New("ledger writer closed")

// Writer stores receipts and tallies off the request path: Queue and
// QueueTally return at once, and one goroutine commits whatever has queued
// in batches, one transaction (one fsync) each, so an answer never waits for
// the disk. A full queue makes them wait for room rather than drop a record.
// Close commits what is queued, then stops.
//
// A Writer made by NewAuditWriter also appends audit entries (Audit) to a
// Chain, in batches of their own, and writes the chain's checkpoints that
// fall due by time; Close writes a last checkpoint. Audit never waits: an
// entry that finds the buffer full is counted, and the count is appended as
// an AuditDropped entry, so the chain says what it lost.
type Writer struct {
	l     *Ledger
	self  peer.ID
	log   *slog.Logger
	ch    chan queued
	done  chan struct{}
	chain *Chain // nil: no audit chain

	mu     sync.RWMutex // Queue and Audit hold it shared, Close exclusively
	closed bool

	amu     sync.Mutex
	pending []AuditEntry  // audit entries waiting
	most    int           // of them: auditQueue
	dropped int64         // audit entries lost since the last batch
	kick    chan struct{} // wakes run when audit entries wait
}

// writerQueue bounds the records (receipts and tallies) waiting to be
// committed, and writerBatch the records one transaction takes.
// A batch waits up to writerLinger for more after its first, so a busy peer
// commits many receipts per transaction rather than one each.
//
// auditQueue bounds the audit entries waiting (about 300 bytes each), and
// auditBatch those one transaction appends; auditTick is how often an idle
// writer asks the chain whether a checkpoint is due by time.
const (
	writerQueue  = 4096
	writerBatch  = 512
	writerLinger = 20 * time.Millisecond
	auditQueue   = 1 << 17
	auditBatch   = 4096
	auditTick    = 5 * time.Second
)

// NewWriter starts a Writer storing into l as self.
func NewWriter(l *Ledger, self peer.ID, log *slog.Logger) *Writer {
	return NewAuditWriter(l, self, nil, log)
}

// NewAuditWriter starts a Writer storing into l as self that also appends
// audit entries to chain (nil: Audit drops them).
func NewAuditWriter(l *Ledger, self peer.ID, chain *Chain, log *slog.Logger) *Writer {
	if log == nil {
		log = slog.Default()
	}
	w := &Writer{l: l, self: self, log: log, ch: make(chan queued, writerQueue), done: make(chan struct{}),
		chain: chain, most: auditQueue, kick: make(chan struct{}, 1)}
	go w.run()
	return w
}

// Audit hands e to the writer for the audit chain. It never blocks and
// never fails: on a full buffer e is counted as dropped (and the count
// appended); after Close, or without a chain, it is ignored.
func (w *Writer) Audit(e AuditEntry) {
	if w.chain == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = w.chain.Now()
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return
	}
	w.amu.Lock()
	if len(w.pending) < w.most {
		w.pending = append(w.pending, e)
	} else {
		w.dropped++
	}
	w.amu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// auditWaiting is the number of audit entries waiting.
func (w *Writer) auditWaiting() int {
	w.amu.Lock()
	defer w.amu.Unlock()
	return len(w.pending)
}

// flushAudit appends the audit entries waiting, in batches.
func (w *Writer) flushAudit() {
	if w.chain == nil {
		return
	}
	for {
		w.amu.Lock()
		n := min(len(w.pending), auditBatch)
		batch := make([]AuditEntry, n, n+1)
		copy(batch, w.pending)
		w.pending = w.pending[:copy(w.pending, w.pending[n:])]
		if w.dropped > 0 {
			batch = append(batch, AuditEntry{Kind: AuditDropped, Tokens: w.dropped})
			w.dropped = 0
		}
		w.amu.Unlock()
		if len(batch) == 0 {
			return
		}
		if err := w.chain.Append(batch...); err != nil {
			lost := int64(len(batch))
			if batch[len(batch)-1].Kind == AuditDropped {
				lost += batch[len(batch)-1].Tokens - 1
			}
			w.log.Warn("audit entries not stored", "entries", lost, "err", err)
			w.amu.Lock()
			w.dropped += lost
			w.amu.Unlock()
			return // try again with the next batch, or at Close
		}
	}
}

// Queue hands s to the writer. Its signatures must have been verified
// already (the infer protocol does before it stores): the writer checks the
// receipt's form and parties, not its signatures again.
func (w *Writer) Queue(s *receipt.Signed) error {
	if s == nil {
		return errors.New("no receipt")
	}
	return w.queue(queued{r: s})
}

// QueueTally hands st to the writer. Its signatures must have been
// verified already (the tally protocol does: the worker checks the payer's
// before it countersigns, the payer the worker's countersignature): the
// writer checks the tally's form and parties, not its signatures again. The
// writer keeps a copy of *st, so the caller may go on using st.
func (w *Writer) QueueTally(st *receipt.SignedTally) error {
	if st == nil {
		return errors.New("no tally")
	}
	c := *st
	return w.queue(queued{t: &c})
}

func (w *Writer) queue(q queued) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return ErrClosed
	}
	w.ch <- q
	return nil
}

// queued is a receipt or a tally waiting to be committed.
type queued struct {
	r *receipt.Signed
	t *receipt.SignedTally
}

// check checks q's form for the ledger of self (its signatures were
// verified before it was queued).
func (q queued) check(self peer.ID) (*entry, error) {
	if q.t != nil {
		return checkTally(self, q.t, true)
	}
	return checkReceipt(self, q.r, true)
}

// name is what q is and its ID.
func (q queued) name() (what, id string) {
	if q.t != nil {
		return "tally", q.t.ID.String()
	}
	return "receipt", q.r.ID.String()
}

// Close commits every queued receipt and tally and every audit entry handed
// over before it, writes a checkpoint of the audit chain, and stops the
// writer.
func (w *Writer) Close() error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
	w.mu.Unlock()
	<-w.done
	return nil
}

func (w *Writer) run() {
	defer close(w.done)
	batch := make([]queued, 0, writerBatch)
	linger := time.NewTimer(writerLinger)
	linger.Stop()
	var tick <-chan time.Time
	if w.chain != nil {
		t := time.NewTicker(auditTick)
		defer t.Stop()
		tick = t.C
	}
	put := func(batch []queued) error {
		_, err := w.l.putChecked(w.self, len(batch), func(i int) (*entry, error) {
			e, err := batch[i].check(w.self)
			if err != nil {
				what, id := batch[i].name()
				return nil, fmt.Errorf("%s %s: %w", what, id, err)
			}
			return e, nil
		})
		return err
	}
	for {
		batch = batch[:0]
		select {
		case q, ok := <-w.ch:
			if !ok { // closed: what Audit took before Close is waiting
				w.flushAudit()
				if w.chain != nil {
					if err := w.chain.Checkpoint(); err != nil {
						w.log.Warn("audit checkpoint not stored", "err", err)
					}
				}
				return
			}
			batch = append(batch, q)
		case <-w.kick:
		case <-tick:
			if err := w.chain.Tick(); err != nil {
				w.log.Warn("audit checkpoint not stored", "err", err)
			}
			continue
		}
		// Linger for more receipts and audit entries, so that a busy peer
		// commits many per transaction.
		linger.Reset(writerLinger)
	fill:
		for len(batch) < writerBatch {
			select {
			case q, ok := <-w.ch:
				if !ok {
					break fill // closing: commit what is here now
				}
				batch = append(batch, q)
			case <-w.kick:
				if w.auditWaiting() >= auditBatch {
					break fill
				}
			case <-linger.C:
				break fill
			}
		}
		linger.Stop()
		w.putAll(batch, put)
		w.flushAudit()
	}
}

// putAll commits batch; when one bad record fails the whole transaction,
// it stores them one by one, so the good ones are kept and the bad one is
// named.
func (w *Writer) putAll(batch []queued, put func([]queued) error) {
	if len(batch) == 0 || put(batch) == nil {
		return
	}
	for i := range batch {
		if err := put(batch[i : i+1]); err != nil {
			what, id := batch[i].name()
			w.log.Warn(what+" not stored", "id", id, "err", err)
		}
	}
}
