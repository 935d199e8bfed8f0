// Command asm generates inference/llama's amd64 kernels (AVX2, FMA and F16C)
// with avo. It is a module of its own so that avo is a dependency of the
// generator only, never of mwpeer. Run it through go generate in
// inference/llama:
//
//	go generate ./inference/llama
//
// Every kernel has a pure-Go twin in inference/llama (the *Generic
// functions) that tests compare it with; the integer parts are exact, the
// float sums differ only in order.
package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

func main() {
	ConstraintExpr("!purego")
	dotF32()
	dotF16()
	tileF16()
	dotQ8_0()
	tileQ8_0()
	dotQ4_0()
	dotQ4_K()
	tileQ4_K()
	dotQ5_K()
	tileQ5_K()
	dotQ6_K()
	tileQ6_K()
	roundF16()
	madF16()
	scaleF16()
	expfTable()
	siluMul()
	expf8()
	Generate()
}

// hsum returns the sum of the eight lanes of acc in the low lane of an XMM register.
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

// bytes returns a YMM register with every byte set to b.
func bytes(b byte) VecVirtual {
	r, y := GP32(), YMM()
	MOVL(U32(uint32(b)*0x01010101), r)
	VMOVD(r, y.AsX())
	VPBROADCASTD(y.AsX(), y)
	return y
}

// words returns a YMM register with every int16 set to w.
func words(w uint16) VecVirtual {
	r, y := GP32(), YMM()
	MOVL(U32(uint32(w)*0x00010001), r)
	VMOVD(r, y.AsX())
	VPBROADCASTD(y.AsX(), y)
	return y
}

func dotF32() {
	TEXT("dotF32AVX2", NOSPLIT, "func(a, b []float32) float32")
	Pragma("noescape")
	Doc("dotF32AVX2 returns the inner product of a and b[:len(a)]: float32 FMAs in 32 lanes, summed at the end.")
	a := Mem{Base: Load(Param("a").Base(), GP64())}
	b := Mem{Base: Load(Param("b").Base(), GP64())}
	n := Load(Param("a").Len(), GP64())
	acc := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for _, r := range acc {
		VXORPS(r, r, r)
	}
	Label("f32loop32")
	CMPQ(n, U32(32))
	JL(LabelRef("f32loop8"))
	for i, r := range acc {
		x := YMM()
		VMOVUPS(a.Offset(32*i), x)
		VFMADD231PS(b.Offset(32*i), x, r)
	}
	ADDQ(U32(128), a.Base)
	ADDQ(U32(128), b.Base)
	SUBQ(U32(32), n)
	JMP(LabelRef("f32loop32"))
	Label("f32loop8")
	CMPQ(n, U32(8))
	JL(LabelRef("f32reduce"))
	x := YMM()
	VMOVUPS(a, x)
	VFMADD231PS(b, x, acc[0])
	ADDQ(U32(32), a.Base)
	ADDQ(U32(32), b.Base)
	SUBQ(U32(8), n)
	JMP(LabelRef("f32loop8"))
	Label("f32reduce")
	VADDPS(acc[1], acc[0], acc[0])
	VADDPS(acc[3], acc[2], acc[2])
	VADDPS(acc[2], acc[0], acc[0])
	s := hsum(acc[0])
	Label("f32tail")
	CMPQ(n, U32(0))
	JE(LabelRef("f32done"))
	t := XMM()
	VMOVSS(a, t)
	VFMADD231SS(b, t, s)
	ADDQ(U32(4), a.Base)
	ADDQ(U32(4), b.Base)
	DECQ(n)
	JMP(LabelRef("f32tail"))
	Label("f32done")
	VZEROUPPER()
	Store(s, ReturnIndex(0))
	RET()
}

func dotF16() {
	TEXT("dotF16AVX2", NOSPLIT, "func(w []byte, x []float32) float32")
	Pragma("noescape")
	Doc("dotF16AVX2 returns the inner product of the binary16 values in w (2·len(x) bytes) and x,",
		"converted with F16C: FMAs into two accumulators of 8 lanes (elements 16i..16i+7 and",
		"16i+8..16i+15), added, then the lanes summed; a tail of 8 goes to the first, a tail of",
		"fewer is added one by one. tileF16AVX2 computes exactly this for lengths multiple of 16.")
	w := Mem{Base: Load(Param("w").Base(), GP64())}
	b := Mem{Base: Load(Param("x").Base(), GP64())}
	n := Load(Param("x").Len(), GP64())
	acc := []VecVirtual{YMM(), YMM()}
	for _, r := range acc {
		VXORPS(r, r, r)
	}
	Label("f16loop16")
	CMPQ(n, U32(16))
	JL(LabelRef("f16loop8"))
	for i, r := range acc {
		x := YMM()
		VCVTPH2PS(w.Offset(16*i), x)
		VFMADD231PS(b.Offset(32*i), x, r)
	}
	ADDQ(U32(32), w.Base)
	ADDQ(U32(64), b.Base)
	SUBQ(U32(16), n)
	JMP(LabelRef("f16loop16"))
	Label("f16loop8")
	CMPQ(n, U32(8))
	JL(LabelRef("f16reduce"))
	x := YMM()
	VCVTPH2PS(w, x)
	VFMADD231PS(b, x, acc[0])
	ADDQ(U32(16), w.Base)
	ADDQ(U32(32), b.Base)
	SUBQ(U32(8), n)
	Label("f16reduce")
	VADDPS(acc[1], acc[0], acc[0])
	s := hsum(acc[0])
	Label("f16tail")
	CMPQ(n, U32(0))
	JE(LabelRef("f16done"))
	t := f16(w)
	VFMADD231SS(b, t, s)
	ADDQ(U32(2), w.Base)
	ADDQ(U32(4), b.Base)
	DECQ(n)
	JMP(LabelRef("f16tail"))
	Label("f16done")
	VZEROUPPER()
	Store(s, ReturnIndex(0))
	RET()
}

