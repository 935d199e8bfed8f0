package moe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference/tally"
	"github.com/mwpeer/mwpeer/receipt"
)

// FlushEvery is how often a long generation settles its expert calls: a
// host whose window began this long ago is settled with (SettleOlder)
// rather than waiting for the generation's end.
const FlushEvery = 30 * time.Second

// Settle settles this model's expert calls with every host that answered
// some since the last settlement: the runner's sharded backend calls it
// when a generation ends. With each host (all at once) it holds back new
// calls of this model to that host, waits for those in flight to end,
// takes the count from Client.Meter and proposes it through Payer, so that
// the host's count and this peer's cover the same calls; held-back calls go
// on when the exchange ends. The error joins the hosts' (a refusal wraps
// tally.ErrRefused). Without a Payer it does nothing.
func (x *Experts) Settle(ctx context.Context) error { return x.settle(ctx, 0) }

// SettleOlder settles with the hosts whose window began at least age ago:
// the periodic flush of long generations (FlushEvery).
func (x *Experts) SettleOlder(ctx context.Context, age time.Duration) error {
	return x.settle(ctx, max(age, time.Nanosecond))
}

func (x *Experts) settle(ctx context.Context, age time.Duration) error {
	if x.Payer == nil || x.Client == nil || x.Client.Meter == nil {
		return nil
	}
	hosts := x.Client.Meter.Due(x.Model.String(), age)
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, p := range hosts {
		wg.Go(func() { errs[i] = x.settleWith(ctx, p) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// settleWith settles with host p, its calls held back meanwhile.
func (x *Experts) settleWith(ctx context.Context, p peer.ID) error {
	resume, err := x.pause(ctx, p)
	if err != nil {
		return fmt.Errorf("settle with %s: %w", p.ShortString(), err)
	}
	defer resume()
	w, start, ok := x.Client.Meter.Take(p, x.Model.String())
	if !ok || w.Calls == 0 {
		return nil
	}
	_, err = x.Payer.Settle(ctx, receipt.Tally{
		Kind: receipt.KindExpert, Worker: p, Model: x.Model.String(),
		Calls: w.Calls, Rows: w.Rows, Flops: receipt.ExpertFlops(w.Values, x.FeedForward),
		Start: start, End: time.Now(),
	})
	if errors.Is(err, tally.ErrNotProposed) {
		x.Client.Meter.Add(p, x.Model.String(), w) // still owed: next time
	}
	return err
}

// pause holds back new calls to p and waits until none is in flight; resume
// lets them go. Settlements with p take turns.
func (x *Experts) pause(ctx context.Context, p peer.ID) (resume func(), err error) {
	x.mu.Lock()
	for x.paused[p] != nil {
		wait := x.paused[p]
		x.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		x.mu.Lock()
	}
	if x.paused == nil {
		x.paused, x.idle = make(map[peer.ID]chan struct{}), make(map[peer.ID]chan struct{})
	}
	done := make(chan struct{})
	x.paused[p] = done
	var idle chan struct{}
	if x.inflight[p] > 0 {
		idle = make(chan struct{})
		x.idle[p] = idle
	}
	x.mu.Unlock()
	resume = func() {
		x.mu.Lock()
		delete(x.paused, p)
		delete(x.idle, p)
		x.mu.Unlock()
		close(done)
	}
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			resume()
			return nil, ctx.Err()
		}
	}
	return resume, nil
}
