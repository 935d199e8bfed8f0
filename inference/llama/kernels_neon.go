package llama

import "math"

// The pure-Go part of the arm64 kernels (kernels_arm64.go), built on every
// architecture: kernels.go refers to it.

// quantizeQ8_0ARM is the Q8_0 quantization of the activations that the NEON
// kernels pair with (quantizeQ8_0Native calls it on arm64). It is a
// variable so that a test can pair the kernels with the reference
// quantization instead, and see the kernels' differences alone.
var quantizeQ8_0ARM = quantizeQ8_0NEON

// quantizeQ8_0NEON quantizes x to Q8_0 blocks as llama.cpp's ARM NEON build
// does (quantize_row_q8_0 under __ARM_NEON): the scale d = amax/127 and the
// inverse 1/d as the reference, but values rounded half to even
// (vcvtnq_s32_f32) rather than away from zero.
func quantizeQ8_0NEON(x []float32, q []int8, d []float32) {
	for blk := range d {
		xs, qs := x[blk*32:blk*32+32], q[blk*32:blk*32+32]
		var amax float32
		for _, v := range xs {
			amax = max(amax, abs32(v))
		}
		dv := amax / 127
		var id float32
		if dv != 0 {
			id = 1 / dv
		}
		d[blk] = f16table[f32to16(dv)]
		for i, v := range xs {
			qs[i] = int8(math.RoundToEven(float64(v * id)))
		}
	}
}
