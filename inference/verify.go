package inference

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Verified answers. A verified request runs deterministically (temperature
// 0, a fixed seed) on experts serving the same model digest with the same
// engine and kernel set (ModelInfo.Kernels: the embedded engine's avx2, neon
// and generic kernels differ in the last bits, which can flip a near-tie
// token), which must then produce the same tokens. The client gets an answer
// only once two experts produced it token for token: until then every answer
// is buffered (bounded by the request's MaxTokens and MaxVerifyBytes), so a
// wrong answer never reaches the client, at the cost of streaming. When the
// first two disagree, further experts are asked, one at a time, until two
// agree; every expert whose tokens are not a prefix of the agreed answer is
// outvoted (EventOutvoted), whether it finished, failed or stalled.

var (
	// ErrOutvoted is the error of an EventOutvoted: the expert's answer
	// differed from the one two others agreed on.
	ErrOutvoted = errors.New("answer outvoted by experts serving the same model")
	// ErrNoAgreement: no two experts produced the same answer to a verified
	// request. It comes joined with ErrNoExpert.
	ErrNoAgreement = errors.New("no two experts agreed on the answer")
)

// VerifySeed is the seed a verified request runs with when the client set
// none: at temperature 0 it changes nothing in a real engine, but it pins
// engines that sample anyway.
const VerifySeed int64 = 0

// MaxVerifyBytes bounds the text buffered of each expert of a verified
// request. An expert that sends more (or more tokens than MaxTokens) is cut
// off, and its answer agrees with no honest one.
const MaxVerifyBytes = 4 << 20

// VerifyRequest is req as a verified dispatch runs it: temperature 0, the
// client's seed or VerifySeed, nothing to continue.
func VerifyRequest(req Request) Request {
	zero := 0.0
	req.Temperature = &zero
	if req.Seed == nil {
		s := VerifySeed
		req.Seed = &s
	}
	req.Continue = ""
	return req
}

// Verify runs req (as VerifyRequest makes it) on targets, which must serve
// the same model digest with the same engine and kernel set, best first: two at once, then
// one more each time no two answers can still agree, until two agree token
// for token. Only then is the agreed answer emitted, all at once. Result.
// Expert is the first of the agreeing pair to finish, Experts both of them;
// Agreements maps every expert judged to 1 (agreed) or 0 (outvoted). With
// fewer than two answers alike the error wraps ErrNoAgreement and
// ErrNoExpert, and nothing is emitted. Every call is cancelled or finished,
// and every verdict observed, before Verify returns.
func (c DispatchConfig) Verify(ctx context.Context, targets []Target, req Request, emit func(expert string, c Chunk) error) (Result, error) {
	if len(targets) < 2 {
		return Result{}, fmt.Errorf("%w: verifying needs two experts serving the same model digest, found %d: %w", ErrNoAgreement, len(targets), ErrNoExpert)
	}
	req = VerifyRequest(req)
	d := &dispatch{cfg: c, req: req, emit: emit, start: time.Now(),
		events: make(chan event, 64), errs: map[string]error{}}
	vctx, cancel := context.WithCancel(ctx)
	stop := func() {
		cancel()
		d.wg.Wait()
	}
	defer stop()

	var runners []*runner
	bytes := map[*runner]int{}
	queue := targets
	launch := func() bool {
		if len(queue) == 0 {
			return false
		}
		runners = append(runners, d.launch(vctx, queue[0], req, collecting))
		queue = queue[1:]
		return true
	}
	launch()
	launch()

	var winner, second *runner
	for winner == nil {
		// Ask one more expert while no two can still agree.
		if !canAgree(runners) && !launch() && pendingOf(runners) == 0 {
			return Result{Errors: d.errs}, errors.Join(fmt.Errorf("%w among %d experts", ErrNoAgreement, len(runners)), noExpert(d.errs))
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
			bytes[r] += len(ev.chunk.Text)
			r.chunks = append(r.chunks, *ev.chunk)
			if bytes[r] > MaxVerifyBytes || (req.MaxTokens > 0 && len(r.chunks) > req.MaxTokens) {
				r.cancel(context.Canceled)
				d.fail(r, fmt.Errorf("%s: answer longer than the request allows", r.t.Name))
			}
			continue
		}
		d.fail(r, ev.err)
		if ev.err != nil {
			continue
		}
		r.final = ev.final
		for _, o := range runners {
			if o != r && o.done && o.err == nil && sameTokens(o.chunks, r.chunks) {
				winner, second = o, r
				break
			}
		}
	}

	// Judge every expert against the agreed answer once all have stopped,
	// so no verdict races an expert's own events.
	stop()
	res := d.verdicts(runners, winner, second)
	for _, ch := range winner.chunks {
		if err := d.forward(winner, ch); err != nil {
			out := d.result(winner.t.Name)
			out.Agreements, out.Agreement = res.Agreements, res.Agreement
			return out, err
		}
	}
	d.lastDone = winner.final
	out := d.result(winner.t.Name)
	out.Experts = []string{winner.t.Name, second.t.Name}
	out.Agreements, out.Agreement = res.Agreements, res.Agreement
	return out, nil
}

// verdicts reports to each expert that produced tokens whether they were a
// prefix of the agreed answer.
func (d *dispatch) verdicts(runners []*runner, winner, second *runner) Result {
	res := Result{Agreements: map[string]float64{}}
	for _, r := range runners {
		if r == winner {
			continue
		}
		if r == second {
			res.Agreements[r.t.Name] = 1
			r.t.observe(ExpertEvent{Kind: EventAgreement, Agreement: 1})
			continue
		}
		at, ok := prefixOf(r.chunks, winner.chunks, r.done && r.err == nil)
		if ok {
			continue // cut short, or cancelled before it went wrong
		}
		res.Agreements[r.t.Name] = 0
		err := fmt.Errorf("%w: token %d of its answer differs from the one %s and %s agreed on", ErrOutvoted, at, winner.t.Name, second.t.Name)
		if d.errs[r.t.Name] == nil {
			d.errs[r.t.Name] = err
		}
		r.t.observe(ExpertEvent{Kind: EventOutvoted, Tokens: len(r.chunks), Err: err})
	}
	res.Agreement = meanOf(res.Agreements)
	return res
}

// canAgree reports whether two of runners, neither failed, have produced
// answers that may still turn out equal (one a prefix of the other, and
// equal when both finished).
func canAgree(runners []*runner) bool {
	for i, a := range runners {
		if a.done && a.err != nil {
			continue
		}
		for _, b := range runners[i+1:] {
			if b.done && b.err != nil {
				continue
			}
			if a.done && b.done {
				if sameTokens(a.chunks, b.chunks) {
					return true
				}
				continue
			}
			short, long := a, b
			if len(b.chunks) < len(a.chunks) {
				short, long = b, a
			}
			if short.done && len(long.chunks) > len(short.chunks) {
				continue // the finished one ended where the other went on
			}
			if _, ok := prefixOf(short.chunks, long.chunks, false); ok {
				return true
			}
		}
	}
	return false
}

func pendingOf(runners []*runner) int {
	n := 0
	for _, r := range runners {
		if !r.done {
			n++
		}
	}
	return n
}

// prefixOf reports whether the tokens of a are a prefix of b's (whole, when
// complete), and else the first token where they differ.
func prefixOf(a, b []Chunk, complete bool) (int, bool) {
	for i, c := range a {
		if i >= len(b) || c.Text != b[i].Text {
			return i, false
		}
	}
	if complete && len(a) != len(b) {
		return len(a), false
	}
	return 0, true
}

// sameTokens reports whether two answers hold the same tokens: the same
// text, chunk for chunk (each chunk is one token).
func sameTokens(a, b []Chunk) bool {
	return slices.EqualFunc(a, b, func(x, y Chunk) bool { return x.Text == y.Text })
}
