//go:build !purego

#include "textflag.h"

// NEON kernels of the products (kernels_arm64.go calls them; tensor.go has
// their pure-Go twins), in three groups: the F32, F16, Q8_0 and Q4_0 dots;
// the K-quants' integer sub-block sums; the binary16 helpers. Each follows
// llama.cpp's ARM NEON build (ggml-cpu vec.cpp and arch/arm/quants.c, built
// without the FP16 vector arithmetic, SVE and i8mm extensions): the same
// lanes, the same order of float sums. The Go wrappers add the tails the
// loops leave and, for the K-quants, the per-block scaling.
//
// Go's assembler lacks most of the NEON floating-point and signed integer
// instructions: those are written as WORD $encoding, with the instruction
// in the comment (encodings from GNU as, -march=armv8.2-a+dotprod).

// The Q8_0 and Q4_0 kernels share their second half: with the
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
	WORD	$0x4e31d529	/* fadd v9.4s, v9.4s, v17.4s */ \

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

// The K-quant kernels below compute only integer sums: each sub-block's
// dot product of weights and activations (its 16 or 32 int8 products
// summed), stored in dots. kernels_arm64.go scales and adds them as
// llama.cpp's ARM build does (all integer within a block, then one or two
// float operations a block); the scales' 6-bit packing stays in Go.

// func dotsQ4_K(w []byte, q []int8, dots []int32, sdot bool)
//
// For len(dots)/8 Q4_K blocks in w (144 bytes: F16 d and dmin, 12 bytes of
// scales and mins, 128 bytes of nibbles) and their activations in q (256
// int8 a block), sets dots[8b+j] to Σ nibble·q over sub-block j of block b:
// bytes 32i..32i+31 hold sub-block 2i in their low nibbles and 2i+1 in
// their high ones.
TEXT ·dotsQ4_K(SB), NOSPLIT, $0-73
	MOVD	w_base+0(FP), R0
	MOVD	q_base+24(FP), R1
	MOVD	dots_base+48(FP), R2
	MOVD	dots_len+56(FP), R3
	MOVBU	sdot+72(FP), R4
	VMOVI	$15, V20.B16
	LSR	$3, R3, R3
	CBZ	R3, done

block:
	ADD	$16, R0 // past d, dmin and the scales
	MOVD	$4, R5

group:
	VLD1.P	32(R0), [V0.B16, V1.B16]
	VLD1.P	64(R1), [V2.B16, V3.B16, V4.B16, V5.B16]
	VAND	V20.B16, V0.B16, V6.B16
	VAND	V20.B16, V1.B16, V7.B16
	VUSHR	$4, V0.B16, V0.B16
	VUSHR	$4, V1.B16, V1.B16
	VEOR	V16.B16, V16.B16, V16.B16
	VEOR	V17.B16, V17.B16, V17.B16
	CBZ	R4, widen
	WORD	$0x4e8294d0	// sdot v16.4s, v6.16b, v2.16b
	WORD	$0x4e8394f0	// sdot v16.4s, v7.16b, v3.16b
	WORD	$0x4e849411	// sdot v17.4s, v0.16b, v4.16b
	WORD	$0x4e859431	// sdot v17.4s, v1.16b, v5.16b
	B	store

widen:
	WORD	$0x0e22c0d2	// smull v18.8h, v6.8b, v2.8b
	WORD	$0x4e22c0d3	// smull2 v19.8h, v6.16b, v2.16b
	WORD	$0x4e606a50	// sadalp v16.4s, v18.8h
	WORD	$0x4e606a70	// sadalp v16.4s, v19.8h
	WORD	$0x0e23c0f2	// smull v18.8h, v7.8b, v3.8b
	WORD	$0x4e23c0f3	// smull2 v19.8h, v7.16b, v3.16b
	WORD	$0x4e606a50	// sadalp v16.4s, v18.8h
	WORD	$0x4e606a70	// sadalp v16.4s, v19.8h
	WORD	$0x0e24c012	// smull v18.8h, v0.8b, v4.8b
	WORD	$0x4e24c013	// smull2 v19.8h, v0.16b, v4.16b
	WORD	$0x4e606a51	// sadalp v17.4s, v18.8h
	WORD	$0x4e606a71	// sadalp v17.4s, v19.8h
	WORD	$0x0e25c032	// smull v18.8h, v1.8b, v5.8b
	WORD	$0x4e25c033	// smull2 v19.8h, v1.16b, v5.16b
	WORD	$0x4e606a51	// sadalp v17.4s, v18.8h
	WORD	$0x4e606a71	// sadalp v17.4s, v19.8h

