//go:build purego || !amd64

package llama

// siluMulSIMD: no SIMD SiLU in this build (arm64 included): siluMul runs
// the portable build's arithmetic.
func siluMulSIMD(g, u []float32) (done int, ok bool) { return 0, false }