func tileF16() {
	TEXT("tileF16AVX2", NOSPLIT, "func(w []byte, wstride int, x []float32, xstride int, n int, out *[6]float32)")
	Pragma("noescape")
	Doc("tileF16AVX2 sets out[2i+j] to dotF16AVX2 of weight row i (at w+i·wstride bytes, i < 3)",
		"and activation row j (at x+j·xstride elements, j < 2), n elements each, n a multiple of 16:",
		"each weight block is converted once for both rows, bitwise the same results.")
	wp := Load(Param("w").Base(), GP64())
	ws := Load(Param("wstride"), GP64())
	xp := Load(Param("x").Base(), GP64())
	xs := Load(Param("xstride"), GP64())
	n := Load(Param("n"), GP64())
	w := []Register{wp, GP64(), GP64()}
	MOVQ(wp, w[1])
	ADDQ(ws, w[1])
	MOVQ(w[1], w[2])
	ADDQ(ws, w[2])
	x := []Register{xp, GP64()}
	SHLQ(U8(2), xs)
	MOVQ(xp, x[1])
	ADDQ(xs, x[1])
	SHLQ(U8(1), n) // bytes of a weight row
	k := GP64()
	XORQ(k, k)
	// acc[i][j][p]: weight row i, activation row j, accumulator p.
	var acc [3][2][2]VecVirtual
	for i := range acc {
		for j := range acc[i] {
			for p := range acc[i][j] {
				acc[i][j][p] = YMM()
				VXORPS(acc[i][j][p], acc[i][j][p], acc[i][j][p])
			}
		}
	}
	Label("tileloop")
	CMPQ(k, n)
	JGE(LabelRef("tilereduce"))
	for p := 0; p < 2; p++ {
		var wv [3]VecVirtual
		for i := range wv {
			wv[i] = YMM()
			VCVTPH2PS(Mem{Base: w[i], Index: k, Scale: 1, Disp: 16 * p}, wv[i])
		}
		for j := range x {
			xv := YMM()
			VMOVUPS(Mem{Base: x[j], Index: k, Scale: 2, Disp: 32 * p}, xv)
			for i := range wv {
				VFMADD231PS(xv, wv[i], acc[i][j][p])
			}
		}
	}
	ADDQ(U32(32), k)
	JMP(LabelRef("tileloop"))
	Label("tilereduce")
	out := Mem{Base: Load(Param("out"), GP64())}
	for i := range acc {
		for j := range acc[i] {
			VADDPS(acc[i][j][1], acc[i][j][0], acc[i][j][0])
			s := hsum(acc[i][j][0])
			VMOVSS(s, out.Offset(4*(2*i+j)))
		}
	}
	VZEROUPPER()
	RET()
}

// q8block adds to acc the dot product of 32 signed weights wq and 32 int8
// activations at q, scaled by the broadcast scale d: ggml's
// mul_sum_i8_pairs_float (|w| times q with w's sign, pairs to int16, to int32).
func q8block(wq VecVirtual, q Mem, ones, d, acc VecVirtual) {
	ax, sy, y := YMM(), YMM(), YMM()
	VMOVDQU(q, y)
	VPSIGNB(wq, wq, ax)
	VPSIGNB(wq, y, sy)
	VPMADDUBSW(sy, ax, sy)
	VPMADDWD(ones, sy, sy)
	VCVTDQ2PS(sy, sy)
	VFMADD231PS(sy, d, acc)
}

// blockScale returns the broadcast product of the binary16 scale at w and the float32 scale at d.
func blockScale(w, d Mem) VecVirtual {
	x := f16(w)
	VMULSS(d, x, x)
	y := YMM()
	VBROADCASTSS(x, y)
	return y
}

