//go:build !purego

package llama

// siluMulSIMD runs siluMulAVX2 on the whole groups of 8 of g and returns
// how many elements it did; ok is false without the SIMD kernels.
func siluMulSIMD(g, u []float32) (done int, ok bool) {
	if !useSIMD {
		return 0, false
	}
	n := len(g) &^ 7
	siluMulAVX2(g[:n], u[:n])
	return n, true
}

// softmaxWide is whether softmax follows llama.cpp's AVX2 build (8 lanes,
// FMA) rather than its portable one.
func softmaxWide() bool { return useSIMD }
