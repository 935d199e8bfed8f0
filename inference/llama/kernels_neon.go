package llama

import "math"

// Pure-Go parts of the arm64 kernels (kernels_arm64.go), built on every
// architecture so that their tests run everywhere.

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

// dotQ4_KRow is scratch.dotQ4_K on a raw Q4_K row (a Q5_K row if q5), the
// same lanes and sums: each block is unpacked (unpackQ4_K, unpackQ5_K) into
// arrays on the stack, so that it needs no per-worker scratch. It stands in
// for NEON Q4_K and Q5_K kernels.
func dotQ4_KRow(w []byte, q []int8, d []float32, bsum []int32, q5 bool) float32 {
	var x [256]int8
	var sc, mn [8]int32
	var bd, bdmin [1]float32
	s := scratch{q: x[:], sc: sc[:], mn: mn[:], d: bd[:], dmin: bdmin[:]}
	var sums [8]float32
	var sum float32
	for blk := range d {
		if q5 {
			unpackQ5_K(w[blk*176:(blk+1)*176], &s)
		} else {
			unpackQ4_K(w[blk*144:(blk+1)*144], &s)
		}
		var mins int32
		for j := range 16 {
			mins += bsum[blk*16+j] * mn[j/2]
		}
		var lanes [8]int32
		y := q[blk*256 : blk*256+256]
		for j := range 8 {
			for l := range 8 { // lane l: the elements ≡ l mod 8
				var acc int32
				for g := j * 32; g < j*32+32; g += 8 {
					acc += int32(x[g+l]) * int32(y[g+l])
				}
				lanes[l] += sc[j] * acc
			}
		}
		dd := bd[0] * d[blk]
		for l, v := range lanes {
			sums[l] += dd * float32(v)
		}
		sum -= bdmin[0] * d[blk] * float32(mins)
	}
	for _, v := range sums {
		sum += v
	}
	return sum
}

// dotQ6_KRow is scratch.dotQ6_K on a raw Q6_K row, the same lanes and sums,
// with each block unpacked on the stack. It stands in for a NEON Q6_K kernel.
func dotQ6_KRow(w []byte, q []int8, d []float32) float32 {
	var x [256]int8
	var sc [16]int32
	var bd [1]float32
	s := scratch{q: x[:], sc: sc[:], d: bd[:]}
	var sums [8]float32
	for blk := range d {
		unpackQ6_K(w[blk*210:(blk+1)*210], &s)
		var lanes [8]int32
		y := q[blk*256 : blk*256+256]
		for j := range 16 {
			xs, ys := x[j*16:j*16+16], y[j*16:j*16+16]
			for l := range 8 {
				lanes[l] += sc[j] * (int32(xs[l])*int32(ys[l]) + int32(xs[l+8])*int32(ys[l+8]))
			}
		}
		dd := bd[0] * d[blk]
		for l, v := range lanes {
			sums[l] += dd * float32(v)
		}
	}
	var sum float32
	for _, v := range sums {
		sum += v
	}
	return sum
}
