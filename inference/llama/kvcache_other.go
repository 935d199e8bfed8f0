//go:build purego || !amd64

package llama

// maxWiden is the longest cache row widened on the stack for a SIMD kernel
// that reads float32 (head sizes are at most 256 in the models this
// package runs; longer rows are widened on the heap).
const maxWiden = 512

// widen returns the binary16 values h as float32, in buf when they fit.
func widen(buf *[maxWiden]float32, h []uint16) []float32 {
	var w []float32
	if len(h) <= maxWiden {
		w = buf[:len(h)]
	} else {
		w = make([]float32, len(h))
	}
	for i, x := range h {
		w[i] = f16table[x]
	}
	return w
}

// dotKF16 returns the attention score of query head q (F16 values) and a
// cache row k: with SIMD kernels, dotF32AVX2's sum on k widened to
// float32; without, dotSeq's (attendHead).
func dotKF16(q []float32, k []uint16) float32 {
	if useSIMD {
		var buf [maxWiden]float32
		return dotF32AVX2(q, widen(&buf, k[:len(q)]))
	}
	return dotKF16Go(q, k)
}

// madVF16 sets acc[i] to acc[i] + v[i]·s rounded to F16, v[:len(acc)]
// being a cache row: madVF16Go, or with the SIMD kernels the product fused
// with the sum (madF16AVX2 on v widened to float32).
func madVF16(acc []float32, v []uint16, s float32) {
	if useSIMD {
		var buf [maxWiden]float32
		madF16AVX2(acc, widen(&buf, v[:len(acc)]), s)
		return
	}
	madVF16Go(acc, v, s)
}
