//go:build purego || !amd64

package llama

// siluMulSIMD and softmaxWide: no SIMD SiLU or softmax in this build
// (arm64 included): siluMul and softmax run the portable build's arithmetic.
func siluMulSIMD(g, u []float32) (done int, ok bool) { return 0, false }

func softmaxWide() bool { return false }
