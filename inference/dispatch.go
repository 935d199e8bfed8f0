package inference

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Target is one expert a request can run on: a remote peer (see
// infer.Target) or a local backend (see LocalTarget).
type Target struct {
	Name string // peer ID, or "local"
	Run  func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error)
	// Observe, when set, hears what this expert did in the dispatch; see
	// ExpertEvent. It is called from dispatch's goroutines, one call at a
	// time per call of Run, and must not block.
	Observe func(ExpertEvent)
	// Pace is what this peer measured of the expert before (zero: nothing);
	// stall detection and hedging judge it against its own pace.
	Pace Pace
}

// Pace is an expert's usual speed as measured by the dispatching peer: its
// time to first token and the gap between two tokens (0: not measured).
type Pace struct {
	TTFT time.Duration
	Gap  time.Duration
}

// LocalTarget is a dispatch Target that runs requests on a local backend.
func LocalTarget(b Backend) Target {
	return Target{Name: "local", Run: b.Generate}
}

// EventKind is what happened to one expert during a dispatch.
type EventKind int

const (
	// EventChosen: the expert was asked (a primary, a spare after failures,
	// or a replacement that continues streamed text).
	EventChosen EventKind = iota
	// EventFirstToken: its first chunk arrived, TTFT after it was asked.
	EventFirstToken
	// EventDone: it finished its answer (Final, Tokens, Duration).
	EventDone
	// EventFailed: it failed by its own doing (Err).
	EventFailed
	// EventStalled: it stopped sending within the stall timeout.
	EventStalled
	// EventCancelled: dispatch cancelled it (a loser of the race, or the
	// client went away). Not its fault.
	EventCancelled
	// EventAgreement: it finished and its text agreed Agreement (0..1, see
	// Similarity) with the answer the client got (blend, confidence).
	EventAgreement
	// EventOutvoted: in a verified dispatch (see Verify), its tokens
	// differed from the answer two other experts agreed on (Err says where).
	// It computed wrongly.
	EventOutvoted
	// EventLate: it missed its expected time to first token by the hedging
	// margin (see DispatchConfig.HedgeFactor) and an expert asked after it
	// streamed first, so it was cancelled without a token (Err says how
	// late). A frozen peer looks like this, and so may an overloaded one.
	EventLate
)

// ExpertEvent is one thing dispatch observed of one expert. Times are
// measured by the dispatching peer, never taken from the expert's report.
type ExpertEvent struct {
	Kind      EventKind
	Continued bool          // EventChosen: it continues text another expert streamed
	TTFT      time.Duration // EventFirstToken, EventDone: first chunk after it was asked
	Tokens    int           // EventDone, EventFailed, EventStalled, EventCancelled: chunks it sent
	Duration  time.Duration // EventDone: from asked to done
	Final     Final         // EventDone: the expert's own summary (as it reports it)
	Err       error         // EventFailed, EventStalled, EventLate
	Agreement float64       // EventAgreement
}

// Strategy says how the answers of several experts become one.
type Strategy string

const (
	// Fastest locks onto the first expert to produce a token and cancels
	// the rest.
	Fastest Strategy = "fastest"
	// Confidence waits for every expert and streams the answer with the best
	// mean token log-probability.
	Confidence Strategy = "confidence"
	// Blend streams the fastest expert and lets the others finish, reporting
	// how far they agree with the streamed answer.
	Blend Strategy = "blend"
)

// ParseStrategy maps a name to a Strategy; "" means Fastest.
func ParseStrategy(s string) (Strategy, error) {
	switch Strategy(s) {
	case "":
		return Fastest, nil
	case Fastest, Confidence, Blend:
		return Strategy(s), nil
	}
	return "", fmt.Errorf("%w: unknown strategy %q", ErrInvalidRequest, s)
}

