package inference

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// recorder collects the events of each target.
type recorder struct {
	mu  sync.Mutex
	evs map[string][]ExpertEvent
}

func (r *recorder) target(name string, run func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error)) Target {
	return Target{Name: name, Run: run, Observe: func(ev ExpertEvent) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.evs == nil {
			r.evs = map[string][]ExpertEvent{}
		}
		r.evs[name] = append(r.evs[name], ev)
	}}
}

func (r *recorder) kinds(name string) []EventKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []EventKind
	for _, ev := range r.evs[name] {
		out = append(out, ev.Kind)
	}
	return out
}

func (r *recorder) last(name string, k EventKind) (ExpertEvent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.evs[name]) - 1; i >= 0; i-- {
		if r.evs[name][i].Kind == k {
			return r.evs[name][i], true
		}
	}
	return ExpertEvent{}, false
}

func words(n int) func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
	return func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
		for range n {
			if err := emit(Chunk{Text: "w "}); err != nil {
				return Final{}, err
			}
		}
		return Final{FinishReason: FinishStop, CompletionTokens: n}, nil
	}
}

func blocks(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
	<-ctx.Done()
	return Final{}, ctx.Err()
}

func equalKinds(a, b []EventKind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDispatchObserverSeesEachExpert(t *testing.T) {
	var rec recorder
	broken := errors.New("boom")
	primary := []Target{
		rec.target("fast", words(3)),
		rec.target("slow", blocks),
		rec.target("broken", func(context.Context, Request, func(Chunk) error) (Final, error) { return Final{}, broken }),
	}
	res, err := Dispatch(context.Background(), primary, nil, Fastest, Request{Model: "m", Prompt: "p"}, func(string, Chunk) error { return nil })
	if err != nil || res.Expert != "fast" {
		t.Fatalf("res %+v err %v", res, err)
	}
	if got, want := rec.kinds("fast"), []EventKind{EventChosen, EventFirstToken, EventDone}; !equalKinds(got, want) {
		t.Fatalf("fast: %v, want %v", got, want)
	}
	if done, _ := rec.last("fast", EventDone); done.Tokens != 3 || done.Final.CompletionTokens != 3 || done.TTFT <= 0 || done.Duration < done.TTFT {
		t.Fatalf("fast done: %+v", done)
	}
	if got, want := rec.kinds("slow"), []EventKind{EventChosen, EventCancelled}; !equalKinds(got, want) {
		t.Fatalf("slow (the loser): %v, want %v", got, want)
	}
	if f, ok := rec.last("broken", EventFailed); !ok || !errors.Is(f.Err, broken) {
		t.Fatalf("broken: %v", rec.kinds("broken"))
	}
}

func TestDispatchObserverSeesStallAndContinuation(t *testing.T) {
	var rec recorder
	stalls := func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
		if err := emit(Chunk{Text: "half "}); err != nil {
			return Final{}, err
		}
		<-ctx.Done()
		return Final{}, context.Cause(ctx)
	}
	cfg := DispatchConfig{StallTimeout: 20 * time.Millisecond}
	res, err := cfg.Dispatch(context.Background(), []Target{rec.target("stalls", stalls)}, []Target{rec.target("spare", words(2))},
		Fastest, Request{Model: "m", Prompt: "p"}, func(string, Chunk) error { return nil })
	if err != nil || res.Failovers != 1 {
		t.Fatalf("res %+v err %v", res, err)
	}
	if s, ok := rec.last("stalls", EventStalled); !ok || !errors.Is(s.Err, ErrStalled) || s.Tokens != 1 {
		t.Fatalf("stalls: %v", rec.kinds("stalls"))
	}
	if c, _ := rec.last("spare", EventChosen); !c.Continued {
		t.Fatal("the spare continues streamed text: Chosen.Continued should be true")
	}
}

func TestDispatchObserverSeesAgreement(t *testing.T) {
	var rec recorder
	same := rec.target("same", words(4))
	other := rec.target("other", func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
		for _, w := range []string{"w ", "x ", "y ", "z "} {
			if err := emit(Chunk{Text: w}); err != nil {
				return Final{}, err
			}
		}
		return Final{FinishReason: FinishStop}, nil
	})
	if _, err := Dispatch(context.Background(), []Target{same, other}, nil, Confidence, Request{Model: "m", Prompt: "p"}, func(string, Chunk) error { return nil }); err != nil {
		t.Fatal(err)
	}
	// Whichever won, the other's agreement is reported: 1 of 4 words shared.
	var got []float64
	for _, n := range []string{"same", "other"} {
		if a, ok := rec.last(n, EventAgreement); ok {
			got = append(got, a.Agreement)
		}
	}
	if len(got) != 1 || got[0] != 0.25 {
		t.Fatalf("agreements %v, want one of 0.25", got)
	}
}
