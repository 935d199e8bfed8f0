//go:build !purego

#include "textflag.h"

// NEON kernels of the products (kernels_arm64.go calls them; tensor.go has
// their pure-Go twins). Each follows the loop of llama.cpp's ARM NEON build
// (ggml-cpu vec.cpp and arch/arm/quants.c, built without the FP16 vector
// arithmetic, SVE and i8mm extensions): the same lanes, the same order of
// float sums. The Go wrappers add the tails the loops leave.
//
// Go's assembler lacks most of the NEON floating-point and signed integer
// instructions: those are written as WORD $encoding, with the instruction
// in the comment (encodings from GNU as, -march=armv8.2-a+dotprod).

// The two quantized kernels (at the end) share their second half: with the
// weights of block 2k as int8 in V0 (elements 0-15) and V1 (16-31), the
// activations in V2 and V3, block 2k+1 likewise in V4-V7, and the products
// of the two blocks' scales in F12 and F13, INTDOTS sums each block's 32
// products into four int32 lanes (V16, V17), and SCALESUMS adds the lanes
// times the block's scale to the block's float accumulator (V8 for even
// blocks, V9 for odd ones), as ggml's vmlaq_n_f32 (multiply, then add).
//
// INTDOTS runs SDOT when R4 (useSDOT) is set; otherwise SMULL and SMULL2
// multiply eight pairs each into int16 and SADALP adds adjacent products
// into the lanes, as ggml_vdotq_s32 without the dotprod extension. The
// lanes differ between the two, the block sums do not.

#define INTDOTS \
	VEOR	V16.B16, V16.B16, V16.B16 \
	VEOR	V17.B16, V17.B16, V17.B16 \
	CBZ	R4, widen \
	WORD	$0x4e829410	/* sdot v16.4s, v0.16b, v2.16b */ \
	WORD	$0x4e839430	/* sdot v16.4s, v1.16b, v3.16b */ \
	WORD	$0x4e869491	/* sdot v17.4s, v4.16b, v6.16b */ \
	WORD	$0x4e8794b1	/* sdot v17.4s, v5.16b, v7.16b */ \
	B	scale \
widen: \
	WORD	$0x0e22c012	/* smull v18.8h, v0.8b, v2.8b */ \
	WORD	$0x4e22c013	/* smull2 v19.8h, v0.16b, v2.16b */ \
	WORD	$0x4e606a50	/* sadalp v16.4s, v18.8h */ \
	WORD	$0x4e606a70	/* sadalp v16.4s, v19.8h */ \
	WORD	$0x0e23c032	/* smull v18.8h, v1.8b, v3.8b */ \
	WORD	$0x4e23c033	/* smull2 v19.8h, v1.16b, v3.16b */ \
	WORD	$0x4e606a50	/* sadalp v16.4s, v18.8h */ \
	WORD	$0x4e606a70	/* sadalp v16.4s, v19.8h */ \
	WORD	$0x0e26c092	/* smull v18.8h, v4.8b, v6.8b */ \
	WORD	$0x4e26c093	/* smull2 v19.8h, v4.16b, v6.16b */ \
	WORD	$0x4e606a51	/* sadalp v17.4s, v18.8h */ \
	WORD	$0x4e606a71	/* sadalp v17.4s, v19.8h */ \
	WORD	$0x0e27c0b2	/* smull v18.8h, v5.8b, v7.8b */ \
	WORD	$0x4e27c0b3	/* smull2 v19.8h, v5.16b, v7.16b */ \
	WORD	$0x4e606a51	/* sadalp v17.4s, v18.8h */ \
	WORD	$0x4e606a71	/* sadalp v17.4s, v19.8h */ \
scale:

#define SCALESUMS \
	WORD	$0x4e21da10	/* scvtf v16.4s, v16.4s */ \
	WORD	$0x4e21da31	/* scvtf v17.4s, v17.4s */ \
	WORD	$0x4f8c9210	/* fmul v16.4s, v16.4s, v12.s[0] */ \
	WORD	$0x4f8d9231	/* fmul v17.4s, v17.4s, v13.s[0] */ \
	WORD	$0x4e30d508	/* fadd v8.4s, v8.4s, v16.4s */ \
	WORD	$0x4e31d529	// fadd v9.4s, v9.4s, v17.4s

