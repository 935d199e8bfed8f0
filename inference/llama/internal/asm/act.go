package main

import (
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// expfConsts are the constants of ggml's ggml_v_expf (vec.h, adapted from
// ARM's optimized routines); expfConst holds their addresses.
var expfConsts = []uint32{
	math.Float32bits(0x1.8p23),       // 0: r, the round-to-integer shift
	math.Float32bits(0x1.715476p+0),  // 1: log2(e)
	math.Float32bits(0x1.62e4p-1),    // 2: ln(2), high part
	math.Float32bits(0x1.7f7d1cp-20), // 3: ln(2), low part
	math.Float32bits(0x1.0e4020p-7),  // 4: polynomial, highest degree first
	math.Float32bits(0x1.573e2ep-5),  // 5
	math.Float32bits(0x1.555e66p-3),  // 6
	math.Float32bits(0x1.fffdb6p-2),  // 7
	math.Float32bits(0x1.ffffecp-1),  // 8
	math.Float32bits(1),              // 9
	0x7fffffff,                       // 10: |x| mask
	math.Float32bits(126),            // 11
	math.Float32bits(192),            // 12
	0x82000000,                       // 13
	0x7f000000,                       // 14
}

var expfConst []Mem

func expfTable() {
	tab := GLOBL("expfConsts", RODATA|NOPTR)
	for i, v := range expfConsts {
		DATA(4*i, U32(v))
		expfConst = append(expfConst, tab.Offset(4*i))
	}
}

// bcast returns a YMM register with every lane set to expfConsts[i].
func bcast(i int) VecVirtual {
	y := YMM()
	VBROADCASTSS(expfConst[i], y)
	return y
}

// vexpf emits ggml's AVX2 ggml_v_expf of x into a new register: the same
// fused multiply-adds in the same order, the slow path (|n| > 126: results
// near overflow or underflow) only when a lane needs it, as ggml branches.
// label prefixes the labels of the slow path.
func vexpf(x VecVirtual, label string) VecVirtual {
	// z = fma(x, log2e, r); n = z - r
	z, n := bcast(0), YMM()
	VFMADD231PS(bcast(1), x, z)
	VSUBPS(bcast(0), z, n)
	// b = fnma(n, ln2lo, fnma(n, ln2hi, x))
	b := YMM()
	VMOVAPS(x, b)
	VFNMADD231PS(bcast(2), n, b)
	VFNMADD231PS(bcast(3), n, b)
	// e = z << 23; k = e + bits(1)
	e, k := YMM(), YMM()
	VPSLLD(U8(23), z, e)
	VPADDD(bcast(9), e, k)
	// c = |n| > 126
	an, c := YMM(), YMM()
	VANDPS(bcast(10), n, an)
	VCMPPS(U8(0x1e), bcast(11), an, c) // _CMP_GT_OQ
	// u = b·b; j = fma(fma(fma(p0, b, p1), u, fma(p2, b, p3)), u, p4·b)
	u := YMM()
	VMULPS(b, b, u)
	t1, t2, j := bcast(5), bcast(7), YMM()
	VFMADD231PS(bcast(4), b, t1)
	VFMADD231PS(bcast(6), b, t2)
	VFMADD231PS(t1, u, t2)
	VMULPS(bcast(8), b, j)
	VFMADD231PS(t2, u, j)
	// Fast path: fma(j, k, k).
	res := YMM()
	VMOVAPS(k, res)
	VFMADD231PS(j, k, res)
	mask := GP32()
	VMOVMSKPS(c, mask)
	TESTL(mask, mask)
	JZ(LabelRef(label + "done"))
	Comment("Slow path: some lane's |n| > 126.")
	zero, g := YMM(), YMM()
	VXORPS(zero, zero, zero)
	VCMPPS(U8(0x12), zero, n, g) // n <= 0, _CMP_LE_OQ
	VANDPS(bcast(13), g, g)
	s1, s2 := YMM(), YMM()
	VPADDD(bcast(14), g, s1)
	VPSUBD(g, e, s2)
	d := YMM()
	VCMPPS(U8(0x1e), bcast(12), an, d) // |n| > 192
	r1, r2 := YMM(), YMM()
	VMULPS(s1, s1, r1)
	VMOVAPS(s2, r2)
	VFMADD231PS(j, s2, r2) // fma(s2, j, s2)
	VMULPS(s1, r2, r2)
	// res = d ? r1 : (c ? r2 : res)
	VANDPS(c, r2, r2)
	VANDNPS(res, c, res)
	VORPS(r2, res, res)
	VANDPS(d, r1, r1)
	VANDNPS(res, d, res)
	VORPS(r1, res, res)
	Label(label + "done")
	return res
}

func siluMul() {
	TEXT("siluMulAVX2", NOSPLIT, "func(g, u []float32)")
	Pragma("noescape")
	Doc("siluMulAVX2 sets g[i] to silu(g[i])·u[i] for i < len(g) rounded down to a multiple of 8:",
		"ggml's AVX2 ggml_vec_swiglu_f32, x/(1+ggml_v_expf(-x)) times u, 8 lanes at a time.")
	gp := Mem{Base: Load(Param("g").Base(), GP64())}
	up := Mem{Base: Load(Param("u").Base(), GP64())}
	n := Load(Param("g").Len(), GP64())
	SHRQ(U8(3), n)
	Label("siluloop")
	CMPQ(n, U32(0))
	JE(LabelRef("siludone"))
	x, nx := YMM(), YMM()
	VMOVUPS(gp, x)
	VXORPS(nx, nx, nx)
	VSUBPS(x, nx, nx) // 0 - x
	ex := vexpf(nx, "siluexp")
	VADDPS(bcast(9), ex, ex)
	VDIVPS(ex, x, x)
	VMULPS(up, x, x)
	VMOVUPS(x, gp)
	ADDQ(U32(32), gp.Base)
	ADDQ(U32(32), up.Base)
	DECQ(n)
	JMP(LabelRef("siluloop"))
	Label("siludone")
	VZEROUPPER()
	RET()
}

func expf8() {
	TEXT("expfAVX2", NOSPLIT, "func(x []float32)")
	Pragma("noescape")
	Doc("expfAVX2 replaces x[i] by ggml's AVX2 ggml_v_expf(x[i]) for i < len(x) rounded down to a",
		"multiple of 8 (for tests of the exponential on its own).")
	xp := Mem{Base: Load(Param("x").Base(), GP64())}
	n := Load(Param("x").Len(), GP64())
	SHRQ(U8(3), n)
	Label("exploop")
	CMPQ(n, U32(0))
	JE(LabelRef("expdone"))
	x := YMM()
	VMOVUPS(xp, x)
	y := vexpf(x, "expexp")
	VMOVUPS(y, xp)
	ADDQ(U32(32), xp.Base)
	DECQ(n)
	JMP(LabelRef("exploop"))
	Label("expdone")
	VZEROUPPER()
	RET()
}