store:
	VADDV	V16.S4, V16
	VADDV	V17.S4, V17
	VMOV	V16.S[0], R6
	VMOV	V17.S[0], R7
	MOVW.P	R6, 4(R2)
	MOVW.P	R7, 4(R2)
	SUBS	$1, R5, R5
	BNE	group
	SUBS	$1, R3, R3
	BNE	block

done:
	RET

// func dotsQ6_K(w []byte, q []int8, dots []int32, sdot bool)
//
// For len(dots)/16 Q6_K blocks in w (210 bytes: 128 of low 4 bits, 64 of
// high 2 bits, 16 int8 scales, F16 d) and their activations in q, sets
// dots[16b+j] to Σ u·q over sub-block j (16 elements) of block b, u the
// unsigned 6-bit values (0..63; the offset of 32 is taken off in Go with
// the activations' sums, as ggml's ARM build does). Each half of a block
// (128 elements) takes 64 bytes of low bits and 32 of high bits: elements
// 0-31 are the low nibbles of bytes 0-31 with bits 0-1 of the high bytes,
// 32-63 the low nibbles of bytes 32-63 with bits 2-3, 64-95 the high
// nibbles of bytes 0-31 with bits 4-5, and 96-127 the high nibbles of bytes
// 32-63 with bits 6-7.
TEXT ·dotsQ6_K(SB), NOSPLIT, $0-73
	MOVD	w_base+0(FP), R0
	MOVD	q_base+24(FP), R1
	MOVD	dots_base+48(FP), R2
	MOVD	dots_len+56(FP), R3
	MOVBU	sdot+72(FP), R4
	VMOVI	$15, V20.B16
	VMOVI	$48, V21.B16
	LSR	$4, R3, R3
	CBZ	R3, done

block:
	ADD	$128, R0, R8 // the high bits
	MOVD	$2, R5

half:
	VLD1.P	64(R0), [V0.B16, V1.B16, V2.B16, V3.B16]
	VLD1.P	32(R8), [V4.B16, V5.B16]
	// Elements 0-63: low nibbles | (bits 0-1, then 2-3, of the high bytes) << 4.
	VSHL	$4, V4.B16, V6.B16
	VSHL	$4, V5.B16, V7.B16
	VSHL	$2, V4.B16, V8.B16
	VSHL	$2, V5.B16, V9.B16
	VAND	V21.B16, V6.B16, V6.B16
	VAND	V21.B16, V7.B16, V7.B16
	VAND	V21.B16, V8.B16, V8.B16
	VAND	V21.B16, V9.B16, V9.B16
	VAND	V20.B16, V0.B16, V10.B16
	VAND	V20.B16, V1.B16, V11.B16
	VAND	V20.B16, V2.B16, V12.B16
	VAND	V20.B16, V3.B16, V13.B16
	VORR	V6.B16, V10.B16, V10.B16
	VORR	V7.B16, V11.B16, V11.B16
	VORR	V8.B16, V12.B16, V12.B16
	VORR	V9.B16, V13.B16, V13.B16
	VLD1.P	64(R1), [V24.B16, V25.B16, V26.B16, V27.B16]
	CALL	dots4<>(SB)
	// Elements 64-127: high nibbles | (bits 4-5, then 6-7) << 4.
	VAND	V21.B16, V4.B16, V6.B16
	VAND	V21.B16, V5.B16, V7.B16
	VUSHR	$2, V4.B16, V8.B16
	VUSHR	$2, V5.B16, V9.B16
	VAND	V21.B16, V8.B16, V8.B16
	VAND	V21.B16, V9.B16, V9.B16
	VUSHR	$4, V0.B16, V10.B16
	VUSHR	$4, V1.B16, V11.B16
	VUSHR	$4, V2.B16, V12.B16
	VUSHR	$4, V3.B16, V13.B16
	VORR	V6.B16, V10.B16, V10.B16
	VORR	V7.B16, V11.B16, V11.B16
	VORR	V8.B16, V12.B16, V12.B16
	VORR	V9.B16, V13.B16, V13.B16
	VLD1.P	64(R1), [V24.B16, V25.B16, V26.B16, V27.B16]
	CALL	dots4<>(SB)
	SUBS	$1, R5, R5
	BNE	half
	ADD	$82, R0 // past the high bits, scales and d (R0 is at byte 128)
	SUBS	$1, R3, R3
	BNE	block