// SCALE(woff, doff, f): f = the F16 scale at R0+woff (a weight block's)
// times the float32 scale at R2+doff (the activation block's), in F14 too.
#define SCALE(woff, doff, f) \
	MOVHU	woff(R0), R5 \
	FMOVS	R5, f \
	FCVTHS	f, f \
	FMOVS	doff(R2), F14 \
	FMULS	F14, f, f

// SUMS sets F8 to (V8's lanes summed) + (V9's lanes summed), vaddvq_f32 each.
#define SUMS \
	WORD	$0x6e28d508	/* faddp v8.4s, v8.4s, v8.4s */ \
	WORD	$0x7e30d908	/* faddp s8, v8.2s */ \
	WORD	$0x6e29d529	/* faddp v9.4s, v9.4s, v9.4s */ \
	WORD	$0x7e30d929	/* faddp s9, v9.2s */ \
	FADDS	F9, F8, F8

// func dotF32NEON16(a, b []float32) float32
//
// The inner product of a and b over the first len(a)&^15 elements, as
// ggml_vec_dot_f32's NEON loop: four accumulators of four lanes take 16
// elements a step with fused multiply-adds; then acc0+acc2, acc1+acc3, their
// sum, and the lanes summed pairwise ((l0+l1)+(l2+l3), vaddvq_f32).
TEXT ·dotF32NEON16(SB), NOSPLIT, $0-52
	MOVD	a_base+0(FP), R0
	MOVD	a_len+8(FP), R2
	MOVD	b_base+24(FP), R1
	VEOR	V0.B16, V0.B16, V0.B16
	VEOR	V1.B16, V1.B16, V1.B16
	VEOR	V2.B16, V2.B16, V2.B16
	VEOR	V3.B16, V3.B16, V3.B16
	LSR	$4, R2, R2
	CBZ	R2, reduce

loop:
	VLD1.P	64(R0), [V4.S4, V5.S4, V6.S4, V7.S4]
	VLD1.P	64(R1), [V16.S4, V17.S4, V18.S4, V19.S4]
	VFMLA	V16.S4, V4.S4, V0.S4
	VFMLA	V17.S4, V5.S4, V1.S4
	VFMLA	V18.S4, V6.S4, V2.S4
	VFMLA	V19.S4, V7.S4, V3.S4
	SUBS	$1, R2, R2
	BNE	loop

reduce:
	WORD	$0x4e22d400	// fadd v0.4s, v0.4s, v2.4s
	WORD	$0x4e23d421	// fadd v1.4s, v1.4s, v3.4s
	WORD	$0x4e21d400	// fadd v0.4s, v0.4s, v1.4s
	WORD	$0x6e20d400	// faddp v0.4s, v0.4s, v0.4s
	WORD	$0x7e30d800	// faddp s0, v0.2s
	FMOVS	F0, ret+48(FP)
	RET

// func dotF16NEON16(w []byte, x []float32) float32
//
// The inner product of the binary16 values in w and x over the first
// len(x)&^15 elements, as ggml_vec_dot_f16's NEON loop without FP16
// arithmetic: the weights widened to float32 with FCVTL (exact), then the
// lanes and sums of dotF32NEON16.
TEXT ·dotF16NEON16(SB), NOSPLIT, $0-52
	MOVD	w_base+0(FP), R0
	MOVD	x_base+24(FP), R1
	MOVD	x_len+32(FP), R2
	VEOR	V0.B16, V0.B16, V0.B16
	VEOR	V1.B16, V1.B16, V1.B16
	VEOR	V2.B16, V2.B16, V2.B16
	VEOR	V3.B16, V3.B16, V3.B16
	LSR	$4, R2, R2
	CBZ	R2, reduce

loop:
	VLD1.P	32(R0), [V4.H8, V5.H8]
	VLD1.P	64(R1), [V16.S4, V17.S4, V18.S4, V19.S4]
	WORD	$0x0e217894	// fcvtl v20.4s, v4.4h
	WORD	$0x4e217895	// fcvtl2 v21.4s, v4.8h
	WORD	$0x0e2178b6	// fcvtl v22.4s, v5.4h
	WORD	$0x4e2178b7	// fcvtl2 v23.4s, v5.8h
	VFMLA	V16.S4, V20.S4, V0.S4
	VFMLA	V17.S4, V21.S4, V1.S4
	VFMLA	V18.S4, V22.S4, V2.S4
	VFMLA	V19.S4, V23.S4, V3.S4
	SUBS	$1, R2, R2
	BNE	loop

