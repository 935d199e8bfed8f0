//go:build !purego

package llama

import "golang.org/x/sys/cpu"

// useSIMD is whether the products run the AVX2 kernels of kernels_amd64.s.
var useSIMD = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C

// runSIMD is mulJob.run with the AVX2 kernels. Each weight row is read once
// for the whole batch (it stays in L1 between the batch's rows).
func (j *mulJob) runSIMD(lo, hi int) {
	m, a, out := j.m, j.a, j.out
	cols := m.cols
	switch m.typ {
	case typeF32:
		for r := lo; r < hi; r++ {
			w := m.f32[r*cols : (r+1)*cols]
			for b := range out {
				out[b][r] = dotF32AVX2(w, a.in[b][:cols])
			}
		}
	case typeF16:
		r := lo
		if len(out) >= 2 && cols%16 == 0 {
			r = j.tilesF16(lo, hi)
		}
		for ; r < hi; r++ {
			w := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
			for b := range out {
				out[b][r] = dotF16AVX2(w, a.f[b*cols:(b+1)*cols])
			}
		}
	case typeQ8_0, typeQ4_0:
		dot := dotQ8_0AVX2
		if m.typ == typeQ4_0 {
			dot = dotQ4_0AVX2
		}
		nb := cols / 32
		r := lo
		if m.typ == typeQ8_0 && len(out) >= 2 {
			r = j.tilesQ8_0(lo, hi)
		}
		for ; r < hi; r++ {
			w := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
			for b := range out {
				out[b][r] = dot(w, a.q[b*cols:(b+1)*cols], a.d[b*nb:(b+1)*nb])
			}
		}
	case typeQ4_K, typeQ5_K:
		nb := cols / 256
		dot := dotQ4_KAVX2
		if m.typ == typeQ5_K {
			dot = dotQ5_KAVX2
		}
		r := lo
		if len(out) >= 2 {
			r = j.tilesK4(lo, hi)
		}
		for ; r < hi; r++ {
			w := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
			for b := range out {
				out[b][r] = dot(w, a.q[b*cols:(b+1)*cols], a.d[b*nb:(b+1)*nb], a.bsum[b*cols/16:(b+1)*cols/16])
			}
		}
	case typeQ6_K:
		nb := cols / 256
		r := lo
		if len(out) >= 2 {
			r = j.tilesQ6_K(lo, hi)
		}
		for ; r < hi; r++ {
			w := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
			for b := range out {
				out[b][r] = dotQ6_KAVX2(w, a.q[b*cols:(b+1)*cols], a.d[b*nb:(b+1)*nb])
			}
		}
	}
}

// tilesF16 computes the rows [lo, r) of an F16 product, r-lo a multiple of
// 3, three weight rows by two activation rows at a time (tileF16AVX2), and
// returns r. The results are bitwise those of dotF16AVX2.
func (j *mulJob) tilesF16(lo, hi int) int {
	m, a, out := j.m, j.a, j.out
	cols, rb := m.cols, m.rowBytes
	var t [6]float32
	r := lo
	for ; r+3 <= hi; r += 3 {
		w := m.raw[r*rb : (r+3)*rb]
		b := 0
		for ; b+2 <= len(out); b += 2 {
			tileF16AVX2(w, rb, a.f[b*cols:(b+2)*cols], cols, cols, &t)
			for i := range 3 {
				out[b][r+i], out[b+1][r+i] = t[2*i], t[2*i+1]
			}
		}
		if b < len(out) {
			x := a.f[b*cols : (b+1)*cols]
			for i := range 3 {
				out[b][r+i] = dotF16AVX2(w[i*rb:(i+1)*rb], x)
			}
		}
	}
	return r
}

