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
type Writer struct {
	l    *Ledger
	self peer.ID
	log  *slog.Logger
	ch   chan queued
	done chan struct{}

	mu     sync.RWMutex // Queue holds it shared, Close exclusively
	closed bool
}

// writerQueue bounds the records (receipts and tallies) waiting to be
// committed, and writerBatch the records one transaction takes.
// A batch waits up to writerLinger for more after its first, so a busy peer
// commits many receipts per transaction rather than one each.
const (
	writerQueue  = 4096
	writerBatch  = 512
	writerLinger = 20 * time.Millisecond
)

// NewWriter starts a Writer storing into l as self.
func NewWriter(l *Ledger, self peer.ID, log *slog.Logger) *Writer {
	if log == nil {
		log = slog.Default()
	}
	w := &Writer{l: l, self: self, log: log, ch: make(chan queued, writerQueue), done: make(chan struct{})}
	go w.run()
	return w
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

// Close commits every queued receipt and stops the writer.
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
	for q := range w.ch {
		batch = append(batch[:0], q)
		linger.Reset(writerLinger)
	fill:
		for len(batch) < writerBatch {
			select {
			case q, ok := <-w.ch:
				if !ok {
					break fill // closing: commit what is here now
				}
				batch = append(batch, q)
			case <-linger.C:
				break fill
			}
		}
		linger.Stop()
		if err := put(batch); err == nil {
			continue
		}
		// One bad record fails the whole transaction: store them one by
		// one, so the good ones are kept and the bad one is named.
		for i := range batch {
			if err := put(batch[i : i+1]); err != nil {
				what, id := batch[i].name()
				w.log.Warn(what+" not stored", "id", id, "err", err)
			}
		}
	}
}
