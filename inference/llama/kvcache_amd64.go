//go:build !purego

package llama

// dotKF16 returns the attention score of query head q (F16 values) and a
// cache row k: dotF32AVX2's sum with the SIMD kernels, dotSeq's without,
// on k widened to float32 (attendHead).
func dotKF16(q []float32, k []uint16) float32 {
	if useSIMD {
		return dotKF16AVX2(q, k)
	}
	return dotKF16Go(q, k)
}

// madVF16 sets acc[i] to acc[i] + v[i]·s rounded to F16, v[:len(acc)]
// being a cache row: madVF16Go, or with the SIMD kernels the product fused
// with the sum (madF16AVX2 on v widened to float32).
func madVF16(acc []float32, v []uint16, s float32) {
	if useSIMD {
		madVF16AVX2(acc, v, s)
		return
	}
	madVF16Go(acc, v, s)
}
