package inference

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// SyntheticName is the name and model family of the synthetic backend.
const SyntheticName = "synthetic"

// SyntheticConfig configures NewSynthetic.
type SyntheticConfig struct {
	// Models served; empty means just "synthetic".
	Models []string
	// Tokens is the length of every answer (before MaxTokens); 0 means 16.
	Tokens int
	// Rate is tokens per second after the first; 0 is as fast as possible.
	Rate float64
	// TTFT is the delay before the first token.
	TTFT time.Duration
	// Capacity bounds concurrent calls (0: unlimited); a call that finds no
	// slot within QueueWait gets ErrBusy.
	Capacity  int
	QueueWait time.Duration
	// LogprobShift is added to every token's log-probability (use a negative
	// value to make one synthetic expert less confident than another).
	LogprobShift float64
}

// Synthetic is a backend that emits a deterministic answer with fake but
// deterministic log-probabilities. It exists to measure the overlay itself:
// its cost is close to zero, so what a benchmark sees is protocol and dispatch.
type Synthetic struct {
	cfg     SyntheticConfig
	lim     *limiter
	calls   atomic.Int64
	cancels atomic.Int64
	active  atomic.Int64
}

// NewSynthetic returns a synthetic backend.
func NewSynthetic(cfg SyntheticConfig) *Synthetic {
	if len(cfg.Models) == 0 {
		cfg.Models = []string{SyntheticName}
	}
	if cfg.Tokens <= 0 {
		cfg.Tokens = 16
	}
	return &Synthetic{cfg: cfg, lim: newLimiter(cfg.Capacity, cfg.QueueWait)}
}

// Name returns "synthetic".
func (s *Synthetic) Name() string { return SyntheticName }

// Calls returns how many Generate calls were admitted (past the limit).
func (s *Synthetic) Calls() int64 { return s.calls.Load() }

// Cancellations returns how many Generate calls ended because their context
// was cancelled or expired.
func (s *Synthetic) Cancellations() int64 { return s.cancels.Load() }

// Active returns the number of Generate calls in progress.
func (s *Synthetic) Active() int64 { return s.active.Load() }

// Models lists the configured models, family "synthetic".
func (s *Synthetic) Models(ctx context.Context) ([]ModelInfo, error) {
	out := make([]ModelInfo, 0, len(s.cfg.Models))
	for _, m := range s.cfg.Models {
		sum := sha256.Sum256([]byte("synthetic\x00" + m))
		out = append(out, ModelInfo{Name: m, Digest: fmt.Sprintf("sha256:%x", sum), Family: SyntheticName})
	}
	return out, nil
}

var syntheticWords = []string{
	"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
	"india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
	"quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
	"yankee", "zulu", "one", "two", "three", "four", "five", "six",
}

// syntheticSeq is the deterministic answer to one request.
type syntheticSeq struct{ key [32]byte }

func newSyntheticSeq(req Request) syntheticSeq {
	h := sha256.New()
	fmt.Fprintf(h, "%q\x00%q\x00%t\x00", req.Model, req.Prompt, req.Raw)
	for _, m := range req.Messages {
		fmt.Fprintf(h, "%q\x00%q\x00", m.Role, m.Content)
	}
	if req.Seed != nil {
		fmt.Fprintf(h, "seed=%d", *req.Seed)
	}
	var s syntheticSeq
	h.Sum(s.key[:0])
	return s
}

func (s syntheticSeq) draw(i int, salt byte) uint64 {
	var b [41]byte
	copy(b[:], s.key[:])
	binary.BigEndian.PutUint64(b[32:], uint64(i))
	b[40] = salt
	sum := sha256.Sum256(b[:])
	return binary.BigEndian.Uint64(sum[:8])
}

func (s syntheticSeq) word(i int, salt byte) string {
	return syntheticWords[s.draw(i, salt)%uint64(len(syntheticWords))]
}

// token returns token i of the answer: a word, space-separated after the first.
func (s syntheticSeq) token(i int) string {
	if i == 0 {
		return s.word(i, 0)
	}
	return " " + s.word(i, 0)
}