// tilesQ8_0 computes the rows [lo, r) of a Q8_0 product, r-lo even, two
// weight rows by two activation rows at a time (tileQ8_0AVX2), and returns
// r. The results are bitwise those of dotQ8_0AVX2.
func (j *mulJob) tilesQ8_0(lo, hi int) int {
	m, a, out := j.m, j.a, j.out
	cols, rb, nb := m.cols, m.rowBytes, m.cols/32
	var t [4]float32
	r := lo
	for ; r+2 <= hi; r += 2 {
		w := m.raw[r*rb : (r+2)*rb]
		b := 0
		for ; b+2 <= len(out); b += 2 {
			tileQ8_0AVX2(w, rb, a.q[b*cols:(b+2)*cols], a.d[b*nb:(b+2)*nb], cols, &t)
			out[b][r], out[b+1][r], out[b][r+1], out[b+1][r+1] = t[0], t[1], t[2], t[3]
		}
		if b < len(out) {
			for i := range 2 {
				out[b][r+i] = dotQ8_0AVX2(w[i*rb:(i+1)*rb], a.q[b*cols:(b+1)*cols], a.d[b*nb:(b+1)*nb])
			}
		}
	}
	return r
}

// tilesK4 computes the rows [lo, r) of a Q4_K or Q5_K product, r-lo even,
// two weight rows by two activation rows at a time (tileQ4_KAVX2 or
// tileQ5_KAVX2), and returns r. The results are bitwise those of
// dotQ4_KAVX2 or dotQ5_KAVX2. The kernels are called directly, not through
// func values, so that t stays on the stack.
func (j *mulJob) tilesK4(lo, hi int) int {
	m, a, out := j.m, j.a, j.out
	cols, rb, nb, ns := m.cols, m.rowBytes, m.cols/256, m.cols/16
	q5 := m.typ == typeQ5_K
	var t [4]float32
	r := lo
	for ; r+2 <= hi; r += 2 {
		w := m.raw[r*rb : (r+2)*rb]
		b := 0
		for ; b+2 <= len(out); b += 2 {
			if q5 {
				tileQ5_KAVX2(w, rb, a.q[b*cols:(b+2)*cols], a.d[b*nb:(b+2)*nb], a.bsum[b*ns:(b+2)*ns], cols, &t)
			} else {
				tileQ4_KAVX2(w, rb, a.q[b*cols:(b+2)*cols], a.d[b*nb:(b+2)*nb], a.bsum[b*ns:(b+2)*ns], cols, &t)
			}
			out[b][r], out[b+1][r], out[b][r+1], out[b+1][r+1] = t[0], t[1], t[2], t[3]
		}
		if b < len(out) {
			for i := range 2 {
				wi, q, d, bs := w[i*rb:(i+1)*rb], a.q[b*cols:(b+1)*cols], a.d[b*nb:(b+1)*nb], a.bsum[b*ns:(b+1)*ns]
				if q5 {
					out[b][r+i] = dotQ5_KAVX2(wi, q, d, bs)
				} else {
					out[b][r+i] = dotQ4_KAVX2(wi, q, d, bs)
				}
			}
		}
	}
	return r
}

// tilesQ6_K computes the rows [lo, r) of a Q6_K product, r-lo even, two
// weight rows by two activation rows at a time (tileQ6_KAVX2), and returns
// r. The results are bitwise those of dotQ6_KAVX2.
func (j *mulJob) tilesQ6_K(lo, hi int) int {
	m, a, out := j.m, j.a, j.out
	cols, rb, nb := m.cols, m.rowBytes, m.cols/256
	var t [4]float32
	r := lo
	for ; r+2 <= hi; r += 2 {
		w := m.raw[r*rb : (r+2)*rb]
		b := 0
		for ; b+2 <= len(out); b += 2 {
			tileQ6_KAVX2(w, rb, a.q[b*cols:(b+2)*cols], a.d[b*nb:(b+2)*nb], cols, &t)
			out[b][r], out[b+1][r], out[b][r+1], out[b+1][r+1] = t[0], t[1], t[2], t[3]
		}
		if b < len(out) {
			for i := range 2 {
				out[b][r+i] = dotQ6_KAVX2(w[i*rb:(i+1)*rb], a.q[b*cols:(b+1)*cols], a.d[b*nb:(b+1)*nb])
			}
		}
	}
	return r
}
