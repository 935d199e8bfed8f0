//go:build !purego

package llama

import "golang.org/x/sys/cpu"

// useSIMD is whether the products run the NEON kernels of kernels_arm64.s.
// Advanced SIMD is part of ARMv8-A, so every arm64 CPU reports it; the flag
// still follows the report.
var useSIMD = cpu.ARM64.HasASIMD

// useSDOT is whether the integer dot products of the quantized kernels use
// SDOT (the ARMv8.2 dotprod extension) rather than SMULL and SADALP, as
// llama.cpp's ARM build does with and without __ARM_FEATURE_DOTPROD. Both
// give the same block sums; tests switch it off to run the fallback.
var useSDOT = cpu.ARM64.HasASIMDDP

// runSIMD is mulJob.run with the NEON kernels, one weight row and one
// activation row at a time (no tiles yet, unlike the AVX2 build). The
// pure-Go twins in tensor.go compute the same products;
// kernels_arm64_test.go compares them.
func (j *mulJob) runSIMD(lo, hi int) {
	m, a, out := j.m, j.a, j.out
	cols := m.cols
	switch m.typ {
	case typeF32:
		for r := lo; r < hi; r++ {
			w := m.f32[r*cols : (r+1)*cols]
			for b := range out {
				out[b][r] = dotF32NEON(w, a.in[b][:cols])
			}
		}
	case typeF16:
		for r := lo; r < hi; r++ {
			w := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
			for b := range out {
				out[b][r] = dotF16NEON(w, a.f[b*cols:(b+1)*cols])
			}
		}
	case typeQ8_0, typeQ4_0:
		dot := dotQ8_0NEON
		if m.typ == typeQ4_0 {
			dot = dotQ4_0NEON
		}
		nb := cols / 32
		for r := lo; r < hi; r++ {
			w := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
			for b := range out {
				out[b][r] = dot(w, a.q[b*cols:(b+1)*cols], a.d[b*nb:(b+1)*nb])
			}
		}
	case typeQ4_K, typeQ5_K, typeQ6_K:
		dot := dotQ4_KNEON
		switch m.typ {
		case typeQ5_K:
			dot = dotQ5_KNEON
		case typeQ6_K:
			dot = dotQ6_KNEON
		}
		nb, ns := cols/256, cols/16
		for r := lo; r < hi; r++ {
			w := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
			for b := range out {
				out[b][r] = dot(w, a.q[b*cols:(b+1)*cols], a.d[b*nb:(b+1)*nb], a.bsum[b*ns:(b+1)*ns])
			}
		}
	}
}

// dotF32NEON returns the inner product of a and b[:len(a)] as llama.cpp's
// ARM build computes it (ggml_vec_dot_f32): the NEON loop over multiples of
// 16, then the rest added one product at a time to the float32 sum.
func dotF32NEON(a, b []float32) float32 {
	b = b[:len(a)]
	n := len(a) &^ 15
	s := dotF32NEON16(a[:n], b[:n])
	for i := n; i < len(a); i++ {
		s += float32(a[i] * b[i]) // the product rounded, then added (no FMA)
	}
	return s
}

// dotF16NEON returns the inner product of the binary16 values in w
// (2·len(x) bytes) and x as ggml_vec_dot_f16 on ARM without FP16 vector
// arithmetic: the NEON loop over multiples of 16, the rest summed in
// float64 as its scalar tail does.
func dotF16NEON(w []byte, x []float32) float32 {
	w = w[:2*len(x)]
	n := len(x) &^ 15
	s := float64(dotF16NEON16(w[:2*n], x[:n]))
	for i := n; i < len(x); i++ {
		s += float64(f16table[uint16(w[2*i])|uint16(w[2*i+1])<<8] * x[i])
	}
	return float32(s)
}

// dotQ8_0NEON is ggml_vec_dot_q8_0_q8_0 on ARM: the NEON loop over pairs of
// blocks (even blocks in one float accumulator, odd in another), then an
// odd last block as its scalar tail: Σq·q·(dw·dx).
func dotQ8_0NEON(w []byte, q []int8, d []float32) float32 {
	nb := len(d)
	w, q = w[:nb*34], q[:nb*32]
	sum := dotQ8_0NEON2(w, q, d, useSDOT)
	if nb%2 == 1 {
		x, y := w[(nb-1)*34:], q[(nb-1)*32:]
		var si int32
		for i := range 32 {
			si += int32(int8(x[2+i])) * int32(y[i])
		}
		sum += float32(float32(si) * (f16table[uint16(x[0])|uint16(x[1])<<8] * d[nb-1]))
	}
	return sum
}

// dotQ4_0NEON is ggml_vec_dot_q4_0_q8_0 on ARM: the NEON loop over pairs of
// blocks, then an odd last block as its scalar tail: (Σq·q·dw)·dx.
func dotQ4_0NEON(w []byte, q []int8, d []float32) float32 {
	nb := len(d)
	w, q = w[:nb*18], q[:nb*32]
	sum := dotQ4_0NEON2(w, q, d, useSDOT)
	if nb%2 == 1 {
		x, y := w[(nb-1)*18:], q[(nb-1)*32:]
		var si int32
		for i := range 16 {
			si += (int32(x[2+i]&0x0f)-8)*int32(y[i]) + (int32(x[2+i]>>4)-8)*int32(y[i+16])
		}
		sum += float32(float32(si) * f16table[uint16(x[0])|uint16(x[1])<<8] * d[nb-1])
	}
	return sum
}