func dotQ8_0() {
	TEXT("dotQ8_0AVX2", NOSPLIT, "func(w []byte, q []int8, d []float32) float32")
	Pragma("noescape")
	Doc("dotQ8_0AVX2 is ggml's AVX2 vec_dot_q8_0_q8_0 over len(d) blocks: w holds 34-byte",
		"Q8_0 blocks, q and d the activations' int8 values and scales.")
	w := Mem{Base: Load(Param("w").Base(), GP64())}
	q := Mem{Base: Load(Param("q").Base(), GP64())}
	d := Mem{Base: Load(Param("d").Base(), GP64())}
	n := Load(Param("d").Len(), GP64())
	ones := words(1)
	// One accumulator, as ggml (and llamafile's tinyBLAS_Q0_AVX for
	// prompts): every block's FMA in order, so the float sums are ggml's.
	acc0 := YMM()
	VXORPS(acc0, acc0, acc0)
	Label("q8loop2")
	CMPQ(n, U32(2))
	JL(LabelRef("q8loop1"))
	for i := range 2 {
		ds := blockScale(w.Offset(34*i), d.Offset(4*i))
		wq := YMM()
		VMOVDQU(w.Offset(34*i+2), wq)
		q8block(wq, q.Offset(32*i), ones, ds, acc0)
	}
	ADDQ(U32(68), w.Base)
	ADDQ(U32(64), q.Base)
	ADDQ(U32(8), d.Base)
	SUBQ(U32(2), n)
	JMP(LabelRef("q8loop2"))
	Label("q8loop1")
	CMPQ(n, U32(0))
	JE(LabelRef("q8done"))
	ds := blockScale(w, d)
	wq := YMM()
	VMOVDQU(w.Offset(2), wq)
	q8block(wq, q, ones, ds, acc0)
	Label("q8done")
	s := hsum(acc0)
	VZEROUPPER()
	Store(s, ReturnIndex(0))
	RET()
}

func dotQ4_0() {
	TEXT("dotQ4_0AVX2", NOSPLIT, "func(w []byte, q []int8, d []float32) float32")
	Pragma("noescape")
	Doc("dotQ4_0AVX2 is ggml's AVX2 vec_dot_q4_0_q8_0 over len(d) blocks: w holds 18-byte",
		"Q4_0 blocks, q and d the activations' int8 values and scales.")
	w := Mem{Base: Load(Param("w").Base(), GP64())}
	q := Mem{Base: Load(Param("q").Base(), GP64())}
	d := Mem{Base: Load(Param("d").Base(), GP64())}
	n := Load(Param("d").Len(), GP64())
	ones, low, eight := words(1), bytes(0x0f), bytes(8)
	acc := YMM()
	VXORPS(acc, acc, acc)
	Label("q4loop")
	CMPQ(n, U32(0))
	JE(LabelRef("q4done"))
	ds := blockScale(w, d)
	lo, hi, wq := XMM(), XMM(), YMM()
	VMOVDQU(w.Offset(2), lo)
	VPSRLW(U8(4), lo, hi)
	VINSERTI128(U8(1), hi, lo.AsY(), wq)
	VPAND(low, wq, wq)
	VPSUBB(eight, wq, wq)
	q8block(wq, q, ones, ds, acc)
	ADDQ(U32(18), w.Base)
	ADDQ(U32(32), q.Base)
	ADDQ(U32(4), d.Base)
	DECQ(n)
	JMP(LabelRef("q4loop"))
	Label("q4done")
	s := hsum(acc)
	VZEROUPPER()
	Store(s, ReturnIndex(0))
	RET()
}

func dotQ4_K() {
	TEXT("dotQ4_KAVX2", NOSPLIT, "func(w []byte, q []int8, d []float32, bsum []int32) float32")
	Pragma("noescape")
	Doc("dotQ4_KAVX2 is ggml's AVX2 vec_dot_q4_K_q8_K over len(d) blocks: w holds 144-byte",
		"Q4_K blocks; q, d and bsum the activations' int8 values, scales and sums of 16.")
	w := Mem{Base: Load(Param("w").Base(), GP64())}
	q := Mem{Base: Load(Param("q").Base(), GP64())}
	d := Mem{Base: Load(Param("d").Base(), GP64())}
	bs := Mem{Base: Load(Param("bsum").Base(), GP64())}
	n := Load(Param("d").Len(), GP64())
	low := bytes(0x0f)
	acc, accm := YMM(), YMM()
	VXORPS(acc, acc, acc)
	VXORPS(accm, accm, accm)
	// utmp: the 8 scales then the 8 mins as bytes; sc16: the scales as int16.
	utmp := AllocLocal(16)
	sc16 := AllocLocal(32)
	Label("q4kloop")
	CMPQ(n, U32(0))
	JE(LabelRef("q4kdone"))

	unpackScalesK4(w, utmp, sc16)

	Comment("Mins: dmin·d8 · Σ min_j · (bsum[2j] + bsum[2j+1]).")
	mins, s0, s1 := YMM(), YMM(), YMM()
	VPMOVZXBD(utmp.Offset(8), mins)
	VMOVDQU(bs, s0)
	VMOVDQU(bs.Offset(32), s1)
	VPHADDD(s1, s0, s0)
	VPERMQ(U8(0xd8), s0, s0)
	VPMULLD(mins, s0, s0)
	VCVTDQ2PS(s0, s0)
	dm := f16(w.Offset(2))
	VMULSS(d, dm, dm)
	dmy := YMM()
	VBROADCASTSS(dm, dmy)
	VFNMADD231PS(s0, dmy, accm)

	Comment("Quants: four groups of 64, low nibbles then high nibbles.")
	sumi := YMM()
	VPXOR(sumi, sumi, sumi)
	for j := 0; j < 4; j++ {
		bits, lo, hi, sl, sh, y := YMM(), YMM(), YMM(), YMM(), YMM(), YMM()
		VMOVDQU(w.Offset(16+32*j), bits)
		VPAND(low, bits, lo)
		VPSRLW(U8(4), bits, hi)
		VPAND(low, hi, hi)
		VMOVDQU(q.Offset(64*j), y)
		VPMADDUBSW(y, lo, lo)
		VPBROADCASTW(sc16.Offset(4*j), sl)
		VPMADDWD(sl, lo, lo)
		VMOVDQU(q.Offset(64*j+32), y)
		VPMADDUBSW(y, hi, hi)
		VPBROADCASTW(sc16.Offset(4*j+2), sh)
		VPMADDWD(sh, hi, hi)
		VPADDD(lo, sumi, sumi)
		VPADDD(hi, sumi, sumi)
	}
	VCVTDQ2PS(sumi, sumi)
	ds := blockScale(w, d)
	VFMADD231PS(sumi, ds, acc)

	ADDQ(U32(144), w.Base)
	ADDQ(U32(256), q.Base)
	ADDQ(U32(4), d.Base)
	ADDQ(U32(64), bs.Base)
	DECQ(n)
	JMP(LabelRef("q4kloop"))
	Label("q4kdone")
	VADDPS(accm, acc, acc)
	s := hsum(acc)
	VZEROUPPER()
	Store(s, ReturnIndex(0))
	RET()
}