// Result describes a dispatched answer.
type Result struct {
	// Text is the whole answer as streamed to the client.
	Text string
	// Final is the answer's summary: tokens and mean log-probability over
	// the whole streamed text, TTFT and Duration as the caller saw them,
	// finish reason and prompt tokens of the expert that finished it.
	Final Final
	// Expert is the expert the strategy chose (the first to stream, or the
	// most confident); Experts lists every expert whose text reached the
	// client, in order, so it is longer than one after a failover.
	Expert  string
	Experts []string
	// Failovers counts replacements of a failed or stalled expert after
	// text had been streamed.
	Failovers int
	// Agreements maps each other expert that completed (blend and
	// confidence) to its similarity with Text: 1 - the word-level edit
	// distance divided by the longer answer's word count, over the first
	// SimilarityWords words of each, so 1 is identical and 0 shares
	// nothing. Agreement is their mean, 0 if there are none.
	Agreements map[string]float64
	Agreement  float64
	// Errors holds why experts failed, by name.
	Errors map[string]error
}

// DispatchConfig tunes Dispatch. Zero fields turn their feature off, so
// DispatchConfig{StallTimeout: d} is a fixed stall timeout and nothing else;
// DefaultDispatchConfig turns everything on.
type DispatchConfig struct {
	// StallTimeout: an expert that has produced a token and then produces
	// none for this long is treated as failed (0: no limit). With
	// StallFactor set it is the cap of the adaptive limit.
	StallTimeout time.Duration
	// StallFactor, when set, adapts the stall limit to each expert's pace:
	// no token for StallFactor times its usual gap between tokens is a
	// stall, at least StallFloor and at most StallTimeout. The usual gap is
	// the larger of the measured one (Target.Pace.Gap) and the mean gap of
	// this call so far; before a second token, this call's time to first
	// token stands in for it.
	StallFactor float64
	StallFloor  time.Duration
	// FirstTokenTimeout: an expert that produces no first token for this
	// long is treated as failed (0: no limit but ctx). With TTFTFactor set
	// it is the cap of the adaptive limit.
	FirstTokenTimeout time.Duration
	// TTFTFactor, when set, judges the first token against the expert's
	// measured time to first token (Target.Pace.TTFT): none within
	// TTFTFactor times it, at least TTFTFloor, is a stall. An expert never
	// measured gets FirstTokenTimeout.
	TTFTFactor float64
	TTFTFloor  time.Duration
	// HedgeFactor, when set, hedges requests (fastest and blend): when no
	// expert asked has produced a token by HedgeFactor times its measured
	// time to first token (at least HedgeFloor; HedgeUnknown for an expert
	// never measured), the next spare is asked too, without cancelling the
	// others. Whichever streams first wins and the rest are cancelled; an
	// expert cancelled this way is reported late (EventLate). At most
	// MaxHedges extra experts per answer (0: one).
	HedgeFactor  float64
	HedgeFloor   time.Duration
	HedgeUnknown time.Duration
	MaxHedges    int
	// MaxFailovers bounds mid-stream replacements (0: as many as there are
	// targets).
	MaxFailovers int
}

// DefaultDispatchConfig returns the defaults:
//   - stalled after 10 times the expert's usual gap between tokens, at least
//     1 s, at most 30 s: a token every 20 ms stalls after 1 s, not 30;
//   - no first token within 10 times its measured time to first token, at
//     least 5 s (queues and prompt processing vary), at most 2 min;
//   - hedged after 3 times its measured time to first token, at least
//     500 ms, or 2 s when never measured; up to 2 hedges per answer.
//
// Why these: the floors sit well above what a loaded machine adds to a
// healthy expert (scheduling hiccups of tens to hundreds of milliseconds),
// and the products keep a slow model's long but steady pace from reading as
// a stall; a frozen expert then costs about a second, not half a minute.
func DefaultDispatchConfig() DispatchConfig {
	return DispatchConfig{
		StallTimeout: 30 * time.Second, StallFactor: 10, StallFloor: time.Second,
		FirstTokenTimeout: 2 * time.Minute, TTFTFactor: 10, TTFTFloor: 5 * time.Second,
		HedgeFactor: 3, HedgeFloor: 500 * time.Millisecond, HedgeUnknown: 2 * time.Second, MaxHedges: 2,
	}
}

// firstTokenLimit is how long an expert of pace p may take to its first
// token (0: no limit).
func (c DispatchConfig) firstTokenLimit(p Pace) time.Duration {
	if c.TTFTFactor <= 0 || p.TTFT <= 0 {
		return c.FirstTokenTimeout
	}
	return clampDuration(time.Duration(c.TTFTFactor*float64(p.TTFT)), c.TTFTFloor, c.FirstTokenTimeout)
}

