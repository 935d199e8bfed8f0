package infer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// Dispatch over real remote calls: losers cancelled across the wire,
// failover when a serving peer dies, strategies over remote answers.

func TestFastestCancelsLosers(t *testing.T) {
	wait.NoLeak(t)
	client := newHost(t)
	slow := serve(t, client, inference.SyntheticConfig{Tokens: 8, TTFT: 2 * time.Second})
	// The fast one takes a little while, so that the slow call surely
	// reached its backend before it is cancelled.
	fast := serve(t, client, inference.SyntheticConfig{Tokens: 8, TTFT: 200 * time.Millisecond})
	start := time.Now()
	var sb strings.Builder
	res, err := inference.Dispatch(context.Background(),
		[]inference.Target{Target(client, slow.h.ID()), Target(client, fast.h.ID())}, nil,
		inference.Fastest, testReq, func(expert string, c inference.Chunk) error {
			sb.WriteString(c.Text)
			return nil
		})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if res.Expert != fast.h.ID().String() || elapsed > time.Second {
		t.Fatalf("expert %s after %v; want the fast one well under the slow one's 2s", res.Expert, elapsed)
	}
	if want := fullText(t, inference.SyntheticConfig{Tokens: 8}, testReq); res.Text != want || sb.String() != want {
		t.Fatalf("text %q / emitted %q, want %q", res.Text, sb.String(), want)
	}
	wait.For(t, 5*time.Second, "slow expert to be cancelled", func() error {
		if c, n := slow.b.Cancellations(), slow.b.Active(); c != 1 || n != 0 {
			return fmt.Errorf("%d cancellations, %d calls active", c, n)
		}
		return nil
	})
}

func TestFailoverMidStreamKeepsText(t *testing.T) {
	wait.NoLeak(t)
	client := newHost(t)
	cfg := inference.SyntheticConfig{Tokens: 30, Rate: 200}
	first := serve(t, client, cfg)
	spare := serve(t, client, cfg)
	var sb strings.Builder
	var fromFirst int
	res, err := inference.Dispatch(context.Background(),
		[]inference.Target{Target(client, first.h.ID())}, []inference.Target{Target(client, spare.h.ID())},
		inference.Fastest, testReq, func(expert string, c inference.Chunk) error {
			sb.WriteString(c.Text)
			if expert == first.h.ID().String() {
				if fromFirst++; fromFirst == 5 {
					go first.h.Close() // the serving peer dies mid-answer
				}
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	want := fullText(t, cfg, testReq)
	if sb.String() != want || res.Text != want {
		t.Fatalf("client saw %q\nwant      %q", sb.String(), want)
	}
	if res.Failovers != 1 || len(res.Experts) != 2 || res.Experts[1] != spare.h.ID().String() {
		t.Fatalf("failovers %d, experts %v", res.Failovers, res.Experts)
	}
	if res.Final.CompletionTokens != 30 {
		t.Errorf("completion tokens %d", res.Final.CompletionTokens)
	}
}

func TestConfidencePicksBestLogprob(t *testing.T) {
	wait.NoLeak(t)
	client := newHost(t)
	unsure := serve(t, client, inference.SyntheticConfig{Tokens: 10, LogprobShift: -1})
	sure := serve(t, client, inference.SyntheticConfig{Tokens: 10, TTFT: 100 * time.Millisecond})
	var sb strings.Builder
	var experts = map[string]bool{}
	res, err := inference.Dispatch(context.Background(),
		[]inference.Target{Target(client, unsure.h.ID()), Target(client, sure.h.ID())}, nil,
		inference.Confidence, testReq, func(expert string, c inference.Chunk) error {
			experts[expert] = true
			sb.WriteString(c.Text)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.Expert != sure.h.ID().String() || len(experts) != 1 || !experts[res.Expert] {
		t.Fatalf("expert %s, emitted by %v", res.Expert, experts)
	}
	if !res.Final.HasLogprob || sb.String() != res.Text || res.Agreement != 1 {
		t.Fatalf("result %+v", res)
	}
}

func TestDispatchCancelStopsEverything(t *testing.T) {
	wait.NoLeak(t)
	client := newHost(t)
	a := serve(t, client, inference.SyntheticConfig{Tokens: 10000, Rate: 100})
	b := serve(t, client, inference.SyntheticConfig{Tokens: 10000, Rate: 100})
	for _, s := range []inference.Strategy{inference.Fastest, inference.Blend, inference.Confidence} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := inference.Dispatch(ctx, []inference.Target{Target(client, a.h.ID()), Target(client, b.h.ID())}, nil,
			s, testReq, func(string, inference.Chunk) error { return nil })
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: err %v", s, err)
		}
	}
	wait.For(t, 5*time.Second, "remote calls to end", func() error {
		if na, nb := a.b.Active(), b.b.Active(); na != 0 || nb != 0 {
			return fmt.Errorf("%d and %d calls active", na, nb)
		}
		return nil
	})
}