// q6kShuffles are the VPSHUFB masks of Q6_K scales: mask i picks scale
// bytes 2i (eight times) then 2i+1 (eight times).
var q6kShuffles [8]Mem

func dotQ6_K() {
	tab := GLOBL("q6kScaleShuffle", RODATA|NOPTR)
	for i := range q6kShuffles {
		for k := 0; k < 16; k++ {
			DATA(16*i+k, U8(2*i+k/8))
		}
		q6kShuffles[i] = tab.Offset(16 * i)
	}
	shuf := q6kShuffles

	TEXT("dotQ6_KAVX2", NOSPLIT, "func(w []byte, q []int8, d []float32) float32")
	Pragma("noescape")
	Doc("dotQ6_KAVX2 is ggml's AVX2 vec_dot_q6_K_q8_K over len(d) blocks: w holds 210-byte",
		"Q6_K blocks; q and d the activations' int8 values and scales.")
	w := Mem{Base: Load(Param("w").Base(), GP64())}
	q := Mem{Base: Load(Param("q").Base(), GP64())}
	d := Mem{Base: Load(Param("d").Base(), GP64())}
	n := Load(Param("d").Len(), GP64())
	low, three, m32 := bytes(0x0f), bytes(3), bytes(32)
	acc := YMM()
	VXORPS(acc, acc, acc)
	Label("q6kloop")
	CMPQ(n, U32(0))
	JE(LabelRef("q6kdone"))
	sc := XMM()
	VMOVDQU(w.Offset(192), sc)
	sumi := YMM()
	VPXOR(sumi, sumi, sumi)
	for half := 0; half < 2; half++ {
		b1, b2, bh := YMM(), YMM(), YMM()
		VMOVDQU(w.Offset(64*half), b1)
		VMOVDQU(w.Offset(64*half+32), b2)
		VMOVDQU(w.Offset(128+32*half), bh)
		for k := 0; k < 4; k++ {
			// Element group k of 32: low or high nibbles of b1 or b2, and bits 2k, 2k+1 of bh.
			x, h := YMM(), YMM()
			src := b1
			if k%2 == 1 {
				src = b2
			}
			if k < 2 {
				VPAND(low, src, x)
			} else {
				VPSRLW(U8(4), src, x)
				VPAND(low, x, x)
			}
			if k == 0 {
				VPAND(three, bh, h)
			} else {
				VPSRLW(U8(2*k), bh, h)
				VPAND(three, h, h)
			}
			VPSLLW(U8(4), h, h)
			VPOR(h, x, x)
			y, ys, s16, sx := YMM(), YMM(), YMM(), XMM()
			VMOVDQU(q.Offset(128*half+32*k), y)
			VPMADDUBSW(y, m32, ys)
			VPMADDUBSW(y, x, x)
			VPSUBW(ys, x, x)
			VPSHUFB(shuf[4*half+k], sc, sx)
			VPMOVSXBW(sx, s16)
			VPMADDWD(s16, x, x)
			VPADDD(x, sumi, sumi)
		}
	}
	VCVTDQ2PS(sumi, sumi)
	ds := blockScale(w.Offset(208), d)
	VFMADD231PS(sumi, ds, acc)
	ADDQ(U32(210), w.Base)
	ADDQ(U32(256), q.Base)
	ADDQ(U32(4), d.Base)
	DECQ(n)
	JMP(LabelRef("q6kloop"))
	Label("q6kdone")
	s := hsum(acc)
	VZEROUPPER()
	Store(s, ReturnIndex(0))
	RET()
}

