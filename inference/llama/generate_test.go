package llama

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
)

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