// stallLimit is how long an expert of pace p may go without a token, given
// the mean gap between its tokens in this call so far (0: one token yet)
// and its time to first token in this call (0: no limit).
func (c DispatchConfig) stallLimit(p Pace, gap, ttft time.Duration) time.Duration {
	if c.StallFactor <= 0 {
		return c.StallTimeout
	}
	usual := max(p.Gap, gap)
	if usual <= 0 {
		usual = ttft
	}
	return clampDuration(time.Duration(c.StallFactor*float64(usual)), c.StallFloor, c.StallTimeout)
}

// hedgeDelay is how long after it was asked an expert of pace p may go
// without a first token before a second expert is asked (0: never).
func (c DispatchConfig) hedgeDelay(p Pace) time.Duration {
	if c.HedgeFactor <= 0 {
		return 0
	}
	if p.TTFT <= 0 {
		return max(c.HedgeUnknown, c.HedgeFloor)
	}
	return max(time.Duration(c.HedgeFactor*float64(p.TTFT)), c.HedgeFloor)
}

// clampDuration is d within [lo, hi]; hi 0 is no upper bound.
func clampDuration(d, lo, hi time.Duration) time.Duration {
	d = max(d, lo)
	if hi > 0 {
		d = min(d, hi)
	}
	return d
}

// Dispatch runs req with the default configuration; see DispatchConfig.Dispatch.
func Dispatch(ctx context.Context, primary, spares []Target, strategy Strategy, req Request, emit func(expert string, c Chunk) error) (Result, error) {
	return DefaultDispatchConfig().Dispatch(ctx, primary, spares, strategy, req, emit)
}

// Dispatch runs req on the primary targets in parallel and streams one
// answer to emit, combined according to strategy. If the streaming expert
// fails or stalls after text was emitted, the next spare (then a remaining
// primary) continues from that text (Request.Continue), so emit sees one
// uninterrupted answer. If all primaries fail before any token, spares are
// tried in turn. Every expert's call is cancelled or finished before Dispatch
// returns.
func (c DispatchConfig) Dispatch(ctx context.Context, primary, spares []Target, strategy Strategy, req Request, emit func(expert string, c Chunk) error) (Result, error) {
	if len(primary) == 0 {
		if len(spares) == 0 {
			return Result{}, ErrNoExpert
		}
		primary, spares = spares[:1], spares[1:]
	}
	if strategy == "" {
		strategy = Fastest
	}
	if strategy == Confidence {
		req.Logprobs = true
	}
	d := &dispatch{cfg: c, req: req, emit: emit, start: time.Now(),
		events: make(chan event, 64), errs: map[string]error{}}
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		d.wg.Wait()
	}()
	switch strategy {
	case Fastest, Blend:
		return d.stream(ctx, primary, spares, strategy == Blend)
	case Confidence:
		return d.confidence(ctx, primary, spares)
	}
	return Result{}, fmt.Errorf("%w: unknown strategy %q", ErrInvalidRequest, strategy)
}

func (t Target) observe(ev ExpertEvent) {
	if t.Observe != nil {
		t.Observe(ev)
	}
}

type event struct {
	r     *runner
	chunk *Chunk
	final Final
	err   error
}

// runner is one call to one target.
type runner struct {
	t      Target
	cancel context.CancelCauseFunc
	role   int
	text   strings.Builder
	chunks []Chunk
	final  Final
	done   bool
	err    error
	// hedging (stream only)
	hedgeAt time.Time // when it is late without a first token (zero: never)
	late    bool      // it was, and another expert was asked beside it
}

const (
	racing = iota
	streaming
	collecting
	dropped
)

// errOutrun is the cause a late racer is cancelled with when an expert
// asked after it streamed first.
var errOutrun = errors.New("outrun by a hedged expert")

type dispatch struct {
	cfg    DispatchConfig
	req    Request
	emit   func(string, Chunk) error
	start  time.Time
	events chan event
	wg     sync.WaitGroup
	errs   map[string]error
	spares atomic.Int64 // targets left to take over from a stalled expert

	// what has reached the client
	text     strings.Builder
	tokens   int
	mean     logprobMean
	ttft     time.Duration
	experts  []string
	lastDone Final
}

