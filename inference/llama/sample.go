package llama

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"unicode/utf8"
)

// Options control a generation.
type Options struct {
	MaxTokens   int     // tokens to generate; 0 means 128
	Temperature float64 // 0: greedy (argmax)
	TopP        float64 // nucleus sampling; 0 or 1: off
	Seed        int64   // seeds sampling when Temperature > 0
	TopLogprobs int     // alternatives reported per token
	Stop        []string
	// EndTokens end the generation like the end-of-generation tokens: a
	// chat template's turn markers. They are not emitted.
	EndTokens []int
	// JSON, when set, constrains the output to one JSON text (see
	// JSONGrammar); the generation ends when the text is complete.
	JSON *JSONGrammar
}

// Token is one generated token.
type Token struct {
	ID      int
	Text    string // the token's text (a byte token's byte)
	Logprob float64
	Top     []Alternative
}

// Alternative is a likely token at a position and its log-probability.
type Alternative struct {
	ID      int
	Text    string
	Logprob float64
}

// Logprobs returns the log-softmax of logits, as Ollama computes it.
func Logprobs(logits []float32) []float32 {
	mx := logits[0]
	for _, l := range logits[1:] {
		mx = max(mx, l)
	}
	var sum float64
	for _, l := range logits {
		sum += math.Exp(float64(l - mx))
	}
	lse := float32(math.Log(sum))
	out := make([]float32, len(logits))
	for i, l := range logits {
		out[i] = (l - mx) - lse
	}
	return out
}

// Sampler picks tokens from logits.
type Sampler struct {
	temp, topP float64
	rng        *rand.Rand
	idx        []int
	probs      []float64
}

// NewSampler returns a sampler for opts.
func NewSampler(opts Options) *Sampler {
	return &Sampler{temp: opts.Temperature, topP: opts.TopP,
		rng: rand.New(rand.NewPCG(uint64(opts.Seed), 0x6d77706565720001))}
}

// Sample returns the next token.
func (s *Sampler) Sample(logits []float32) int {
	if s.temp <= 0 {
		best := 0
		for i, l := range logits {
			if l > logits[best] {
				best = i
			}
		}
		return best
	}
	n := len(logits)
	if cap(s.idx) < n {
		s.idx = make([]int, n)
		s.probs = make([]float64, n)
	}
	idx, probs := s.idx[:n], s.probs[:n]
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	mx := float64(logits[idx[0]])
	var sum float64
	for i, id := range idx {
		probs[i] = math.Exp((float64(logits[id]) - mx) / s.temp)
		sum += probs[i]
	}
	keep := n
	if s.topP > 0 && s.topP < 1 {
		var cum float64
		for i := range probs {
			cum += probs[i] / sum
			if cum >= s.topP {
				keep = i + 1
				break
			}
		}
		sum = 0
		for _, p := range probs[:keep] {
			sum += p
		}
	}
	r := s.rng.Float64() * sum
	for i, p := range probs[:keep] {
		r -= p
		if r <= 0 {
			return idx[i]
		}
	}
	return idx[keep-1]
}

// Generate tokenizes prompt (raw: no template), runs it and generates up to
// opts.MaxTokens tokens, calling emit for each. It stops early at EOS, at a
// stop string, or when the context is full, and returns the number of prompt
// tokens and the reason it stopped ("stop" or "length").
func (m *Model) Generate(ctx context.Context, prompt string, opts Options, experts Experts, emit func(Token) error) (promptTokens int, reason string, err error) {
	ids := m.Vocab.Encode(prompt)
	return m.GenerateTokens(ctx, ids, opts, experts, emit)
}

// GenerateTokens is Generate from prompt tokens.
func (m *Model) GenerateTokens(ctx context.Context, ids []int, opts Options, experts Experts, emit func(Token) error) (int, string, error) {
	max := opts.MaxTokens
	if max <= 0 {
		max = 128
	}
	if len(ids) == 0 {
		ids = []int{m.Vocab.BOS}
	}
	ctxLen := min(len(ids)+max, m.Config.ContextLength)
	st := m.NewState(ctxLen, experts)
	logits, err := st.Forward(ctx, ids)
	if err != nil {
		return len(ids), "", err
	}
	smp := NewSampler(opts)
	var text []byte
	var js *JSONConstraint
	if opts.JSON != nil {
		js = opts.JSON.Start(m.Vocab)
	}
	budget := min(max, ctxLen-len(ids)) // tokens this generation may write
	for n := 0; ; n++ {
		var id int
		if js != nil {
			id = js.Next(smp, logits, budget-n)
		} else {
			id = smp.Sample(logits)
		}
		if m.Vocab.IsEOG(id) || slices.Contains(opts.EndTokens, id) {
			return len(ids), "stop", nil
		}
		lp := Logprobs(logits)
		tok := Token{ID: id, Text: m.Vocab.Piece(id), Logprob: float64(lp[id])}
		if opts.TopLogprobs > 0 {
			tok.Top = top(lp, opts.TopLogprobs, m.Vocab)
		}
		if js != nil {
			js.Accept(id)
		}
		if err := emit(tok); err != nil {
			return len(ids), "", err
		}
		text = append(text, tok.Text...)
		if stopped(text, opts.Stop) {
			return len(ids), "stop", nil
		}
		if n+1 >= max || st.Pos() >= ctxLen {
			return len(ids), "length", nil
		}
		if logits, err = st.Forward(ctx, []int{id}); err != nil {
			return len(ids), "", err
		}
	}
}

func stopped(text []byte, stops []string) bool {
	for _, s := range stops {
		if s != "" && len(text) >= len(s) && string(text[len(text)-len(s):]) == s {
			return true
		}
	}
	return false
}

// top returns the k most likely tokens.
func top(lp []float32, k int, v *Vocab) []Alternative {
	k = min(k, len(lp))
	best := make([]int, 0, k+1)
	for i := range lp {
		if math.IsInf(float64(lp[i]), -1) {
			continue // ruled out (a JSON grammar masked it): no alternative
		}
		j := sort.Search(len(best), func(j int) bool { return lp[best[j]] < lp[i] })
		if j >= k {
			continue
		}
		best = append(best, 0)
		copy(best[j+1:], best[j:])
		best[j] = i
		best = best[:min(len(best), k)]
	}
	out := make([]Alternative, len(best))
	for i, id := range best {
		out[i] = Alternative{ID: id, Text: v.Piece(id), Logprob: float64(lp[id])}
	}
	return out
}

// validUTF8Prefix returns the length of the longest prefix of b that does not
// end inside a UTF-8 sequence.
func validUTF8Prefix(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
	}
	return len(b)
}
