package inference

import (
	"context"
	"errors"
	"fmt"
	"github.com/mwpeer/mwpeer/internal/wait"
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

func TestFastFailingExpertDoesNotWin(t *testing.T) {
	wait.NoLeak(t)
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
	wait.NoLeak(t)
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
	wait.NoLeak(t)
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
	wait.NoLeak(t)
	cfgd := DispatchConfig{StallTimeout: 50 * time.Millisecond}
	res, err := cfgd.Dispatch(context.Background(),
		[]Target{stallAfter("staller", NewSynthetic(SyntheticConfig{}), 2)}, nil,
		Fastest, testReq, func(string, Chunk) error { return nil })
	if err == nil || !errors.Is(err, ErrStalled) || res.Text == "" {
		t.Fatalf("err %v, text %q", err, res.Text)
	}
}

func TestBlendReportsAgreement(t *testing.T) {
	wait.NoLeak(t)
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

func TestEmitErrorAbortsDispatch(t *testing.T) {
	wait.NoLeak(t)
	stop := errors.New("client gone")
	_, err := Dispatch(context.Background(), []Target{named("a", NewSynthetic(SyntheticConfig{}))}, nil,
		Fastest, testReq, func(string, Chunk) error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("err %v", err)
	}
}