// launch starts t; its chunks and its end arrive on d.events. A watchdog
// cancels the call with ErrStalled when its first token, or its next one,
// is overdue (see DispatchConfig.firstTokenLimit and stallLimit).
func (d *dispatch) launch(ctx context.Context, t Target, req Request, role int) *runner {
	rctx, cancel := context.WithCancelCause(ctx)
	r := &runner{t: t, cancel: cancel, role: role}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer cancel(nil)
		asked := time.Now()
		var ttft time.Duration
		var last time.Time
		var gaps time.Duration // sum of the gaps between tokens
		tokens := 0
		t.observe(ExpertEvent{Kind: EventChosen, Continued: req.Continue != d.req.Continue})
		// The watchdog: armed anew at each token (only this goroutine arms
		// it; Run calls emit in order). A timer that fires after a token
		// came meanwhile does nothing (seen counts the tokens it was armed
		// at). When no spare could take over, a stall at the adaptive limit
		// waits on to the cap instead: failing the answer would not help.
		var seen atomic.Int64
		var watchdog *time.Timer
		var arm func(limit, capped time.Duration)
		arm = func(limit, capped time.Duration) {
			at := seen.Load()
			watchdog = time.AfterFunc(limit, func() {
				if seen.Load() != at {
					return
				}
				if d.spares.Load() == 0 {
					if capped <= 0 {
						return // no cap: wait as long as the caller does
					}
					if rest := capped - limit; rest > 0 {
						time.AfterFunc(rest, func() {
							if seen.Load() == at {
								cancel(ErrStalled)
							}
						})
						return
					}
				}
				cancel(ErrStalled)
			})
		}
		if limit := d.cfg.firstTokenLimit(t.Pace); limit > 0 {
			arm(limit, d.cfg.FirstTokenTimeout)
		}
		defer func() {
			seen.Add(1) // disarms a pending extension
			if watchdog != nil {
				watchdog.Stop()
			}
		}()
		f, err := t.Run(rctx, req, func(c Chunk) error {
			if rctx.Err() != nil {
				return context.Cause(rctx)
			}
			now := time.Now()
			if tokens == 0 {
				ttft = now.Sub(asked)
				t.observe(ExpertEvent{Kind: EventFirstToken, TTFT: ttft})
			} else {
				gaps += now.Sub(last)
			}
			last = now
			tokens++
			seen.Add(1)
			if watchdog != nil {
				watchdog.Stop()
			}
			var gap time.Duration
			if tokens > 1 {
				gap = gaps / time.Duration(tokens-1)
			}
			if limit := d.cfg.stallLimit(t.Pace, gap, ttft); limit > 0 {
				arm(limit, d.cfg.StallTimeout)
			}
			select {
			case d.events <- event{r: r, chunk: &c}:
				return nil
			case <-rctx.Done():
				return context.Cause(rctx)
			}
		})
		if err != nil && errors.Is(context.Cause(rctx), ErrStalled) {
			err = fmt.Errorf("%s: %w", t.Name, ErrStalled)
		}
		switch {
		case err == nil:
			t.observe(ExpertEvent{Kind: EventDone, TTFT: ttft, Tokens: tokens, Duration: time.Since(asked), Final: f})
		case errors.Is(err, ErrStalled):
			t.observe(ExpertEvent{Kind: EventStalled, Tokens: tokens, Err: err})
		case tokens == 0 && errors.Is(context.Cause(rctx), errOutrun):
			t.observe(ExpertEvent{Kind: EventLate, Err: fmt.Errorf("%s: no first token %s after it was asked: %w",
				t.Name, time.Since(asked).Round(time.Millisecond), errOutrun)})
		case rctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Cause(rctx))):
			t.observe(ExpertEvent{Kind: EventCancelled, Tokens: tokens})
		default:
			t.observe(ExpertEvent{Kind: EventFailed, Tokens: tokens, Err: err})
		}
		select {
		case d.events <- event{r: r, final: f, err: err}:
		case <-rctx.Done():
			if err == nil {
				err = context.Cause(rctx)
			}
			// Nobody waits for a cancelled runner unless it stalled;
			// the stall must still be reported.
			if errors.Is(err, ErrStalled) {
				select {
				case d.events <- event{r: r, err: err}:
				case <-ctx.Done():
				}
			}
		}
	}()
	return r
}