func roundF16() {
	TEXT("roundF16AVX2", NOSPLIT, "func(x []float32)")
	Pragma("noescape")
	Doc("roundF16AVX2 rounds every element of x to the nearest binary16 value (ties to even), with F16C.")
	x := Mem{Base: Load(Param("x").Base(), GP64())}
	n := Load(Param("x").Len(), GP64())
	Label("r16loop8")
	CMPQ(n, U32(8))
	JL(LabelRef("r16tail"))
	y, h := YMM(), XMM()
	VMOVUPS(x, y)
	VCVTPS2PH(U8(0), y, h)
	VCVTPH2PS(h, y)
	VMOVUPS(y, x)
	ADDQ(U32(32), x.Base)
	SUBQ(U32(8), n)
	JMP(LabelRef("r16loop8"))
	Label("r16tail")
	CMPQ(n, U32(0))
	JE(LabelRef("r16done"))
	t := XMM()
	VMOVSS(x, t)
	VCVTPS2PH(U8(0), t, t)
	VCVTPH2PS(t, t)
	VMOVSS(t, x)
	ADDQ(U32(4), x.Base)
	DECQ(n)
	JMP(LabelRef("r16tail"))
	Label("r16done")
	VZEROUPPER()
	RET()
}

// f16update emits acc[i] = binary16(op(acc[i], ...)) over len(acc)
// elements, 8 at a time with a scalar tail; op8 and op1 emit the operation
// on a YMM and an XMM register and advance their other operands.
func f16update(name string, acc Mem, n Register, op8, op1 func(a VecVirtual)) {
	Label(name + "loop8")
	CMPQ(n, U32(8))
	JL(LabelRef(name + "tail"))
	a, h := YMM(), XMM()
	VMOVUPS(acc, a)
	op8(a)
	VCVTPS2PH(U8(0), a, h)
	VCVTPH2PS(h, a)
	VMOVUPS(a, acc)
	ADDQ(U32(32), acc.Base)
	SUBQ(U32(8), n)
	JMP(LabelRef(name + "loop8"))
	Label(name + "tail")
	CMPQ(n, U32(0))
	JE(LabelRef(name + "done"))
	t := XMM()
	VMOVSS(acc, t)
	op1(t)
	VCVTPS2PH(U8(0), t, t)
	VCVTPH2PS(t, t)
	VMOVSS(t, acc)
	ADDQ(U32(4), acc.Base)
	DECQ(n)
	JMP(LabelRef(name + "tail"))
	Label(name + "done")
	VZEROUPPER()
	RET()
}

func madF16() {
	TEXT("madF16AVX2", NOSPLIT, "func(acc, v []float32, s float32)")
	Pragma("noescape")
	Doc("madF16AVX2 sets acc[i] to fma(v[i], s, acc[i]) rounded to binary16: ggml's",
		"ggml_vec_mad_f16 on an F16 accumulator, as flash attention uses it.")
	acc := Mem{Base: Load(Param("acc").Base(), GP64())}
	v := Mem{Base: Load(Param("v").Base(), GP64())}
	n := Load(Param("acc").Len(), GP64())
	s := Load(Param("s"), XMM())
	sy := YMM()
	VBROADCASTSS(s, sy)
	f16update("mad", acc, n, func(a VecVirtual) {
		VFMADD231PS(v, sy, a)
		ADDQ(U32(32), v.Base)
	}, func(a VecVirtual) {
		VFMADD231SS(v, s, a)
		ADDQ(U32(4), v.Base)
	})
}

func scaleF16() {
	TEXT("scaleF16AVX2", NOSPLIT, "func(acc []float32, s float32)")
	Pragma("noescape")
	Doc("scaleF16AVX2 sets acc[i] to acc[i]·s rounded to binary16 (ggml_vec_scale_f16).")
	acc := Mem{Base: Load(Param("acc").Base(), GP64())}
	n := Load(Param("acc").Len(), GP64())
	s := Load(Param("s"), XMM())
	sy := YMM()
	VBROADCASTSS(s, sy)
	f16update("scale", acc, n, func(a VecVirtual) { VMULPS(sy, a, a) }, func(a VecVirtual) { VMULSS(s, a, a) })
}