done:
	RET

// dots4 stores at R2 (advanced by 16) the four dot products of V10-V13
// with V24-V27, with SDOT if R4 is set, else SMULL/SADALP. It clobbers
// V16-V19 and R6.
TEXT dots4<>(SB), NOSPLIT|NOFRAME, $0-0
	VEOR	V16.B16, V16.B16, V16.B16
	VEOR	V17.B16, V17.B16, V17.B16
	VEOR	V18.B16, V18.B16, V18.B16
	VEOR	V19.B16, V19.B16, V19.B16
	CBZ	R4, widen
	WORD	$0x4e989550	// sdot v16.4s, v10.16b, v24.16b
	WORD	$0x4e999571	// sdot v17.4s, v11.16b, v25.16b
	WORD	$0x4e9a9592	// sdot v18.4s, v12.16b, v26.16b
	WORD	$0x4e9b95b3	// sdot v19.4s, v13.16b, v27.16b
	B	store

widen:
	WORD	$0x0e38c15c	// smull v28.8h, v10.8b, v24.8b
	WORD	$0x4e38c15d	// smull2 v29.8h, v10.16b, v24.16b
	WORD	$0x4e606b90	// sadalp v16.4s, v28.8h
	WORD	$0x4e606bb0	// sadalp v16.4s, v29.8h
	WORD	$0x0e39c17c	// smull v28.8h, v11.8b, v25.8b
	WORD	$0x4e39c17d	// smull2 v29.8h, v11.16b, v25.16b
	WORD	$0x4e606b91	// sadalp v17.4s, v28.8h
	WORD	$0x4e606bb1	// sadalp v17.4s, v29.8h
	WORD	$0x0e3ac19c	// smull v28.8h, v12.8b, v26.8b
	WORD	$0x4e3ac19d	// smull2 v29.8h, v12.16b, v26.16b
	WORD	$0x4e606b92	// sadalp v18.4s, v28.8h
	WORD	$0x4e606bb2	// sadalp v18.4s, v29.8h
	WORD	$0x0e3bc1bc	// smull v28.8h, v13.8b, v27.8b
	WORD	$0x4e3bc1bd	// smull2 v29.8h, v13.16b, v27.16b
	WORD	$0x4e606b93	// sadalp v19.4s, v28.8h
	WORD	$0x4e606bb3	// sadalp v19.4s, v29.8h

store:
	VADDV	V16.S4, V16
	VADDV	V17.S4, V17
	VADDV	V18.S4, V18
	VADDV	V19.S4, V19
	VMOV	V16.S[0], R6
	MOVW.P	R6, 4(R2)
	VMOV	V17.S[0], R6
	MOVW.P	R6, 4(R2)
	VMOV	V18.S[0], R6
	MOVW.P	R6, 4(R2)
	VMOV	V19.S[0], R6
	MOVW.P	R6, 4(R2)
	RET

// func dotsQ5_K(w []byte, q []int8, dots []int32, sdot bool)
//
// dotsQ4_K for Q5_K blocks (176 bytes: F16 d and dmin, 12 bytes of scales
// and mins, 32 bytes of fifth bits, 128 bytes of nibbles): sub-blocks 2i
// and 2i+1 take bits 2i and 2i+1 of the fifth-bit bytes as their bit 4.
TEXT ·dotsQ5_K(SB), NOSPLIT, $0-73
	MOVD	w_base+0(FP), R0
	MOVD	q_base+24(FP), R1
	MOVD	dots_base+48(FP), R2
	MOVD	dots_len+56(FP), R3
	MOVBU	sdot+72(FP), R4
	VMOVI	$15, V20.B16
	VMOVI	$1, V21.B16
	LSR	$3, R3, R3
	CBZ	R3, done

