// Command kvcache generates inference/llama's amd64 kernels for the F16 KV
// cache (AVX2, FMA and F16C) with avo: the kernels of attention.go that
// read cache rows stored as binary16. It is a program of its own, beside
// the generator of the matrix kernels (..), so that each owns its output
// files. Run it through go generate in inference/llama:
//
//	go generate ./inference/llama
//
// Each kernel computes bitwise what the F32 kernel it mirrors computes on
// the same values widened to float32 (dotF32AVX2, madF16AVX2); tests in
// inference/llama check that, and compare them with their pure-Go twins.
package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

func main() {
	ConstraintExpr("!purego")
	dotKF16()
	madVF16()
	Generate()
}

// hsum returns the sum of the eight lanes of acc in the low lane of an XMM
// register, in the order of the matrix kernels' hsum.
func hsum(acc VecVirtual) VecVirtual {
	hi, s, t := XMM(), XMM(), XMM()
	VEXTRACTF128(U8(1), acc, hi)
	VADDPS(hi, acc.AsX(), s)
	VPERMILPS(U8(0x0e), s, t)
	VADDPS(t, s, s)
	VPERMILPS(U8(0x01), s, t)
	VADDSS(t, s, s)
	return s
}

// f16 loads the binary16 value at m as a float32 in the low lane of an XMM register.
func f16(m Mem) VecVirtual {
	r, x := GP32(), XMM()
	MOVWLZX(m, r)
	VMOVD(r, x)
	VCVTPH2PS(x, x)
	return x
}

// dotKF16 mirrors dotF32AVX2 (32 lanes in four accumulators, then 8 lanes
// into the first, the accumulators added pairwise, the lanes summed, a
// scalar tail of FMAs), with the second operand read as binary16.
func dotKF16() {
	TEXT("dotKF16AVX2", NOSPLIT, "func(q []float32, k []uint16) float32")
	Pragma("noescape")
	Doc("dotKF16AVX2 returns the inner product of q and the binary16 values k[:len(q)], bitwise",
		"dotF32AVX2(q, k widened to float32): float32 FMAs in 32 lanes, summed at the end",
		"(ggml_vec_dot_f16 of llama.cpp's AVX2 build, as its flash attention runs on an F16 cache).")
	a := Mem{Base: Load(Param("q").Base(), GP64())}
	b := Mem{Base: Load(Param("k").Base(), GP64())}
	n := Load(Param("q").Len(), GP64())
	acc := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for _, r := range acc {
		VXORPS(r, r, r)
	}
	Label("kf16loop32")
	CMPQ(n, U32(32))
	JL(LabelRef("kf16loop8"))
	for i, r := range acc {
		x, y := YMM(), YMM()
		VMOVUPS(a.Offset(32*i), x)
		VCVTPH2PS(b.Offset(16*i), y)
		VFMADD231PS(y, x, r)
	}
	ADDQ(U32(128), a.Base)
	ADDQ(U32(64), b.Base)
	SUBQ(U32(32), n)
	JMP(LabelRef("kf16loop32"))
	Label("kf16loop8")
	CMPQ(n, U32(8))
	JL(LabelRef("kf16reduce"))
	x, y := YMM(), YMM()
	VMOVUPS(a, x)
	VCVTPH2PS(b, y)
	VFMADD231PS(y, x, acc[0])
	ADDQ(U32(32), a.Base)
	ADDQ(U32(16), b.Base)
	SUBQ(U32(8), n)
	JMP(LabelRef("kf16loop8"))
	Label("kf16reduce")
	VADDPS(acc[1], acc[0], acc[0])
	VADDPS(acc[3], acc[2], acc[2])
	VADDPS(acc[2], acc[0], acc[0])
	s := hsum(acc[0])
	Label("kf16tail")
	CMPQ(n, U32(0))
	JE(LabelRef("kf16done"))
	t := XMM()
	VMOVSS(a, t)
	VFMADD231SS(f16(b), t, s)
	ADDQ(U32(4), a.Base)
	ADDQ(U32(2), b.Base)
	DECQ(n)
	JMP(LabelRef("kf16tail"))
	Label("kf16done")
	VZEROUPPER()
	Store(s, ReturnIndex(0))
	RET()
}

// madVF16 mirrors madF16AVX2, with v read as binary16.
func madVF16() {
	TEXT("madVF16AVX2", NOSPLIT, "func(acc []float32, v []uint16, s float32)")
	Pragma("noescape")
	Doc("madVF16AVX2 sets acc[i] to fma(v[i], s, acc[i]) rounded to binary16, v[:len(acc)] being",
		"binary16 values: bitwise madF16AVX2(acc, v widened to float32, s), ggml_vec_mad_f16 on an",
		"F16 accumulator and an F16 V cache.")
	acc := Mem{Base: Load(Param("acc").Base(), GP64())}
	v := Mem{Base: Load(Param("v").Base(), GP64())}
	n := Load(Param("acc").Len(), GP64())
	s := Load(Param("s"), XMM())
	sy := YMM()
	VBROADCASTSS(s, sy)
	Label("vf16loop8")
	CMPQ(n, U32(8))
	JL(LabelRef("vf16tail"))
	a, w, h := YMM(), YMM(), XMM()
	VMOVUPS(acc, a)
	VCVTPH2PS(v, w)
	VFMADD231PS(w, sy, a)
	VCVTPS2PH(U8(0), a, h)
	VCVTPH2PS(h, a)
	VMOVUPS(a, acc)
	ADDQ(U32(32), acc.Base)
	ADDQ(U32(16), v.Base)
	SUBQ(U32(8), n)
	JMP(LabelRef("vf16loop8"))
	Label("vf16tail")
	CMPQ(n, U32(0))
	JE(LabelRef("vf16done"))
	t := XMM()
	VMOVSS(acc, t)
	VFMADD231SS(f16(v), s, t)
	VCVTPS2PH(U8(0), t, t)
	VCVTPH2PS(t, t)
	VMOVSS(t, acc)
	ADDQ(U32(4), acc.Base)
	ADDQ(U32(2), v.Base)
	DECQ(n)
	JMP(LabelRef("vf16tail"))
	Label("vf16done")
	VZEROUPPER()
	RET()
}