func tileQ8_0() {
	ones := GLOBL("int16Ones", RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(2*i, U16(1))
	}
	TEXT("tileQ8_0AVX2", NOSPLIT, "func(w []byte, wstride int, q []int8, d []float32, cols int, out *[4]float32)")
	Pragma("noescape")
	Doc("tileQ8_0AVX2 sets out[2i+j] to dotQ8_0AVX2 of Q8_0 weight row i (at w+i·wstride bytes,",
		"i < 2) and activation row j (q+j·cols, d+j·cols/32, j < 2) over cols/32 blocks, bitwise:",
		"each weight block's scale is converted once for both rows.")
	w0 := Load(Param("w").Base(), GP64())
	ws := Load(Param("wstride"), GP64())
	w1 := GP64()
	MOVQ(w0, w1)
	ADDQ(ws, w1)
	q0 := Load(Param("q").Base(), GP64())
	d0 := Load(Param("d").Base(), GP64())
	cols := Load(Param("cols"), GP64())
	q1, d1 := GP64(), GP64()
	MOVQ(q0, q1)
	ADDQ(cols, q1)
	MOVQ(cols, d1)
	SHRQ(U8(3), d1) // cols/32 blocks of 4 bytes
	ADDQ(d0, d1)
	n := GP64()
	MOVQ(cols, n)
	SHRQ(U8(5), n)
	w := []Register{w0, w1}
	q := []Register{q0, q1}
	d := []Register{d0, d1}
	// acc[i][j]: weight row i, activation row j, one accumulator as dotQ8_0AVX2.
	var acc [2][2]VecVirtual
	for i := range acc {
		for j := range acc[i] {
			acc[i][j] = YMM()
			VXORPS(acc[i][j], acc[i][j], acc[i][j])
		}
	}
	block := func(p int) {
		// Block p of the current pair (p = 0 even, 1 odd).
		var dw [2]VecVirtual
		for i := range dw {
			dw[i] = f16(Mem{Base: w[i], Disp: 34 * p})
		}
		for j := range q {
			y := YMM()
			VMOVDQU(Mem{Base: q[j], Disp: 32 * p}, y)
			for i := range w {
				wm := Mem{Base: w[i], Disp: 34*p + 2}
				sc, ax, sy := XMM(), YMM(), YMM()
				VMULSS(Mem{Base: d[j], Disp: 4 * p}, dw[i], sc)
				VPABSB(wm, ax)
				VPSIGNB(wm, y, sy)
				VPMADDUBSW(sy, ax, sy)
				VPMADDWD(ones, sy, sy)
				VCVTDQ2PS(sy, sy)
				scy := sc.AsY()
				VBROADCASTSS(sc, scy)
				VFMADD231PS(sy, scy, acc[i][j])
			}
		}
	}
	Label("t8loop2")
	CMPQ(n, U32(2))
	JL(LabelRef("t8loop1"))
	block(0)
	block(1)
	for i := range w {
		ADDQ(U32(68), w[i])
		ADDQ(U32(64), q[i])
		ADDQ(U32(8), d[i])
	}
	SUBQ(U32(2), n)
	JMP(LabelRef("t8loop2"))
	Label("t8loop1")
	CMPQ(n, U32(0))
	JE(LabelRef("t8reduce"))
	block(0)
	Label("t8reduce")
	out := Mem{Base: Load(Param("out"), GP64())}
	for i := range acc {
		for j := range acc[i] {
			s := hsum(acc[i][j])
			VMOVSS(s, out.Offset(4*(2*i+j)))
		}
	}
	VZEROUPPER()
	RET()
}

// unpackScalesK4 unpacks the 6-bit scales and mins of the Q4_K block at w
// (llama.cpp's utmp) into utmp (8 scales then 8 mins, as bytes) and sc16
// (the scales as int16, then the mins).
func unpackScalesK4(w, utmp, sc16 Mem) {
	Comment("Unpack the 6-bit scales and mins (llama.cpp's utmp).")
	u0, u1, u2, t, v := GP32(), GP32(), GP32(), GP32(), GP32()
	MOVL(w.Offset(4), u0)
	MOVL(w.Offset(8), u1)
	MOVL(w.Offset(12), u2)
	// utmp[3] = ((u2 >> 4) & 0x0f0f0f0f) | (((u1 >> 6) & 0x03030303) << 4)
	MOVL(u2, t)
	SHRL(U8(4), t)
	ANDL(U32(0x0f0f0f0f), t)
	MOVL(u1, v)
	SHRL(U8(6), v)
	ANDL(U32(0x03030303), v)
	SHLL(U8(4), v)
	ORL(v, t)
	MOVL(t, utmp.Offset(12))
	// utmp[2] = u1 & 0x3f3f3f3f
	ANDL(U32(0x3f3f3f3f), u1)
	MOVL(u1, utmp.Offset(8))
	// utmp[1] = (u2 & 0x0f0f0f0f) | (((u0 >> 6) & 0x03030303) << 4)
	ANDL(U32(0x0f0f0f0f), u2)
	MOVL(u0, v)
	SHRL(U8(6), v)
	ANDL(U32(0x03030303), v)
	SHLL(U8(4), v)
	ORL(v, u2)
	MOVL(u2, utmp.Offset(4))
	// utmp[0] = u0 & 0x3f3f3f3f
	ANDL(U32(0x3f3f3f3f), u0)
	MOVL(u0, utmp)
	scales := YMM()
	VPMOVZXBW(utmp, scales)
	VMOVDQU(scales, sc16)
}

