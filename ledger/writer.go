package ledger

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/receipt"
)

// ErrClosed is Queue's answer once the Writer is closed.
var ErrClosed = errors.New("ledger writer closed")

// Writer stores receipts off the request path: Queue returns at once, and
// one goroutine commits whatever has queued in batches, one transaction (one
// fsync) each, so an answer never waits for the disk. A full queue makes
// Queue wait for room rather than drop a receipt. Close commits what is
// queued, then stops.
type Writer struct {
	l    *Ledger
	self peer.ID
	log  *slog.Logger
	ch   chan *receipt.Signed
	done chan struct{}

	mu     sync.RWMutex // Queue holds it shared, Close exclusively
	closed bool
}

// writerQueue bounds the receipts waiting to be committed, and writerBatch
// the receipts one transaction takes.
// A batch waits up to writerLinger for more receipts after its first, so a
// busy peer commits many receipts per transaction rather than one each.
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
	w := &Writer{l: l, self: self, log: log, ch: make(chan *receipt.Signed, writerQueue), done: make(chan struct{})}
	go w.run()
	return w
}

// Queue hands s to the writer. Its signatures must have been verified
// already (the infer protocol does before it stores): the writer checks the
// receipt's form and parties, not its signatures again.
func (w *Writer) Queue(s *receipt.Signed) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return ErrClosed
	}
	w.ch <- s
	return nil
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
	batch := make([]*receipt.Signed, 0, writerBatch)
	linger := time.NewTimer(writerLinger)
	linger.Stop()
	for s := range w.ch {
		batch = append(batch[:0], s)
		linger.Reset(writerLinger)
	fill:
		for len(batch) < writerBatch {
			select {
			case s, ok := <-w.ch:
				if !ok {
					break fill // closing: commit what is here now
				}
				batch = append(batch, s)
			case <-linger.C:
				break fill
			}
		}
		linger.Stop()
		if _, err := w.l.putBatch(w.self, batch, true); err == nil {
			continue
		}
		// One bad receipt fails the whole transaction: store them one by
		// one, so the good ones are kept and the bad one is named.
		for _, s := range batch {
			if _, err := w.l.putBatch(w.self, []*receipt.Signed{s}, true); err != nil {
				w.log.Warn("receipt not stored", "id", s.ID.String(), "err", err)
			}
		}
	}
}
