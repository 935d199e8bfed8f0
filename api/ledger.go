package api

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/mwpeer/mwpeer/ledger"
)

// Accounts is what GET /api/ledger reads (ledger.Ledger).
type Accounts interface {
	Balances() ([]ledger.Balance, ledger.Totals, error)
}

// LedgerView is the body of GET /api/ledger. Credits are in
// micro-credits (receipt.Micro to the credit).
type LedgerView struct {
	Peers  []ledger.Balance `json:"peers"`
	Totals ledger.Totals    `json:"totals"`
}

// SetLedger serves GET /api/ledger from a: earned, spent and balance per
// counterpart, and totals. Call it once, before serving.
func (s *Server) SetLedger(a Accounts) {
	s.mux.HandleFunc("GET /api/ledger", func(w http.ResponseWriter, r *http.Request) {
		peers, totals, err := a.Balances()
		if err != nil {
			writeError(w, http.StatusInternalServerError, "ledger_error", fmt.Sprintf("ledger: %v", err))
			return
		}
		if peers == nil {
			peers = []ledger.Balance{}
		}
		writeJSON(w, http.StatusOK, LedgerView{Peers: peers, Totals: totals})
	})
}

// LedgerKeys adapts a ledger's API keys to Keys. Whether any key exists is
// asked of the ledger at most once a second (keys are added by the CLI, in
// another process, and take effect within that second).
func LedgerKeys(l *ledger.Ledger) Keys { return &ledgerKeys{l: l} }

type ledgerKeys struct {
	l *ledger.Ledger

	mu    sync.Mutex
	has   bool
	asked time.Time
}

const hasKeysFor = time.Second

func (k *ledgerKeys) HasKeys() (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if time.Since(k.asked) < hasKeysFor {
		return k.has, nil
	}
	has, err := k.l.HasKeys()
	if err != nil {
		return false, err
	}
	k.has, k.asked = has, time.Now()
	return has, nil
}

func (k *ledgerKeys) Authorize(secret string) (KeyInfo, error) {
	info, err := k.l.Authorize(secret)
	switch {
	case errors.Is(err, ledger.ErrUnknownKey):
		return KeyInfo{}, fmt.Errorf("%w: %w", ErrUnknownKey, err)
	case errors.Is(err, ledger.ErrQuotaExhausted):
		return KeyInfo{}, fmt.Errorf("%w: %w", ErrQuotaExhausted, err)
	case err != nil:
		return KeyInfo{}, err
	}
	return KeyInfo{Name: info.Name, Remaining: info.Remaining}, nil
}

func (k *ledgerKeys) Charge(name string, tokens int64) error { return k.l.Charge(name, tokens) }