func tileQ4_K() {
	TEXT("tileQ4_KAVX2", NOSPLIT, "func(w []byte, wstride int, q []int8, d []float32, bsum []int32, cols int, out *[4]float32)")
	Pragma("noescape")
	Doc("tileQ4_KAVX2 sets out[2i+j] to dotQ4_KAVX2 of Q4_K weight row i (at w+i·wstride bytes,",
		"i < 2) and activation row j (q+j·cols, d+j·cols/256, bsum+j·cols/16, j < 2), bitwise:",
		"each weight block's scales and nibbles are unpacked once for both rows.")
	w0 := Load(Param("w").Base(), GP64())
	ws := Load(Param("wstride"), GP64())
	w1 := GP64()
	MOVQ(w0, w1)
	ADDQ(ws, w1)
	q0 := Load(Param("q").Base(), GP64())
	d0 := Load(Param("d").Base(), GP64())
	b0 := Load(Param("bsum").Base(), GP64())
	cols := Load(Param("cols"), GP64())
	q1, d1, b1 := GP64(), GP64(), GP64()
	MOVQ(q0, q1)
	ADDQ(cols, q1)
	MOVQ(cols, d1)
	SHRQ(U8(6), d1) // cols/256 scales of 4 bytes
	ADDQ(d0, d1)
	MOVQ(cols, b1)
	SHRQ(U8(2), b1) // cols/16 sums of 4 bytes
	ADDQ(b0, b1)
	n := cols
	SHRQ(U8(8), n)
	w := []Mem{{Base: w0}, {Base: w1}}
	q := []Mem{{Base: q0}, {Base: q1}}
	d := []Mem{{Base: d0}, {Base: d1}}
	bs := []Mem{{Base: b0}, {Base: b1}}
	utmp := []Mem{AllocLocal(16), AllocLocal(16)}
	sc16 := []Mem{AllocLocal(32), AllocLocal(32)}
	// acc and accm of pair (i, j) at 32·(2i+j).
	acc, accm := AllocLocal(128), AllocLocal(128)
	z := YMM()
	VXORPS(z, z, z)
	for k := 0; k < 4; k++ {
		VMOVUPS(z, acc.Offset(32*k))
		VMOVUPS(z, accm.Offset(32*k))
	}
	low := bytes(0x0f)
	Label("t4kloop")
	CMPQ(n, U32(0))
	JE(LabelRef("t4kdone"))
	for i := range w {
		unpackScalesK4(w[i], utmp[i], sc16[i])
	}
	Comment("Mins of each pair.")
	for j := range q {
		sums, s1 := YMM(), YMM()
		VMOVDQU(bs[j], sums)
		VMOVDQU(bs[j].Offset(32), s1)
		VPHADDD(s1, sums, sums)
		VPERMQ(U8(0xd8), sums, sums)
		for i := range w {
			mins, dmy := YMM(), YMM()
			VPMOVZXBD(utmp[i].Offset(8), mins)
			VPMULLD(mins, sums, mins)
			VCVTDQ2PS(mins, mins)
			dm := f16(w[i].Offset(2))
			VMULSS(d[j], dm, dm)
			VBROADCASTSS(dm, dmy)
			m := YMM()
			VMOVUPS(accm.Offset(32*(2*i+j)), m)
			VFNMADD231PS(mins, dmy, m)
			VMOVUPS(m, accm.Offset(32*(2*i+j)))
		}
	}
	Comment("Quants: four groups of 64, low nibbles then high nibbles.")
	var sumi [2][2]VecVirtual
	for i := range sumi {
		for j := range sumi[i] {
			sumi[i][j] = YMM()
			VPXOR(sumi[i][j], sumi[i][j], sumi[i][j])
		}
	}
	for g := 0; g < 4; g++ {
		var nib [2][2]VecVirtual // [i][lo, hi]
		for i := range w {
			bits := YMM()
			nib[i][0], nib[i][1] = YMM(), YMM()
			VMOVDQU(w[i].Offset(16+32*g), bits)
			VPAND(low, bits, nib[i][0])
			VPSRLW(U8(4), bits, nib[i][1])
			VPAND(low, nib[i][1], nib[i][1])
		}
		for h := 0; h < 2; h++ {
			for j := range q {
				y := YMM()
				VMOVDQU(q[j].Offset(64*g+32*h), y)
				for i := range w {
					p, sc := YMM(), YMM()
					VPMADDUBSW(y, nib[i][h], p)
					VPBROADCASTW(sc16[i].Offset(4*g+2*h), sc)
					VPMADDWD(sc, p, p)
					VPADDD(p, sumi[i][j], sumi[i][j])
				}
			}
		}
	}
	for i := range w {
		for j := range q {
			VCVTDQ2PS(sumi[i][j], sumi[i][j])
			ds := blockScale(w[i], d[j])
			a := YMM()
			VMOVUPS(acc.Offset(32*(2*i+j)), a)
			VFMADD231PS(sumi[i][j], ds, a)
			VMOVUPS(a, acc.Offset(32*(2*i+j)))
		}
	}
	for i := range w {
		ADDQ(U32(144), w[i].Base)
		ADDQ(U32(256), q[i].Base)
		ADDQ(U32(4), d[i].Base)
		ADDQ(U32(64), bs[i].Base)
	}
	DECQ(n)
	JMP(LabelRef("t4kloop"))
	Label("t4kdone")
	out := Mem{Base: Load(Param("out"), GP64())}
	for k := 0; k < 4; k++ {
		a, m := YMM(), YMM()
		VMOVUPS(acc.Offset(32*k), a)
		VMOVUPS(accm.Offset(32*k), m)
		VADDPS(m, a, a)
		s := hsum(a)
		VMOVSS(s, out.Offset(4*k))
	}
	VZEROUPPER()
	RET()
}

