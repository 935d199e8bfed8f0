package ledger

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/receipt"
)

// checkTally verifies st for the ledger of self and builds its entry;
// verified says its signatures were checked already (by the tally
// protocol), so only its form is.
func checkTally(self peer.ID, st *receipt.SignedTally, verified bool) (*entry, error) {
	if st == nil {
		return nil, errors.New("no tally")
	}
	if self == "" {
		return nil, errors.New("no peer ID for self")
	}
	if verified {
		if err := st.Validate(); err != nil {
			return nil, err
		}
	} else if err := st.VerifyPayer(); err != nil {
		return nil, err
	}
	e := &entry{id: st.ID, tally: st.Kind, start: st.Start.UnixMilli(), end: st.End.UnixMilli()}
	if len(st.WorkerSig) > 0 {
		if !verified {
			if err := st.VerifyWorker(st.WorkerSig); err != nil {
				return nil, err
			}
		}
		e.signed = true
	}
	switch {
	case st.Worker == st.Payer: // Validate refuses it; the ledger does not rely on that
		return nil, fmt.Errorf("%w: %s worked for itself", ErrNotParty, st.Worker.ShortString())
	case st.Worker == self:
		e.other, e.served = st.Payer, true
	case st.Payer == self:
		e.other = st.Worker
	default:
		return nil, fmt.Errorf("%w: %s worked for %s, and we are %s", ErrNotParty,
			st.Worker.ShortString(), st.Payer.ShortString(), self.ShortString())
	}
	if st.Cost > MaxCost {
		return nil, fmt.Errorf("%w: cost %d above %d", receipt.ErrMalformed, st.Cost, uint64(MaxCost))
	}
	e.cost = int64(st.Cost)
	e.content = st.Tally.Marshal()
	e.raw = st.Marshal()
	return e, nil
}

// PutTally stores st in the ledger of self, which must be its payer or its
// worker. It verifies the payer's signature, and the worker's when there is
// one; a tally without it is stored as disputed and counts for nothing
// until the same tally arrives countersigned. A signed tally counts as a
// receipt does: its cost is earned from the payer when self is the worker,
// spent with the worker when self is the payer.
//
// added reports whether the ledger changed: a new tally, or a stored
// disputed one now countersigned. The same tally again is (false, nil); a
// different tally under a stored ID is ErrConflict. When PutTally returns
// nil the tally is on disk.
func (l *Ledger) PutTally(self peer.ID, st *receipt.SignedTally) (added bool, err error) {
	e, err := checkTally(self, st, false)
	if err != nil {
		return false, fmt.Errorf("tally %s: %w", tallyID(st), err)
	}
	n, err := l.store(self, 1, func(int) (*entry, error) { return e, nil })
	return n > 0, err
}

func tallyID(st *receipt.SignedTally) string {
	if st == nil {
		return "(nil)"
	}
	return st.ID.String()
}
