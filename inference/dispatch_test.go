package inference

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func failing(name string, err error) Target {
	return Target{Name: name, Run: func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
		return Final{}, err
	}}
}

func named(name string, b Backend) Target {
	return Target{Name: name, Run: b.Generate}
}

func TestFastestCancelsLosers(t *testing.T) {
	checkNoLeak(t)
	client := newHost(t)
	slow := serve(t, client, SyntheticConfig{Tokens: 8, TTFT: 2 * time.Second})
	// The fast one takes a little while, so that the slow call surely
	// reached its backend before it is cancelled.
	fast := serve(t, client, SyntheticConfig{Tokens: 8, TTFT: 200 * time.Millisecond})
	start := time.Now()
	var sb strings.Builder
	res, err := Dispatch(context.Background(),
		[]Target{RemoteTarget(client, slow.h.ID()), RemoteTarget(client, fast.h.ID())}, nil,
		Fastest, testReq, func(expert string, c Chunk) error {
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
	if want := fullText(t, SyntheticConfig{Tokens: 8}, testReq); res.Text != want || sb.String() != want {
		t.Fatalf("text %q / emitted %q, want %q", res.Text, sb.String(), want)
	}
	eventually(t, 5*time.Second, "slow expert to be cancelled", func() bool {
		return slow.b.Cancellations() == 1 && slow.b.Active() == 0
	})
}

func TestFastFailingExpertDoesNotWin(t *testing.T) {
	checkNoLeak(t)
	b := NewSynthetic(SyntheticConfig{Tokens: 5, TTFT: 50 * time.Millisecond})
	res, err := Dispatch(context.Background(),
		[]Target{failing("broken", errors.New("boom")), named("good", b)}, nil,
		Fastest, testReq, func(string, Chunk) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Expert != "good" || res.Errors["broken"] == nil {
		t.Fatalf("result %+v", res)
	}
}

func TestAllExpertsFailIsNoExpert(t *testing.T) {
	checkNoLeak(t)
	spareUsed := atomic.Bool{}
	spare := Target{Name: "spare", Run: func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
		spareUsed.Store(true)
		return Final{}, ErrBusy
	}}
	_, err := Dispatch(context.Background(),
		[]Target{failing("a", ErrUnknownModel), failing("b", errors.New("boom"))}, []Target{spare},
		Fastest, testReq, func(string, Chunk) error { return nil })
	if !errors.Is(err, ErrNoExpert) || !spareUsed.Load() {
		t.Fatalf("err %v, spare used %v", err, spareUsed.Load())
	}
	if _, err := Dispatch(context.Background(), nil, nil, Fastest, testReq, nil); !errors.Is(err, ErrNoExpert) {
		t.Fatalf("no targets: %v", err)
	}
}

func TestFailoverMidStreamKeepsText(t *testing.T) {
	checkNoLeak(t)
	client := newHost(t)
	cfg := SyntheticConfig{Tokens: 30, Rate: 200}
	first := serve(t, client, cfg)
	spare := serve(t, client, cfg)
	var sb strings.Builder
	var fromFirst int
	res, err := Dispatch(context.Background(),
		[]Target{RemoteTarget(client, first.h.ID())}, []Target{RemoteTarget(client, spare.h.ID())},
		Fastest, testReq, func(expert string, c Chunk) error {
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

// stallAfter emits n tokens of b's answer and then hangs until cancelled.
func stallAfter(name string, b Backend, n int) Target {
	return Target{Name: name, Run: func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
		sent := 0
		stalled := errors.New("stalled")
		_, err := b.Generate(ctx, req, func(c Chunk) error {
			if sent == n {
				return stalled
			}
			sent++
			return emit(c)
		})
		if errors.Is(err, stalled) {
			<-ctx.Done()
			return Final{}, ctx.Err()
		}
		return Final{}, fmt.Errorf("unexpected: %v", err)
	}}
}

func TestStalledExpertIsReplaced(t *testing.T) {
	checkNoLeak(t)
	cfg := SyntheticConfig{Tokens: 12}
	cfgd := DispatchConfig{StallTimeout: 100 * time.Millisecond}
	var sb strings.Builder
	res, err := cfgd.Dispatch(context.Background(),
		[]Target{stallAfter("staller", NewSynthetic(cfg), 4)}, []Target{named("spare", NewSynthetic(cfg))},
		Fastest, testReq, func(_ string, c Chunk) error { sb.WriteString(c.Text); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if want := fullText(t, cfg, testReq); sb.String() != want {
		t.Fatalf("client saw %q, want %q", sb.String(), want)
	}
	if res.Failovers != 1 || !errors.Is(res.Errors["staller"], ErrStalled) {
		t.Fatalf("failovers %d, errors %v", res.Failovers, res.Errors)
	}
}

func TestFailoverWithoutSpareReportsError(t *testing.T) {
	checkNoLeak(t)
	cfgd := DispatchConfig{StallTimeout: 50 * time.Millisecond}
	res, err := cfgd.Dispatch(context.Background(),
		[]Target{stallAfter("staller", NewSynthetic(SyntheticConfig{}), 2)}, nil,
		Fastest, testReq, func(string, Chunk) error { return nil })
	if err == nil || !errors.Is(err, ErrStalled) || res.Text == "" {
		t.Fatalf("err %v, text %q", err, res.Text)
	}
}

func TestConfidencePicksBestLogprob(t *testing.T) {
	checkNoLeak(t)
	client := newHost(t)
	unsure := serve(t, client, SyntheticConfig{Tokens: 10, LogprobShift: -1})
	sure := serve(t, client, SyntheticConfig{Tokens: 10, TTFT: 100 * time.Millisecond})
	var sb strings.Builder
	var experts = map[string]bool{}
	res, err := Dispatch(context.Background(),
		[]Target{RemoteTarget(client, unsure.h.ID()), RemoteTarget(client, sure.h.ID())}, nil,
		Confidence, testReq, func(expert string, c Chunk) error {
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

func TestBlendReportsAgreement(t *testing.T) {
	checkNoLeak(t)
	cfg := SyntheticConfig{Tokens: 10}
	seed := int64(42)
	differ := Target{Name: "differ", Run: func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
		req.Seed = &seed
		return NewSynthetic(SyntheticConfig{Tokens: 10, TTFT: 50 * time.Millisecond}).Generate(ctx, req, emit)
	}}
	agree := named("agree", NewSynthetic(SyntheticConfig{Tokens: 10, TTFT: 50 * time.Millisecond}))
	res, err := Dispatch(context.Background(),
		[]Target{differ, named("fast", NewSynthetic(cfg)), agree}, nil,
		Blend, testReq, func(string, Chunk) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Expert != "fast" || res.Text != fullText(t, cfg, testReq) {
		t.Fatalf("expert %s text %q", res.Expert, res.Text)
	}
	if res.Agreements["agree"] != 1 || res.Agreements["differ"] >= 1 || len(res.Agreements) != 2 {
		t.Fatalf("agreements %v", res.Agreements)
	}
	if want := (1 + res.Agreements["differ"]) / 2; res.Agreement != want {
		t.Fatalf("agreement %v, want %v", res.Agreement, want)
	}
}

func TestDispatchCancelStopsEverything(t *testing.T) {
	checkNoLeak(t)
	client := newHost(t)
	a := serve(t, client, SyntheticConfig{Tokens: 10000, Rate: 100})
	b := serve(t, client, SyntheticConfig{Tokens: 10000, Rate: 100})
	for _, s := range []Strategy{Fastest, Blend, Confidence} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := Dispatch(ctx, []Target{RemoteTarget(client, a.h.ID()), RemoteTarget(client, b.h.ID())}, nil,
			s, testReq, func(string, Chunk) error { return nil })
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: err %v", s, err)
		}
	}
	eventually(t, 5*time.Second, "remote calls to end", func() bool {
		return a.b.Active() == 0 && b.b.Active() == 0
	})
}

func TestEmitErrorAbortsDispatch(t *testing.T) {
	checkNoLeak(t)
	stop := errors.New("client gone")
	_, err := Dispatch(context.Background(), []Target{named("a", NewSynthetic(SyntheticConfig{}))}, nil,
		Fastest, testReq, func(string, Chunk) error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("err %v", err)
	}
}