func (d *dispatch) fail(r *runner, err error) {
	r.done, r.err = true, err
	if err != nil {
		d.errs[r.t.Name] = err
	}
}

func (d *dispatch) forward(r *runner, c Chunk) error {
	if d.tokens == 0 {
		d.ttft = time.Since(d.start)
	}
	if len(d.experts) == 0 || d.experts[len(d.experts)-1] != r.t.Name {
		d.experts = append(d.experts, r.t.Name)
	}
	d.text.WriteString(c.Text)
	d.tokens++
	d.mean.add(c.Logprobs)
	return d.emit(r.t.Name, c)
}

// continuation is the request a replacement expert runs.
func (d *dispatch) continuation() (Request, bool) {
	req := d.req
	req.Continue = d.req.Continue + d.text.String()
	if d.req.MaxTokens > 0 {
		req.MaxTokens = d.req.MaxTokens - d.tokens
		if req.MaxTokens <= 0 {
			return req, false
		}
	}
	return req, true
}

func (d *dispatch) result(expert string) Result {
	f := d.lastDone
	f.CompletionTokens = d.tokens
	f.TTFT = d.ttft
	f.Duration = time.Since(d.start)
	f.MeanLogprob, f.HasLogprob = 0, false
	d.mean.fill(&f)
	res := Result{Text: d.text.String(), Final: f, Expert: expert, Experts: d.experts}
	if len(d.errs) > 0 {
		res.Errors = d.errs
	}
	return res
}

func noExpert(errs map[string]error) error {
	all := []error{ErrNoExpert}
	for name, err := range errs {
		all = append(all, fmt.Errorf("%s: %w", name, err))
	}
	return errors.Join(all...)
}

