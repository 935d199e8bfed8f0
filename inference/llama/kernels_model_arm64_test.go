//go:build !purego

package llama

import (
	"math"
	"testing"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// The bounds on the log-probabilities of a generation with the NEON kernels
// against one with the pure-Go kernels, on the built-in tiny models,
// relative: |Δ| ≤ r·max(1, |lp|) over every token's log-probability at a
// step (they reach -200 there).
//
// Every product sums its floats in another order (about 2⁻²⁴ relative),
// which leaves a step's log-probabilities within about 1e-6, or 2e-3 where
// an attention accumulator's value crosses a binary16 rounding boundary
// (2⁻¹¹ ≈ 5e-4 relative a flip): neonCloseBound, met by most steps. At a few
// steps a value crosses a rounding boundary of the int8 activations (one
// step of 1/127 of its block's largest value), or, with the ARM build's
// quantization, lands on an exact tie (rounded to even there, away from
// zero in the reference): neonStepBound, met by every step. Measured under
// qemu: at most 2 of 24 steps past neonCloseBound, the worst 0.13.
//
// A wrong kernel moves every step's log-probabilities by units, and changes
// the tokens.
const (
	neonCloseBound = 5e-3
	neonCloseSteps = 20 // of 24
	neonStepBound  = 0.25
)

// TestNEONGenerationMatchesGeneric: on the built-in tiny models (MoE and
// dense; F32 and F16 weights, and their weights requantized to Q8_0 and
// Q4_0) a greedy generation of 24 tokens with the NEON kernels writes the
// same tokens as with the pure-Go kernels, with the activations quantized
// as the reference does and as the ARM build does, and the log-probabilities
// of every step are within the bounds above.
func TestNEONGenerationMatchesGeneric(t *testing.T) {
	needNEON(t)
	defer func(v bool) { useSIMD = v }(useSIMD)
	defer func(q func(x []float32, q []int8, d []float32)) { quantizeQ8_0ARM = q }(quantizeQ8_0ARM)
	f16 := randmodel.Tiny()
	f16.Name, f16.Type = "mwpeer-tiny-moe-f16", randmodel.F16
	for _, c := range []randmodel.Config{randmodel.Tiny(), randmodel.TinyDense(), f16} {
		for _, typ := range []uint32{typeF32, typeQ8_0, typeQ4_0} {
			if c.Type == randmodel.F16 && typ != typeF32 {
				continue
			}
			name := c.Name
			if typ != typeF32 {
				name += "-" + typeName(typ)
			}
			t.Run(name, func(t *testing.T) {
				m := load(t, c)
				if typ != typeF32 {
					requantize(t, m, typ)
				}
				prompt := m.Vocab.Encode("The quick brown fox jumps over the lazy dog")
				useSIMD = false
				wantToks, wantLps := greedy(t, m, prompt, 24)
				for _, arm := range []bool{false, true} {
					useSIMD, quantizeQ8_0ARM = true, quantizeQ8_0
					what := "reference activations"
					if arm {
						quantizeQ8_0ARM, what = quantizeQ8_0NEON, "ARM activations"
					}
					toks, lps := greedy(t, m, prompt, 24)
					worst, close := 0.0, 0
					for i := range toks {
						if toks[i] != wantToks[i] {
							t.Fatalf("%s: token %d: neon %d, generic %d (neon %v, generic %v)", what, i, toks[i], wantToks[i], toks, wantToks)
						}
						step := 0.0
						for j, want := range wantLps[i] {
							step = max(step, math.Abs(float64(lps[i][j]-want))/math.Max(1, math.Abs(float64(want))))
						}
						worst = max(worst, step)
						if step <= neonCloseBound {
							close++
						}
					}
					if worst > neonStepBound || close < neonCloseSteps {
						t.Fatalf("%s: %d of %d steps within %g (want %d), the worst %.3g (bound %g)", what, close, len(toks), neonCloseBound, neonCloseSteps, worst, neonStepBound)
					}
					t.Logf("%s: %d tokens identical; %d steps within %g, the worst %.3g relative", what, len(toks), close, neonCloseBound, worst)
				}
			})
		}
	}
}
