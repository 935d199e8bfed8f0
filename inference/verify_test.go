package inference

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/internal/wait"
)

// verdicts records the events each target observed.
type verdicts struct {
	mu     sync.Mutex
	events map[string][]ExpertEvent
}

func (v *verdicts) watch(t Target) Target {
	t.Observe = func(ev ExpertEvent) {
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.events == nil {
			v.events = map[string][]ExpertEvent{}
		}
		v.events[t.Name] = append(v.events[t.Name], ev)
	}
	return t
}

func (v *verdicts) count(name string, k EventKind) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, ev := range v.events[name] {
		if ev.Kind == k {
			n++
		}
	}
	return n
}

// garbage sends the honest first token at once, then nonsense, as fast as it
// can; after sends tokens it fails with failWith when set.
func garbage(name string, tokens int, failWith error) Target {
	return Target{Name: name, Run: func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
		first := req
		first.MaxTokens = 1
		if _, err := NewSynthetic(SyntheticConfig{}).Generate(ctx, first, emit); err != nil {
			return Final{}, err
		}
		for i := 1; i < tokens; i++ {
			if err := emit(Chunk{Text: fmt.Sprintf(" nonsense%d", i)}); err != nil {
				return Final{}, err
			}
		}
		if failWith != nil {
			return Final{}, failWith
		}
		return Final{CompletionTokens: tokens, FinishReason: FinishStop}, nil
	}}
}

func slowSynthetic(name string, ttft time.Duration) Target {
	return named(name, NewSynthetic(SyntheticConfig{Tokens: 12, TTFT: ttft}))
}

var verifiedText = func(t testing.TB) string {
	return fullText(t, SyntheticConfig{Tokens: 12}, VerifyRequest(testReq))
}

// clientSees collects what reached the client, and fails the test if any of
// it came before agreement from an expert named in liars.
func clientSees(t *testing.T, sb *strings.Builder, liars ...string) func(string, Chunk) error {
	return func(expert string, c Chunk) error {
		for _, l := range liars {
			if expert == l {
				t.Errorf("a chunk of %s reached the client: %q", l, c.Text)
			}
		}
		sb.WriteString(c.Text)
		return nil
	}
}

func TestVerifiedAnswerNeedsTwoAgreeing(t *testing.T) {
	wait.NoLeak(t)
	var v verdicts
	var sb strings.Builder
	res, err := DefaultDispatchConfig().Verify(context.Background(),
		[]Target{v.watch(slowSynthetic("a", 0)), v.watch(slowSynthetic("b", 20*time.Millisecond)), v.watch(slowSynthetic("c", 0))},
		testReq, clientSees(t, &sb))
	if err != nil {
		t.Fatal(err)
	}
	if sb.String() != verifiedText(t) || res.Text != sb.String() {
		t.Fatalf("client saw %q, want %q", sb.String(), verifiedText(t))
	}
	if res.Expert != "a" || strings.Join(res.Experts, ",") != "a,b" || res.Agreements["b"] != 1 || res.Agreement != 1 {
		t.Fatalf("result %+v", res)
	}
	if n := v.count("c", EventChosen); n != 0 {
		t.Fatalf("a third expert was asked although two agreed")
	}
	if v.count("b", EventAgreement) != 1 || v.count("a", EventOutvoted)+v.count("b", EventOutvoted) != 0 {
		t.Fatalf("events %v", v.events)
	}
}

