package mwpeer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/infer"
)

// localTTFT streams a short answer from p's own API and returns the time
// to its first token.
func localTTFT(t *testing.T, p *Peer, model string) time.Duration {
	t.Helper()
	start := time.Now()
	var first time.Duration
	streamChat(t, p, fmt.Sprintf(`{"model":%q,"stream":true,"max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`, model),
		func(n int, _ string) {
			if n == 1 {
				first = time.Since(start)
			}
		})
	return first
}

func medianTTFT(t *testing.T, p *Peer, model string, n int) time.Duration {
	t.Helper()
	ds := make([]time.Duration, n)
	for i := range ds {
		ds[i] = localTTFT(t, p, model)
	}
	slices.Sort(ds)
	return ds[n/2]
}

// TestSlotHogLeavesLocalUserAndOthersServed: H opens more infer streams to
// S than the resource manager lets one peer hold, each asking for an answer
// that would take minutes, and asks again whenever refused. S's own user
// gets its first token within twice the time it did before, H never holds
// more than its share of S's slots, and Q, another peer, is still served.
func TestSlotHogLeavesLocalUserAndOthersServed(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}, {}, {}}, func(i int, c *Config) {
		c.Capacity = 4 // one slot for the local user, three for others, one each
		c.QueueWait = time.Second
		c.Synthetic.Tokens = 100_000
		c.Synthetic.Rate = 20
		c.Synthetic.TTFT = 100 * time.Millisecond
	})
	s, h, q := peers[0], peers[1], peers[2]
	baseline := medianTTFT(t, s, "syn-a", 5)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var streaming, most, busy, other atomic.Int64
	const hogs = 40 // beyond the 32 streams the resource manager lets one peer open
	for range hogs {
		wg.Go(func() {
			for ctx.Err() == nil {
				started := false
				_, err := infer.Call(ctx, h.Host, s.ID(), inference.Request{Model: "syn-a", Prompt: "go on forever"}, func(inference.Chunk) error {
					if !started {
						started = true
						if n := streaming.Add(1); n > most.Load() {
							most.Store(n)
						}
					}
					return nil
				})
				if started {
					streaming.Add(-1)
				}
				switch {
				case errors.Is(err, inference.ErrBusy):
					busy.Add(1)
				case err != nil && ctx.Err() == nil:
					other.Add(1)
				}
				time.Sleep(5 * time.Millisecond) // ask again at once, but leave the test's CPU a little

			}
		})
	}
	// Let the hog take what it can and fill S's queue.
	deadline := time.Now().Add(slow(10 * time.Second))
	for busy.Load() < hogs && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if busy.Load() == 0 || streaming.Load() == 0 {
		t.Fatalf("the hog streams %d answers and was refused %d times: it is not hogging", streaming.Load(), busy.Load())
	}

	hogged := medianTTFT(t, s, "syn-a", 5)
	if status, body := postRaw(t, q, "/v1/chat/completions", `{"model":"syn-a","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`); status != 200 {
		t.Fatalf("Q while H hogs S: status %d: %v", status, body)
	}
	t.Logf("local TTFT %s before the hog, %s during it; the hog streamed at most %d answers at once, was refused busy %d times (%d other errors)",
		baseline.Round(time.Millisecond), hogged.Round(time.Millisecond), most.Load(), busy.Load(), other.Load())
	if hogged > 2*baseline {
		t.Errorf("local TTFT %s under the hog, more than twice the %s before", hogged, baseline)
	}
	if m := most.Load(); m > int64(inference.PerPeerSlots(4)) {
		t.Errorf("the hog streamed %d answers at once, more than its %d slots", m, inference.PerPeerSlots(4))
	}
}

// TestModelsKeptLocalAreNotServedToOthers: asked directly over the infer
// protocol, bypassing routing, B refuses a model its policy keeps local
// (consent_refused) and one it does not serve at all (unknown_model), and
// serves a shared one.
func TestModelsKeptLocalAreNotServedToOthers(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "policy.toml")
	writePolicy(t, pf, "local = [\"syn-local\"]\n")
	peers := apiSwarm(t, [][]string{{}, {"syn-a", "syn-local"}}, func(i int, c *Config) {
		if i == 1 {
			c.PolicyFile = pf
		}
	})
	a, b := peers[0], peers[1]
	call := func(model string) error {
		ctx, cancel := context.WithTimeout(context.Background(), slow(10*time.Second))
		defer cancel()
		_, err := infer.Call(ctx, a.Host, b.ID(), inference.Request{Model: model, Prompt: "x"}, func(inference.Chunk) error { return nil })
		return err
	}
	if err := call("syn-a"); err != nil {
		t.Fatalf("shared model: %v", err)
	}
	if err := call("syn-local"); !errors.Is(err, inference.ErrConsentRefused) {
		t.Fatalf("model kept local: %v", err)
	}
	if err := call("syn-z"); !errors.Is(err, inference.ErrUnknownModel) {
		t.Fatalf("model not served: %v", err)
	}
}