// kChunk is the number of K-quant blocks whose sub-block sums the NEON
// kernels compute at a time, into an array on the stack.
const kChunk = 16

// dotQ4_KNEON is ggml_vec_dot_q4_K_q8_K on ARM: the sub-block sums from
// dotsQ4_K, scaled and summed in integers per block; then per block
// sum -= (y.d·dmin)·Σmins and sum += (y.d·d)·Σscaled, in that order.
func dotQ4_KNEON(w []byte, q []int8, d []float32, bsum []int32) float32 {
	var dots [kChunk * 8]int32
	var sum float32
	for b0 := 0; b0 < len(d); b0 += kChunk {
		n := min(kChunk, len(d)-b0)
		dotsQ4_K(w[b0*144:(b0+n)*144], q[b0*256:(b0+n)*256], dots[:n*8], useSDOT)
		for i := range n {
			blk := b0 + i
			x, bs := w[blk*144:blk*144+144], bsum[blk*16:blk*16+16]
			var isum, mins int32
			for j := range 8 {
				sc, mn := scaleMinK4(j, x[4:16])
				isum += int32(sc) * dots[i*8+j]
				mins += int32(mn) * (bs[2*j] + bs[2*j+1])
			}
			dd := d[blk] * f16table[uint16(x[0])|uint16(x[1])<<8]
			dmin := d[blk] * f16table[uint16(x[2])|uint16(x[3])<<8]
			sum -= float32(dmin * float32(mins))
			sum += float32(dd * float32(isum))
		}
	}
	return sum
}

// dotQ5_KNEON is ggml_vec_dot_q5_K_q8_K on ARM: dotQ4_KNEON's integer sums
// on the 5-bit values of dotsQ5_K, then per block
// sum += (y.d·d)·Σscaled - (y.d·dmin)·Σmins.
func dotQ5_KNEON(w []byte, q []int8, d []float32, bsum []int32) float32 {
	var dots [kChunk * 8]int32
	var sum float32
	for b0 := 0; b0 < len(d); b0 += kChunk {
		n := min(kChunk, len(d)-b0)
		dotsQ5_K(w[b0*176:(b0+n)*176], q[b0*256:(b0+n)*256], dots[:n*8], useSDOT)
		for i := range n {
			blk := b0 + i
			x, bs := w[blk*176:blk*176+176], bsum[blk*16:blk*16+16]
			var isum, mins int32
			for j := range 8 {
				sc, mn := scaleMinK4(j, x[4:16])
				isum += int32(sc) * dots[i*8+j]
				mins += int32(mn) * (bs[2*j] + bs[2*j+1])
			}
			dd := d[blk] * f16table[uint16(x[0])|uint16(x[1])<<8]
			dmin := d[blk] * f16table[uint16(x[2])|uint16(x[3])<<8]
			sum += float32(float32(dd*float32(isum)) - float32(dmin*float32(mins)))
		}
	}
	return sum
}

// dotQ6_KNEON is ggml_vec_dot_q6_K_q8_K on ARM: the sub-block sums of the
// unsigned 6-bit values from dotsQ6_K, scaled and summed in integers, the
// offset of 32 taken off with the activations' sums of 16 (Σsc·(Σu·q -
// 32·Σq)); then per block sum += (d·y.d)·that.
func dotQ6_KNEON(w []byte, q []int8, d []float32, bsum []int32) float32 {
	var dots [kChunk * 16]int32
	var sum float32
	for b0 := 0; b0 < len(d); b0 += kChunk {
		n := min(kChunk, len(d)-b0)
		dotsQ6_K(w[b0*210:(b0+n)*210], q[b0*256:(b0+n)*256], dots[:n*16], useSDOT)
		for i := range n {
			blk := b0 + i
			x, bs := w[blk*210:blk*210+210], bsum[blk*16:blk*16+16]
			var isum, mins int32
			for j := range 16 {
				sc := int32(int8(x[192+j]))
				isum += sc * dots[i*16+j]
				mins += sc * bs[j]
			}
			dd := f16table[uint16(x[208])|uint16(x[209])<<8] * d[blk]
			sum += float32(dd * float32(isum-32*mins))
		}
	}
	return sum
}

// tensor.go and attention.go call these by the names of the AVX2 build,
// behind useSIMD; on arm64 they run the NEON kernels.

func dotF32AVX2(a, b []float32) float32 { return dotF32NEON(a, b) }

func roundF16AVX2(x []float32) { roundF16NEON(x) }

func madF16AVX2(acc, v []float32, s float32) { madF16NEON(acc, v[:len(acc)], s) }

func scaleF16AVX2(acc []float32, s float32) { scaleF16NEON(acc, s) }

// The NEON kernels of kernels_arm64.s.

//go:noescape
func dotF32NEON16(a, b []float32) float32

//go:noescape
func dotF16NEON16(w []byte, x []float32) float32

//go:noescape
func dotQ8_0NEON2(w []byte, q []int8, d []float32, sdot bool) float32

//go:noescape
func dotQ4_0NEON2(w []byte, q []int8, d []float32, sdot bool) float32

//go:noescape
func dotsQ4_K(w []byte, q []int8, dots []int32, sdot bool)

//go:noescape
func dotsQ5_K(w []byte, q []int8, dots []int32, sdot bool)

//go:noescape
func dotsQ6_K(w []byte, q []int8, dots []int32, sdot bool)

//go:noescape
func roundF16NEON(x []float32)

//go:noescape
func scaleF16NEON(acc []float32, s float32)

//go:noescape
func madF16NEON(acc, v []float32, s float32)