func TestVerifyForcesTemperatureZeroAndASeed(t *testing.T) {
	wait.NoLeak(t)
	hot := 1.5
	req := testReq
	req.Temperature = &hot
	req.Continue = "already said"
	check := func(name string) Target {
		return Target{Name: name, Run: func(ctx context.Context, r Request, emit func(Chunk) error) (Final, error) {
			if r.Temperature == nil || *r.Temperature != 0 || r.Seed == nil || *r.Seed != VerifySeed || r.Continue != "" {
				return Final{}, fmt.Errorf("ran with temperature %v seed %v continue %q", r.Temperature, r.Seed, r.Continue)
			}
			return NewSynthetic(SyntheticConfig{}).Generate(ctx, r, emit)
		}}
	}
	if _, err := DefaultDispatchConfig().Verify(context.Background(), []Target{check("a"), check("b")}, req, func(string, Chunk) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if *req.Temperature != 1.5 {
		t.Fatal("the caller's request was changed")
	}
}

// TestThirdExpertDecidesAndTheLiarIsOutvoted: a liar that answers first and
// fast never reaches the client; a third expert decides; the liar alone is
// outvoted, the agreeing pair agrees.
func TestThirdExpertDecidesAndTheLiarIsOutvoted(t *testing.T) {
	wait.NoLeak(t)
	for _, tc := range []struct {
		name string
		liar Target
	}{
		{"finishes", garbage("liar", 12, nil)},
		{"fails after lying", garbage("liar", 5, errors.New("connection reset"))},
		{"ignores max_tokens", garbage("liar", 100, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v verdicts
			var sb strings.Builder
			res, err := DefaultDispatchConfig().Verify(context.Background(),
				[]Target{v.watch(tc.liar), v.watch(slowSynthetic("honest", 10*time.Millisecond)), v.watch(slowSynthetic("referee", 10*time.Millisecond))},
				withMax(testReq, 12), clientSees(t, &sb, "liar"))
			if err != nil {
				t.Fatal(err)
			}
			if want := fullText(t, SyntheticConfig{Tokens: 12}, VerifyRequest(withMax(testReq, 12))); sb.String() != want {
				t.Fatalf("client saw %q, want %q", sb.String(), want)
			}
			if v.count("liar", EventOutvoted) != 1 || !errors.Is(res.Errors["liar"], ErrOutvoted) && tc.name == "finishes" {
				t.Fatalf("liar: events %v, errors %v", v.events["liar"], res.Errors)
			}
			if res.Agreements["liar"] != 0 || len(res.Agreements) != 2 || res.Agreement != 0.5 {
				t.Fatalf("agreements %v (%v)", res.Agreements, res.Agreement)
			}
			if v.count("honest", EventOutvoted)+v.count("referee", EventOutvoted) != 0 {
				t.Fatalf("an honest expert was outvoted: %v", v.events)
			}
		})
	}
}

func withMax(r Request, n int) Request {
	r.MaxTokens = n
	return r
}

func TestNoAgreementReachesNoClient(t *testing.T) {
	wait.NoLeak(t)
	var v verdicts
	emitted := false
	res, err := DefaultDispatchConfig().Verify(context.Background(),
		[]Target{v.watch(garbage("liar", 12, nil)), v.watch(slowSynthetic("honest", 0))},
		testReq, func(string, Chunk) error { emitted = true; return nil })
	if !errors.Is(err, ErrNoAgreement) || !errors.Is(err, ErrNoExpert) || emitted || res.Text != "" {
		t.Fatalf("err %v, emitted %v, text %q", err, emitted, res.Text)
	}
	// Nobody is convicted without a majority.
	if v.count("liar", EventOutvoted)+v.count("honest", EventOutvoted) != 0 {
		t.Fatalf("events %v", v.events)
	}
	if _, err := DefaultDispatchConfig().Verify(context.Background(), []Target{slowSynthetic("alone", 0)}, testReq, nil); !errors.Is(err, ErrNoAgreement) {
		t.Fatalf("one expert: %v", err)
	}
}

// TestFailedExpertIsReplacedNotOutvoted: an expert that fails before any
// token is a failure, not a wrong answer; the next one pairs up.
func TestFailedExpertIsReplacedNotOutvoted(t *testing.T) {
	wait.NoLeak(t)
	var v verdicts
	res, err := DefaultDispatchConfig().Verify(context.Background(),
		[]Target{v.watch(failing("down", ErrBusy)), v.watch(slowSynthetic("a", 0)), v.watch(slowSynthetic("b", 0))},
		testReq, func(string, Chunk) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Text != verifiedText(t) || v.count("down", EventFailed) != 1 || v.count("down", EventOutvoted) != 0 {
		t.Fatalf("text %q, events %v", res.Text, v.events)
	}
}