block:
	ADD	$16, R0 // past d, dmin and the scales
	VLD1.P	32(R0), [V22.B16, V23.B16]
	MOVD	$4, R5

group:
	VLD1.P	32(R0), [V0.B16, V1.B16]
	VLD1.P	64(R1), [V2.B16, V3.B16, V4.B16, V5.B16]
	VAND	V20.B16, V0.B16, V6.B16
	VAND	V20.B16, V1.B16, V7.B16
	VUSHR	$4, V0.B16, V0.B16
	VUSHR	$4, V1.B16, V1.B16
	// Bit 2i of the fifth bits to bit 4 of the low values, bit 2i+1 to
	// bit 4 of the high ones; then the next two bits down.
	VAND	V21.B16, V22.B16, V8.B16
	VAND	V21.B16, V23.B16, V9.B16
	VSHL	$4, V8.B16, V8.B16
	VSHL	$4, V9.B16, V9.B16
	VORR	V8.B16, V6.B16, V6.B16
	VORR	V9.B16, V7.B16, V7.B16
	VUSHR	$1, V22.B16, V8.B16
	VUSHR	$1, V23.B16, V9.B16
	VAND	V21.B16, V8.B16, V8.B16
	VAND	V21.B16, V9.B16, V9.B16
	VSHL	$4, V8.B16, V8.B16
	VSHL	$4, V9.B16, V9.B16
	VORR	V8.B16, V0.B16, V0.B16
	VORR	V9.B16, V1.B16, V1.B16
	VUSHR	$2, V22.B16, V22.B16
	VUSHR	$2, V23.B16, V23.B16
	VEOR	V16.B16, V16.B16, V16.B16
	VEOR	V17.B16, V17.B16, V17.B16
	CBZ	R4, widen
	WORD	$0x4e8294d0	// sdot v16.4s, v6.16b, v2.16b
	WORD	$0x4e8394f0	// sdot v16.4s, v7.16b, v3.16b
	WORD	$0x4e849411	// sdot v17.4s, v0.16b, v4.16b
	WORD	$0x4e859431	// sdot v17.4s, v1.16b, v5.16b
	B	store

widen:
	WORD	$0x0e22c0d2	// smull v18.8h, v6.8b, v2.8b
	WORD	$0x4e22c0d3	// smull2 v19.8h, v6.16b, v2.16b
	WORD	$0x4e606a50	// sadalp v16.4s, v18.8h
	WORD	$0x4e606a70	// sadalp v16.4s, v19.8h
	WORD	$0x0e23c0f2	// smull v18.8h, v7.8b, v3.8b
	WORD	$0x4e23c0f3	// smull2 v19.8h, v7.16b, v3.16b
	WORD	$0x4e606a50	// sadalp v16.4s, v18.8h
	WORD	$0x4e606a70	// sadalp v16.4s, v19.8h
	WORD	$0x0e24c012	// smull v18.8h, v0.8b, v4.8b
	WORD	$0x4e24c013	// smull2 v19.8h, v0.16b, v4.16b
	WORD	$0x4e606a51	// sadalp v17.4s, v18.8h
	WORD	$0x4e606a71	// sadalp v17.4s, v19.8h
	WORD	$0x0e25c032	// smull v18.8h, v1.8b, v5.8b
	WORD	$0x4e25c033	// smull2 v19.8h, v1.16b, v5.16b
	WORD	$0x4e606a51	// sadalp v17.4s, v18.8h
	WORD	$0x4e606a71	// sadalp v17.4s, v19.8h

store:
	VADDV	V16.S4, V16
	VADDV	V17.S4, V17
	VMOV	V16.S[0], R6
	VMOV	V17.S[0], R7
	MOVW.P	R6, 4(R2)
	MOVW.P	R7, 4(R2)
	SUBS	$1, R5, R5
	BNE	group
	SUBS	$1, R3, R3
	BNE	block

done:
	RET