// stream implements fastest and blend.
//
// Experts race until one produces a token; it streams to the client. Those
// still racing are cancelled (fastest) or left to finish for comparison
// (blend). If no racer has produced a token when every one of them is late
// (see DispatchConfig.hedgeDelay), the next spare joins the race (a hedge).
// If the streamer fails or stalls, the next spare races to continue its
// text (Request.Continue), hedged the same way, so the client sees one
// uninterrupted answer.
func (d *dispatch) stream(ctx context.Context, primary, spares []Target, blend bool) (Result, error) {
	var runners []*runner
	queue := append([]Target(nil), spares...)
	var streamer *runner
	var chosen string
	failovers, hedges := 0, 0
	maxHedges := max(d.cfg.MaxHedges, 1)
	finished := false
	var empty *runner   // a racer that succeeded without a token
	var broken *runner  // the last streamer that failed, while no replacement streams
	var brokenErr error // why

	racers := func() int {
		n := 0
		for _, r := range runners {
			if r.role == racing && !r.done {
				n++
			}
		}
		return n
	}
	pending := func() int { // runners whose end we still wait for
		n := 0
		for _, r := range runners {
			if !r.done && r.role != dropped {
				n++
			}
		}
		return n
	}
	next := func() (Target, bool) {
		if len(queue) == 0 {
			return Target{}, false
		}
		t := queue[0]
		queue = queue[1:]
		return t, true
	}
	// race asks t: from the start, or, once text reached the client, to
	// continue it.
	race := func(t Target) {
		req := d.req
		if d.tokens > 0 {
			req, _ = d.continuation()
		}
		r := d.launch(ctx, t, req, racing)
		if delay := d.cfg.hedgeDelay(t.Pace); delay > 0 {
			r.hedgeAt = time.Now().Add(delay)
		}
		runners = append(runners, r)
	}
	// hedgeDue is when every racer is late and no token arrived (zero: no
	// hedge to make).
	hedgeDue := func() time.Time {
		if streamer != nil || hedges >= maxHedges || len(queue) == 0 {
			return time.Time{}
		}
		var due time.Time
		for _, r := range runners {
			if r.role != racing || r.done {
				continue
			}
			if r.hedgeAt.IsZero() {
				return time.Time{}
			}
			if r.hedgeAt.After(due) {
				due = r.hedgeAt
			}
		}
		return due
	}
	stuck := func() (Result, error) {
		res := d.result(chosen)
		res.Failovers = failovers
		return res, fmt.Errorf("expert %s failed after %d tokens and no expert is left: %w", broken.t.Name, d.tokens, brokenErr)
	}
	for _, t := range primary {
		race(t)
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()

	for {
		d.spares.Store(int64(len(queue)))
		if finished && pending() == 0 {
			break
		}
		if streamer == nil && racers() == 0 {
			if empty != nil {
				// An expert answered, with nothing: that is an answer (or
				// the end of one, for a replacement).
				d.lastDone, chosen = empty.final, empty.t.Name
				if broken != nil {
					finished = true
					continue
				}
				break
			}
			// Every expert so far failed before its first token.
			t, ok := next()
			if !ok {
				if broken != nil {
					return stuck()
				}
				return Result{Errors: d.errs}, noExpert(d.errs)
			}
			race(t)
			continue
		}
		var hedge <-chan time.Time
		if due := hedgeDue(); !due.IsZero() {
			wait := time.Until(due)
			if wait <= 0 {
				for _, r := range runners {
					if r.role == racing && !r.done {
						r.late = true
					}
				}
				t, _ := next()
				hedges++
				race(t)
				continue
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			hedge = timer.C
		}
		var ev event
		select {
		case ev = <-d.events:
		case <-hedge:
			continue // the loop makes the hedge
		case <-ctx.Done():
			res := d.result(chosen)
			res.Failovers = failovers
			return res, ctx.Err()
		}
		if timer != nil && !timer.Stop() {
			select { // drained for the next Reset
			case <-timer.C:
			default:
			}
		}
		r := ev.r
		if r.role == dropped || r.done {
			continue
		}
		if ev.chunk != nil {
			switch r.role {
			case racing:
				r.role = streaming
				streamer, chosen, broken, empty = r, r.t.Name, nil, nil
				for _, o := range runners {
					if o.role != racing || o.done {
						continue
					}
					switch {
					case o.late:
						o.role = dropped
						o.cancel(errOutrun)
					case blend && d.tokens == 0:
						o.role = collecting
					default:
						o.role = dropped
						o.cancel(context.Canceled)
						queue = append(queue, o.t) // healthy: a last-resort spare
					}
				}
				fallthrough
			case streaming:
				if err := d.forward(r, *ev.chunk); err != nil {
					res := d.result(chosen)
					res.Failovers = failovers
					return res, err
				}
			case collecting:
				keepPrefix(&r.text, ev.chunk.Text)
			}
			continue
		}
		// The runner ended.
		d.fail(r, ev.err)
		if r.role == collecting || r.role == racing {
			if ev.err == nil {
				r.final = ev.final
				if r.role == racing && empty == nil {
					empty = r
				}
			}
			continue
		}
		// The streamer ended.
		if ev.err == nil {
			d.lastDone = ev.final
			finished = true
			continue
		}
		// Fail over: the next target races to continue the streamed text.
		// A replacement that fails before its first token is replaced in
		// turn.
		r.role = dropped
		streamer, broken, brokenErr = nil, r, ev.err
		if _, more := d.continuation(); !more {
			d.lastDone.FinishReason = FinishLength
			finished = true
			continue
		}
		if d.cfg.MaxFailovers > 0 && failovers >= d.cfg.MaxFailovers {
			res := d.result(chosen)
			res.Failovers = failovers
			return res, fmt.Errorf("expert %s failed after %d tokens, failover limit reached: %w", r.t.Name, d.tokens, ev.err)
		}
		t, ok := next()
		if !ok {
			return stuck()
		}
		failovers++
		hedges = 0 // the replacement may be hedged in turn
		race(t)
	}

	res := d.result(chosen)
	res.Failovers = failovers
	if blend {
		res.Agreements = map[string]float64{}
		for _, r := range runners {
			if r.role == collecting && r.done && r.err == nil {
				a := Similarity(res.Text, r.text.String())
				res.Agreements[r.t.Name] = a
				r.t.observe(ExpertEvent{Kind: EventAgreement, Agreement: a})
			}
		}
		res.Agreement = meanOf(res.Agreements)
	}
	return res, nil
}

// confidence runs every primary to the end and streams the most confident
// answer; if all fail, spares are tried one at a time.
func (d *dispatch) confidence(ctx context.Context, primary, spares []Target) (Result, error) {
	var runners []*runner
	for _, t := range primary {
		runners = append(runners, d.launch(ctx, t, d.req, collecting))
	}
	queue := append([]Target(nil), spares...)
	pending := len(runners)
	var ok []*runner
	for pending > 0 || len(ok) == 0 {
		d.spares.Store(int64(len(queue)))
		if pending == 0 {
			if len(queue) == 0 {
				return Result{Errors: d.errs}, noExpert(d.errs)
			}
			runners = append(runners, d.launch(ctx, queue[0], d.req, collecting))
			queue = queue[1:]
			pending++
		}
		var ev event
		select {
		case ev = <-d.events:
		case <-ctx.Done():
			return Result{Errors: d.errs}, ctx.Err()
		}
		r := ev.r
		if r.done {
			continue
		}
		if ev.chunk != nil {
			r.chunks = append(r.chunks, *ev.chunk)
			keepPrefix(&r.text, ev.chunk.Text)
			continue
		}
		pending--
		d.fail(r, ev.err)
		if ev.err == nil {
			r.final = ev.final
			ok = append(ok, r)
		}
	}
	score := func(r *runner) (float64, bool) {
		if r.final.HasLogprob {
			return r.final.MeanLogprob, true
		}
		var m logprobMean
		for _, c := range r.chunks {
			m.add(c.Logprobs)
		}
		var f Final
		m.fill(&f)
		return f.MeanLogprob, f.HasLogprob
	}
	best := ok[0] // first to finish wins ties and logprob-less answers
	bestScore, bestHas := score(best)
	for _, r := range ok[1:] {
		if s, has := score(r); has && (!bestHas || s > bestScore) {
			best, bestScore, bestHas = r, s, has
		}
	}
	for _, c := range best.chunks {
		if err := d.forward(best, c); err != nil {
			return d.result(best.t.Name), err
		}
	}
	d.lastDone = best.final
	res := d.result(best.t.Name)
	res.Agreements = map[string]float64{}
	for _, r := range ok {
		if r != best {
			a := Similarity(res.Text, r.text.String())
			res.Agreements[r.t.Name] = a
			r.t.observe(ExpertEvent{Kind: EventAgreement, Agreement: a})
		}
	}
	res.Agreement = meanOf(res.Agreements)
	return res, nil
}

func meanOf(m map[string]float64) float64 {
	if len(m) == 0 {
		return 0
	}
	var s float64
	for _, v := range m {
		s += v
	}
	return s / float64(len(m))
}

// Bounds of the texts Similarity compares: the first SimilarityBytes bytes
// of each, and of those the first SimilarityWords words. The edit distance
// costs their product, so an expert's answer of any length costs at most
// 512×512 steps and 16 KiB kept per collected expert: a few hundred words
// are enough to tell answers that agree from answers that do not.
const (
	SimilarityWords = 512
	SimilarityBytes = 16 << 10
)

// Similarity is 1 minus the word-level Levenshtein distance between the
// bounded prefixes of a and b (see SimilarityWords) divided by the longer
// prefix's word count: 1 for identical texts, 0 for texts with nothing in
// common. Two empty texts are identical.
func Similarity(a, b string) float64 {
	x, y := prefixWords(a), prefixWords(b)
	n := max(len(x), len(y))
	if n == 0 {
		return 1
	}
	prev := make([]int, len(y)+1)
	cur := make([]int, len(y)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(x); i++ {
		cur[0] = i
		for j := 1; j <= len(y); j++ {
			cost := 1
			if x[i-1] == y[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return 1 - float64(prev[len(y)])/float64(n)
}

// prefixWords returns the first SimilarityWords words of the first
// SimilarityBytes bytes of s.
func prefixWords(s string) []string {
	if len(s) > SimilarityBytes {
		s = s[:SimilarityBytes]
	}
	w := strings.Fields(s)
	return w[:min(len(w), SimilarityWords)]
}

// keepPrefix appends text to b while b holds fewer than SimilarityBytes
// bytes: what an expert collected only for Similarity needs no more.
func keepPrefix(b *strings.Builder, text string) {
	if left := SimilarityBytes - b.Len(); left > 0 {
		b.WriteString(text[:min(len(text), left)])
	}
}