func tileQ6_K() {
	TEXT("tileQ6_KAVX2", NOSPLIT, "func(w []byte, wstride int, q []int8, d []float32, cols int, out *[4]float32)")
	Pragma("noescape")
	Doc("tileQ6_KAVX2 sets out[2i+j] to dotQ6_KAVX2 of Q6_K weight row i (at w+i·wstride bytes,",
		"i < 2) and activation row j (q+j·cols, d+j·cols/256, j < 2), bitwise: each group of",
		"weights is unpacked once for both rows, each group of activations once for both.")
	w0 := Load(Param("w").Base(), GP64())
	ws := Load(Param("wstride"), GP64())
	w1 := GP64()
	MOVQ(w0, w1)
	ADDQ(ws, w1)
	q0 := Load(Param("q").Base(), GP64())
	d0 := Load(Param("d").Base(), GP64())
	cols := Load(Param("cols"), GP64())
	q1, d1 := GP64(), GP64()
	MOVQ(q0, q1)
	ADDQ(cols, q1)
	MOVQ(cols, d1)
	SHRQ(U8(6), d1) // cols/256 scales of 4 bytes
	ADDQ(d0, d1)
	n := cols
	SHRQ(U8(8), n)
	w := []Mem{{Base: w0}, {Base: w1}}
	q := []Mem{{Base: q0}, {Base: q1}}
	d := []Mem{{Base: d0}, {Base: d1}}
	acc := AllocLocal(128) // pair (i, j) at 32·(2i+j)
	z := YMM()
	VXORPS(z, z, z)
	for k := 0; k < 4; k++ {
		VMOVUPS(z, acc.Offset(32*k))
	}
	low, three, m32 := bytes(0x0f), bytes(3), bytes(32)
	Label("t6kloop")
	CMPQ(n, U32(0))
	JE(LabelRef("t6kdone"))
	var sumi [2][2]VecVirtual
	for i := range sumi {
		for j := range sumi[i] {
			sumi[i][j] = YMM()
			VPXOR(sumi[i][j], sumi[i][j], sumi[i][j])
		}
	}
	for half := 0; half < 2; half++ {
		for k := 0; k < 4; k++ {
			var x, s16 [2]VecVirtual
			for i := range w {
				// Element group k of 32: low or high nibbles of ql, bits 2k, 2k+1 of qh.
				x[i], s16[i] = YMM(), YMM()
				h := YMM()
				VMOVDQU(w[i].Offset(64*half+32*(k%2)), x[i])
				if k >= 2 {
					VPSRLW(U8(4), x[i], x[i])
				}
				VPAND(low, x[i], x[i])
				VMOVDQU(w[i].Offset(128+32*half), h)
				if k > 0 {
					VPSRLW(U8(2*k), h, h)
				}
				VPAND(three, h, h)
				VPSLLW(U8(4), h, h)
				VPOR(h, x[i], x[i])
				sc := XMM()
				VMOVDQU(w[i].Offset(192), sc)
				VPSHUFB(q6kShuffles[4*half+k], sc, sc)
				VPMOVSXBW(sc, s16[i])
			}
			for j := range q {
				y, ys := YMM(), YMM()
				VMOVDQU(q[j].Offset(128*half+32*k), y)
				VPMADDUBSW(y, m32, ys)
				for i := range w {
					p := YMM()
					VPMADDUBSW(y, x[i], p)
					VPSUBW(ys, p, p)
					VPMADDWD(s16[i], p, p)
					VPADDD(p, sumi[i][j], sumi[i][j])
				}
			}
		}
	}
	for i := range w {
		for j := range q {
			VCVTDQ2PS(sumi[i][j], sumi[i][j])
			ds := blockScale(w[i].Offset(208), d[j])
			a := YMM()
			VMOVUPS(acc.Offset(32*(2*i+j)), a)
			VFMADD231PS(sumi[i][j], ds, a)
			VMOVUPS(a, acc.Offset(32*(2*i+j)))
		}
	}
	for i := range w {
		ADDQ(U32(210), w[i].Base)
		ADDQ(U32(256), q[i].Base)
		ADDQ(U32(4), d[i].Base)
	}
	DECQ(n)
	JMP(LabelRef("t6kloop"))
	Label("t6kdone")
	out := Mem{Base: Load(Param("out"), GP64())}
	for k := 0; k < 4; k++ {
		a := YMM()
		VMOVUPS(acc.Offset(32*k), a)
		s := hsum(a)
		VMOVSS(s, out.Offset(4*k))
	}
	VZEROUPPER()
	RET()
}