// logprob returns token i's log-probability, in [-2, 0) before shift.
func (s syntheticSeq) logprob(i int, shift float64) float64 {
	return -float64(s.draw(i, 1)%2000+1)/1000 + shift
}

// Generate streams the deterministic answer, resuming after req.Continue.
func (s *Synthetic) Generate(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
	if !slices.Contains(s.cfg.Models, req.Model) {
		return Final{}, fmt.Errorf("synthetic: %w: %q", ErrUnknownModel, req.Model)
	}
	if err := Check(nil, SyntheticName, req); err != nil {
		return Final{}, err // text only: no tools, images, JSON or embeddings
	}
	ctx, cancel := withDeadline(ctx, req)
	defer cancel()
	if err := s.lim.acquire(ctx); err != nil {
		return Final{}, fmt.Errorf("synthetic: %w", err)
	}
	defer s.lim.release()
	s.calls.Add(1)
	s.active.Add(1)
	defer s.active.Add(-1)

	start := time.Now()
	seq := newSyntheticSeq(req)
	total := s.cfg.Tokens
	var f Final
	var mean logprobMean
	f.PromptTokens = len(strings.Fields(req.Prompt))
	for _, m := range req.Messages {
		f.PromptTokens += len(strings.Fields(m.Content))
	}

	// Skip what was already delivered: whole tokens, then the rest of a
	// token the delivered text ends inside of.
	skip := len(req.Continue)
	i := 0
	partial := ""
	for ; i < total && skip > 0; i++ {
		tok := seq.token(i)
		if skip < len(tok) {
			partial = tok[skip:]
			skip = 0
			i++
			break
		}
		skip -= len(tok)
	}
	limit := total
	if req.MaxTokens > 0 && i+req.MaxTokens < limit {
		limit = i + req.MaxTokens
	}

	var said strings.Builder // what this call emitted
	var tick *time.Timer
	if s.cfg.TTFT > 0 {
		tick = time.NewTimer(s.cfg.TTFT)
	}
	var interval time.Duration
	if s.cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / s.cfg.Rate)
	}
	emitOne := func(idx int, text string) error {
		if tick != nil {
			select {
			case <-tick.C:
			case <-ctx.Done():
				tick.Stop()
				s.cancels.Add(1)
				return ctx.Err()
			}
		} else if err := ctx.Err(); err != nil {
			s.cancels.Add(1)
			return err
		}
		c := Chunk{Text: text}
		if req.Logprobs {
			lp := TokenLogprob{Token: text, Logprob: seq.logprob(idx, s.cfg.LogprobShift)}
			for k := 0; k < req.TopLogprobs && k < 5; k++ {
				lp.Top = append(lp.Top, TopLogprob{Token: seq.word(idx, byte(2+k)), Logprob: lp.Logprob - float64(k+1)})
			}
			c.Logprobs = []TokenLogprob{lp}
			mean.add(c.Logprobs)
		}
		if err := emit(c); err != nil {
			return err
		}
		said.WriteString(text)
		if f.CompletionTokens == 0 {
			f.TTFT = time.Since(start)
		}
		f.CompletionTokens++
		if interval > 0 {
			if tick == nil {
				tick = time.NewTimer(interval)
			} else {
				tick.Reset(interval)
			}
		} else {
			tick = nil
		}
		return nil
	}
	// A stop sequence ends the answer after the token that completes it
	// (the API layer cuts the text at it).
	stopped := func() bool {
		for _, st := range req.Stop {
			if st != "" && strings.Contains(said.String(), st) {
				return true
			}
		}
		return false
	}
	stop := false
	if partial != "" {
		if err := emitOne(i-1, partial); err != nil {
			return Final{}, err
		}
		stop = stopped()
	}
	for ; i < limit && !stop; i++ {
		if err := emitOne(i, seq.token(i)); err != nil {
			return Final{}, err
		}
		stop = stopped()
	}
	if tick != nil {
		tick.Stop()
	}
	f.FinishReason = FinishLength
	if limit == total || stop {
		f.FinishReason = FinishStop
	}
	f.Duration = time.Since(start)
	mean.fill(&f)
	return f, nil
}