// The binary16 helpers of attention and of the F16 activations: the
// rounding to binary16 is FCVTN (to nearest, ties to even, as FPCR is
// under Go) and FCVTL back, exact; four lanes at a time, then one.

// func roundF16NEON(x []float32)
//
// Rounds every element of x to the nearest binary16 value.
TEXT ·roundF16NEON(SB), NOSPLIT, $0-24
	MOVD	x_base+0(FP), R0
	MOVD	x_len+8(FP), R1
	LSR	$2, R1, R2
	AND	$3, R1, R1
	CBZ	R2, tail

loop:
	VLD1	(R0), [V0.S4]
	WORD	$0x0e216800	// fcvtn v0.4h, v0.4s
	WORD	$0x0e217800	// fcvtl v0.4s, v0.4h
	VST1.P	[V0.S4], 16(R0)
	SUBS	$1, R2, R2
	BNE	loop

tail:
	CBZ	R1, done

one:
	FMOVS	(R0), F0
	WORD	$0x1e23c000	// fcvt h0, s0
	WORD	$0x1ee24000	// fcvt s0, h0
	FMOVS.P	F0, 4(R0)
	SUBS	$1, R1, R1
	BNE	one

done:
	RET

// func scaleF16NEON(acc []float32, s float32)
//
// Sets acc[i] to acc[i]·s rounded to binary16: ggml_vec_scale_f16 on ARM
// without FP16 arithmetic (float32 products, converted back to F16).
TEXT ·scaleF16NEON(SB), NOSPLIT, $0-28
	MOVD	acc_base+0(FP), R0
	MOVD	acc_len+8(FP), R1
	FMOVS	s+24(FP), F31
	LSR	$2, R1, R2
	AND	$3, R1, R1
	CBZ	R2, tail

loop:
	VLD1	(R0), [V0.S4]
	WORD	$0x4f9f9000	// fmul v0.4s, v0.4s, v31.s[0]
	WORD	$0x0e216800	// fcvtn v0.4h, v0.4s
	WORD	$0x0e217800	// fcvtl v0.4s, v0.4h
	VST1.P	[V0.S4], 16(R0)
	SUBS	$1, R2, R2
	BNE	loop

tail:
	CBZ	R1, done

one:
	FMOVS	(R0), F0
	WORD	$0x1e3f0800	// fmul s0, s0, s31
	WORD	$0x1e23c000	// fcvt h0, s0
	WORD	$0x1ee24000	// fcvt s0, h0
	FMOVS.P	F0, 4(R0)
	SUBS	$1, R1, R1
	BNE	one

done:
	RET

// func madF16NEON(acc, v []float32, s float32)
//
// Sets acc[i] to fma(v[i], s, acc[i]) rounded to binary16: ggml_vec_mad_f16
// on ARM without FP16 arithmetic (fused float32 multiply-adds, converted
// back to F16). v has at least len(acc) elements.
TEXT ·madF16NEON(SB), NOSPLIT, $0-52
	MOVD	acc_base+0(FP), R0
	MOVD	acc_len+8(FP), R1
	MOVD	v_base+24(FP), R3
	FMOVS	s+48(FP), F31
	LSR	$2, R1, R2
	AND	$3, R1, R1
	CBZ	R2, tail

loop:
	VLD1	(R0), [V0.S4]
	VLD1.P	16(R3), [V1.S4]
	WORD	$0x4f9f1020	// fmla v0.4s, v1.4s, v31.s[0]
	WORD	$0x0e216800	// fcvtn v0.4h, v0.4s
	WORD	$0x0e217800	// fcvtl v0.4s, v0.4h
	VST1.P	[V0.S4], 16(R0)
	SUBS	$1, R2, R2
	BNE	loop

tail:
	CBZ	R1, done

one:
	FMOVS	(R0), F0
	FMOVS.P	4(R3), F1
	WORD	$0x1f1f0020	// fmadd s0, s1, s31, s0
	WORD	$0x1e23c000	// fcvt h0, s0
	WORD	$0x1ee24000	// fcvt s0, h0
	FMOVS.P	F0, 4(R0)
	SUBS	$1, R1, R1
	BNE	one

done:
	RET
