//go:build !purego

package llama

import (
	"context"
	"encoding/binary"
	"fmt"
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

// greedy runs prompt and then n greedy steps on a fresh State, and returns
// the tokens chosen and the log-probabilities of every token at each step.
func greedy(t *testing.T, m *Model, prompt []int, n int) ([]int, [][]float32) {
	t.Helper()
	st := m.NewState(0, nil)
	logits, err := st.Forward(context.Background(), prompt)
	if err != nil {
		t.Fatal(err)
	}
	var toks []int
	var lps [][]float32
	for range n {
		id := 0
		for i, v := range logits {
			if v > logits[id] {
				id = i
			}
		}
		toks, lps = append(toks, id), append(lps, Logprobs(logits))
		if logits, err = st.Forward(context.Background(), []int{id}); err != nil {
			t.Fatal(err)
		}
	}
	return toks, lps
}

// requantize replaces every weight matrix of m but the token embedding by
// its quantization to typ (Q8_0 or Q4_0, llama.cpp's reference quantizers).
func requantize(t *testing.T, m *Model, typ uint32) {
	t.Helper()
	conv := func(p **matrix) {
		old := *p
		if old == nil {
			return
		}
		_, size, _ := blockLayout(typ)
		data := make([]byte, 0, old.rows*old.cols/32*size)
		row := make([]float32, old.cols)
		for r := range old.rows {
			old.row(r, row)
			for blk := 0; blk < old.cols; blk += 32 {
				data = appendBlock(data, typ, row[blk:blk+32])
			}
		}
		nm, err := newMatrix(typ, old.rows, old.cols, data)
		if err != nil {
			t.Fatal(err)
		}
		*p = nm
	}
	for i := range m.layers {
		l := &m.layers[i]
		for _, p := range []**matrix{&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down, &l.gateInp} {
			conv(p)
		}
		for _, s := range [][]*matrix{l.gateExp, l.upExp, l.downEx} {
			for e := range s {
				conv(&s[e])
			}
		}
	}
	conv(&m.output)
}

// appendBlock appends the quantization of 32 values x to typ: Q8_0 as
// quantize_row_q8_0_ref, Q4_0 as quantize_row_q4_0_ref.
func appendBlock(data []byte, typ uint32, x []float32) []byte {
	switch typ {
	case typeQ8_0:
		var q [32]int8
		var d [1]float32
		quantizeQ8_0(x, q[:], d[:])
		data = binary.LittleEndian.AppendUint16(data, f32to16(d[0]))
		for _, v := range q {
			data = append(data, byte(v))
		}
	case typeQ4_0:
		var amax, vmax float32
		for _, v := range x {
			if abs32(v) > amax {
				amax, vmax = abs32(v), v
			}
		}
		d := vmax / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		data = binary.LittleEndian.AppendUint16(data, f32to16(d))
		for j := range 16 {
			lo := min(15, int8(x[j]*id+8.5))
			hi := min(15, int8(x[16+j]*id+8.5))
			data = append(data, byte(lo)|byte(hi)<<4)
		}
	default:
		panic(fmt.Sprintf("appendBlock: no quantizer for %s", typeName(typ)))
	}
	return data
}
