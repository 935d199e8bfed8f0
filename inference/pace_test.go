package inference

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/internal/wait"
)

// paced is cfg with stall detection and hedging adapted to each expert's
// pace, and caps far above what any assertion here allows, so a test that
// passes shows the pace was used, not the cap.
func paced() DispatchConfig {
	return DispatchConfig{
		StallTimeout: time.Minute, StallFactor: 10, StallFloor: 200 * time.Millisecond,
		FirstTokenTimeout: time.Minute, TTFTFactor: 10, TTFTFloor: 300 * time.Millisecond,
		HedgeFactor: 3, HedgeFloor: 100 * time.Millisecond, HedgeUnknown: 100 * time.Millisecond, MaxHedges: 2,
	}
}

func TestLimitsFollowTheExpertsPace(t *testing.T) {
	c := DefaultDispatchConfig()
	cases := []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{"stall: fast expert gets the floor", c.stallLimit(Pace{Gap: 10 * time.Millisecond}, 0, 0), time.Second},
		{"stall: 10 times a slow expert's gap", c.stallLimit(Pace{Gap: 400 * time.Millisecond}, 0, 0), 4 * time.Second},
		{"stall: this call's gaps when slower than measured", c.stallLimit(Pace{Gap: 10 * time.Millisecond}, 300*time.Millisecond, 0), 3 * time.Second},
		{"stall: never more than the cap", c.stallLimit(Pace{Gap: time.Minute}, 0, 0), 30 * time.Second},
		{"stall: unmeasured, this call's TTFT stands in", c.stallLimit(Pace{}, 0, 200*time.Millisecond), 2 * time.Second},
		{"first token: 10 times its TTFT", c.firstTokenLimit(Pace{TTFT: 800 * time.Millisecond}), 8 * time.Second},
		{"first token: the floor", c.firstTokenLimit(Pace{TTFT: 10 * time.Millisecond}), 5 * time.Second},
		{"first token: unmeasured waits the cap", c.firstTokenLimit(Pace{}), 2 * time.Minute},
		{"hedge: 3 times its TTFT", c.hedgeDelay(Pace{TTFT: time.Second}), 3 * time.Second},
		{"hedge: the floor", c.hedgeDelay(Pace{TTFT: time.Millisecond}), 500 * time.Millisecond},
		{"hedge: unmeasured", c.hedgeDelay(Pace{}), 2 * time.Second},
		{"fixed timeout without a factor", DispatchConfig{StallTimeout: 7 * time.Second}.stallLimit(Pace{Gap: time.Millisecond}, 0, 0), 7 * time.Second},
		{"no hedging without a factor", DispatchConfig{}.hedgeDelay(Pace{TTFT: time.Second}), 0},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

// TestFastExpertStallsAfterItsPaceNotTheCap: an expert measured at a token
// every 10 ms that freezes mid-answer is replaced after the stall floor,
// not the minute-long cap, and the client sees the whole text once.
func TestFastExpertStallsAfterItsPaceNotTheCap(t *testing.T) {
	wait.NoLeak(t)
	cfg := SyntheticConfig{Tokens: 12}
	var rec recorder
	staller := stallAfter("staller", NewSynthetic(cfg), 4)
	staller = rec.target("staller", staller.Run)
	staller.Pace = Pace{TTFT: 5 * time.Millisecond, Gap: 10 * time.Millisecond}
	var sb strings.Builder
	start := time.Now()
	res, err := paced().Dispatch(context.Background(), []Target{staller}, []Target{named("spare", NewSynthetic(cfg))},
		Fastest, testReq, func(_ string, c Chunk) error { sb.WriteString(c.Text); return nil })
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if want := fullText(t, cfg, testReq); sb.String() != want {
		t.Fatalf("client saw %q, want %q", sb.String(), want)
	}
	if res.Failovers != 1 || !errors.Is(res.Errors["staller"], ErrStalled) {
		t.Fatalf("failovers %d, errors %v", res.Failovers, res.Errors)
	}
	if took > 20*time.Second { // the cap is a minute; the floor 200 ms
		t.Fatalf("stall noticed after %v", took)
	}
	if _, ok := rec.last("staller", EventStalled); !ok {
		t.Fatalf("staller's events %v", rec.kinds("staller"))
	}
	t.Logf("a frozen expert cost %v", took)
}

// TestFrozenExpertIsHedged: a primary that sends nothing is not waited for:
// once it is late by the hedging margin a spare is asked beside it, the
// spare's answer wins, and the frozen one is cancelled and reported late.
func TestFrozenExpertIsHedged(t *testing.T) {
	wait.NoLeak(t)
	cfg := SyntheticConfig{Tokens: 8}
	var rec recorder
	frozen := rec.target("frozen", blocks)
	frozen.Pace = Pace{TTFT: 10 * time.Millisecond, Gap: 10 * time.Millisecond}
	spare := rec.target("spare", NewSynthetic(cfg).Generate)
	start := time.Now()
	res, err := paced().Dispatch(context.Background(), []Target{frozen}, []Target{spare}, Fastest, testReq,
		func(string, Chunk) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if res.Expert != "spare" || res.Text != fullText(t, cfg, testReq) || res.Failovers != 0 {
		t.Fatalf("result %+v", res)
	}
	if took > 20*time.Second { // the first-token limits are a minute
		t.Fatalf("answer took %v", took)
	}
	wait.For(t, 5*time.Second, "the frozen expert reported late", func() error {
		if ev, ok := rec.last("frozen", EventLate); !ok || !errors.Is(ev.Err, errOutrun) {
			return errors.New("not yet")
		}
		return nil
	})
	t.Logf("a frozen primary cost %v", took)
}

// TestOnTimeExpertIsNotHedged: an expert that answers within its expected
// time to first token is the only one asked.
func TestOnTimeExpertIsNotHedged(t *testing.T) {
	wait.NoLeak(t)
	var rec recorder
	spareAsked := false
	fast := rec.target("fast", NewSynthetic(SyntheticConfig{Tokens: 4}).Generate)
	fast.Pace = Pace{TTFT: time.Second} // hedged only after 3 s
	spare := Target{Name: "spare", Run: func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
		spareAsked = true
		return Final{}, errors.New("not wanted")
	}}
	res, err := paced().Dispatch(context.Background(), []Target{fast}, []Target{spare}, Fastest, testReq,
		func(string, Chunk) error { return nil })
	if err != nil || res.Expert != "fast" || spareAsked {
		t.Fatalf("expert %s err %v spare asked %v", res.Expert, err, spareAsked)
	}
}

// TestFrozenReplacementIsHedgedToo: after a failover, a replacement that
// sends nothing is hedged like a first expert, and the text stays whole.
func TestFrozenReplacementIsHedgedToo(t *testing.T) {
	wait.NoLeak(t)
	cfg := SyntheticConfig{Tokens: 12}
	staller := stallAfter("staller", NewSynthetic(cfg), 5)
	staller.Pace = Pace{TTFT: 5 * time.Millisecond, Gap: 5 * time.Millisecond}
	frozen := Target{Name: "frozen", Run: blocks, Pace: Pace{TTFT: 5 * time.Millisecond}}
	var sb strings.Builder
	res, err := paced().Dispatch(context.Background(), []Target{staller},
		[]Target{frozen, named("good", NewSynthetic(cfg))}, Fastest, testReq,
		func(_ string, c Chunk) error { sb.WriteString(c.Text); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if want := fullText(t, cfg, testReq); sb.String() != want || res.Text != want {
		t.Fatalf("client saw %q, want %q", sb.String(), want)
	}
	if len(res.Experts) != 2 || res.Experts[0] != "staller" || res.Experts[1] != "good" {
		t.Fatalf("experts %v", res.Experts)
	}
}

// TestFirstTokenStallFollowsMeasuredTTFT: an expert measured at 5 ms to its
// first token that sends nothing is stalled after the floor, not the cap,
// and the spare answers.
func TestFirstTokenStallFollowsMeasuredTTFT(t *testing.T) {
	wait.NoLeak(t)
	c := paced()
	c.HedgeFactor = 0 // the stall alone decides
	frozen := Target{Name: "frozen", Run: blocks, Pace: Pace{TTFT: 5 * time.Millisecond}}
	start := time.Now()
	res, err := c.Dispatch(context.Background(), []Target{frozen}, []Target{named("spare", NewSynthetic(SyntheticConfig{Tokens: 3}))},
		Fastest, testReq, func(string, Chunk) error { return nil })
	if err != nil || res.Expert != "spare" || !errors.Is(res.Errors["frozen"], ErrStalled) || time.Since(start) > 20*time.Second {
		t.Fatalf("expert %s, errors %v, err %v after %v", res.Expert, res.Errors, err, time.Since(start))
	}
}

// TestLoneExpertIsNotCutShort: with no spare to take over, an expert that
// pauses past its adaptive stall limit (but not the cap) is waited for:
// cutting it off would only fail the answer.
func TestLoneExpertIsNotCutShort(t *testing.T) {
	wait.NoLeak(t)
	cfg := SyntheticConfig{Tokens: 6}
	b := NewSynthetic(cfg)
	pausing := Target{Name: "pausing", Pace: Pace{TTFT: time.Millisecond, Gap: time.Millisecond}, Run: func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
		n := 0
		return b.Generate(ctx, req, func(c Chunk) error {
			if n++; n == 3 {
				select { // 3 times the 200 ms stall floor, a tenth of a minute's cap
				case <-time.After(600 * time.Millisecond):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return emit(c)
		})
	}}
	res, err := paced().Dispatch(context.Background(), []Target{pausing}, nil, Fastest, testReq, func(string, Chunk) error { return nil })
	if err != nil || res.Text != fullText(t, cfg, testReq) {
		t.Fatalf("text %q, err %v", res.Text, err)
	}
}
