//go:build purego || !(amd64 || arm64)

package llama

// useSIMD is false: this build has only the pure-Go kernels.
const useSIMD = false

func (j *mulJob) runSIMD(lo, hi int) {}

// The SIMD kernels called behind "if useSIMD" are never called here.

func dotF32AVX2(a, b []float32) float32      { panic(errNoSIMD) }
func roundF16AVX2(x []float32)               { panic(errNoSIMD) }
func madF16AVX2(acc, v []float32, s float32) { panic(errNoSIMD) }
func scaleF16AVX2(acc []float32, s float32)  { panic(errNoSIMD) }

const errNoSIMD = "llama: no SIMD kernels in this build"