reduce:
	WORD	$0x4e22d400	// fadd v0.4s, v0.4s, v2.4s
	WORD	$0x4e23d421	// fadd v1.4s, v1.4s, v3.4s
	WORD	$0x4e21d400	// fadd v0.4s, v0.4s, v1.4s
	WORD	$0x6e20d400	// faddp v0.4s, v0.4s, v0.4s
	WORD	$0x7e30d800	// faddp s0, v0.2s
	FMOVS	F0, ret+48(FP)
	RET

// func dotQ8_0NEON2(w []byte, q []int8, d []float32, sdot bool) float32
//
// ggml_vec_dot_q8_0_q8_0's NEON loop over the first len(d)&^1 blocks, two
// blocks a step: w holds 34-byte Q8_0 blocks (an F16 scale, 32 int8), q
// and d the activations' int8 values and scales (F16 values as float32).
TEXT ·dotQ8_0NEON2(SB), NOSPLIT, $0-84
	MOVD	w_base+0(FP), R0
	MOVD	q_base+24(FP), R1
	MOVD	d_base+48(FP), R2
	MOVD	d_len+56(FP), R3
	MOVBU	sdot+72(FP), R4
	VEOR	V8.B16, V8.B16, V8.B16
	VEOR	V9.B16, V9.B16, V9.B16
	LSR	$1, R3, R3
	CBZ	R3, reduce

loop:
	SCALE(0, 0, F12)
	SCALE(34, 4, F13)
	ADD	$2, R0
	VLD1.P	32(R0), [V0.B16, V1.B16]
	ADD	$2, R0
	VLD1.P	32(R0), [V4.B16, V5.B16]
	VLD1.P	32(R1), [V2.B16, V3.B16]
	VLD1.P	32(R1), [V6.B16, V7.B16]
	ADD	$8, R2
	INTDOTS
	SCALESUMS
	SUBS	$1, R3, R3
	BNE	loop

reduce:
	SUMS
	FMOVS	F8, ret+80(FP)
	RET

// func dotQ4_0NEON2(w []byte, q []int8, d []float32, sdot bool) float32
//
// ggml_vec_dot_q4_0_q8_0's NEON loop over the first len(d)&^1 blocks, two
// blocks a step: w holds 18-byte Q4_0 blocks (an F16 scale, 16 bytes whose
// low nibbles are elements 0-15 and high nibbles 16-31, each offset by 8).
TEXT ·dotQ4_0NEON2(SB), NOSPLIT, $0-84
	MOVD	w_base+0(FP), R0
	MOVD	q_base+24(FP), R1
	MOVD	d_base+48(FP), R2
	MOVD	d_len+56(FP), R3
	MOVBU	sdot+72(FP), R4
	VEOR	V8.B16, V8.B16, V8.B16
	VEOR	V9.B16, V9.B16, V9.B16
	VMOVI	$15, V20.B16
	VMOVI	$8, V21.B16
	LSR	$1, R3, R3
	CBZ	R3, reduce

loop:
	SCALE(0, 0, F12)
	SCALE(18, 4, F13)
	ADD	$2, R0
	VLD1.P	16(R0), [V1.B16]
	ADD	$2, R0
	VLD1.P	16(R0), [V5.B16]
	VLD1.P	32(R1), [V2.B16, V3.B16]
	VLD1.P	32(R1), [V6.B16, V7.B16]
	ADD	$8, R2
	// Nibbles to int8: low (elements 0-15) to V0 and V4, high (16-31) to V1
	// and V5, minus 8.
	VAND	V20.B16, V1.B16, V0.B16
	VUSHR	$4, V1.B16, V1.B16
	VAND	V20.B16, V5.B16, V4.B16
	VUSHR	$4, V5.B16, V5.B16
	VSUB	V21.B16, V0.B16, V0.B16
	VSUB	V21.B16, V1.B16, V1.B16
	VSUB	V21.B16, V4.B16, V4.B16
	VSUB	V21.B16, V5.B16, V5.B16
	INTDOTS
	SCALESUMS
	SUBS	$1, R3, R3
	BNE	loop

reduce:
	SUMS
	FMOVS	F8, ret+80(FP)
	RET
