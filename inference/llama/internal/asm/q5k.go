package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Q5_K blocks are 176 bytes: d, dmin, 12 bytes of scales and mins packed as
// Q4_K's, 32 bytes of high bits qh, 128 bytes of low nibbles qs.
const (
	q5kBytes = 176
	q5kQh    = 16
	q5kQs    = 48
)

// q5kValues sets lo and hi to the 5-bit values of group g (elements 64g..64g+63)
// of the Q5_K block at w: the low or high nibbles of qs, plus 16 where bit 2g
// or 2g+1 of qh is set (ggml's q5h_0 and q5h_1).
func q5kValues(w Mem, g int, low, one, lo, hi VecVirtual) {
	bits, hb, h := YMM(), YMM(), YMM()
	VMOVDQU(w.Offset(q5kQs+32*g), bits)
	VMOVDQU(w.Offset(q5kQh), hb)
	VPAND(low, bits, lo)
	VPSRLW(U8(4), bits, hi)
	VPAND(low, hi, hi)
	if g == 0 {
		VPAND(one, hb, h)
	} else {
		VPSRLW(U8(2*g), hb, h)
		VPAND(one, h, h)
	}
	VPSLLW(U8(4), h, h)
	VPOR(h, lo, lo)
	VPSRLW(U8(2*g+1), hb, h)
	VPAND(one, h, h)
	VPSLLW(U8(4), h, h)
	VPOR(h, hi, hi)
}

// q5kMins returns, in the low lane of an XMM register as a float32, the
// integer Σ min_j·(bsum[2j]+bsum[2j+1]) of a block whose unpacked mins are
// at utmp+8 and whose activation sums of 16 are at bs.
func q5kMins(utmp, bs Mem) VecVirtual {
	mins, s0, s1 := YMM(), YMM(), YMM()
	VPMOVZXBD(utmp.Offset(8), mins)
	VMOVDQU(bs, s0)
	VMOVDQU(bs.Offset(32), s1)
	VPHADDD(s1, s0, s0)
	VPERMQ(U8(0xd8), s0, s0)
	VPMULLD(mins, s0, s0)
	x, t := XMM(), XMM()
	VEXTRACTI128(U8(1), s0, x)
	VPADDD(s0.AsX(), x, x)
	VPSHUFD(U8(0x4e), x, t)
	VPADDD(t, x, x)
	VPSHUFD(U8(0xb1), x, t)
	VPADDD(t, x, x)
	VCVTDQ2PS(x, x)
	return x
}

func dotQ5_K() {
	TEXT("dotQ5_KAVX2", NOSPLIT, "func(w []byte, q []int8, d []float32, bsum []int32) float32")
	Pragma("noescape")
	Doc("dotQ5_KAVX2 is ggml's AVX2 vec_dot_q5_K_q8_K over len(d) blocks: w holds 176-byte",
		"Q5_K blocks; q, d and bsum the activations' int8 values, scales and sums of 16.",
		"As in ggml, the mins go to a scalar sum (summs) added after the lanes.")
	w := Mem{Base: Load(Param("w").Base(), GP64())}
	q := Mem{Base: Load(Param("q").Base(), GP64())}
	d := Mem{Base: Load(Param("d").Base(), GP64())}
	bs := Mem{Base: Load(Param("bsum").Base(), GP64())}
	n := Load(Param("d").Len(), GP64())
	low, one := bytes(0x0f), bytes(1)
	acc, summs := YMM(), XMM()
	VXORPS(acc, acc, acc)
	VXORPS(summs, summs, summs)
	utmp := AllocLocal(16)
	sc16 := AllocLocal(32)
	Label("q5kloop")
	CMPQ(n, U32(0))
	JE(LabelRef("q5kdone"))

	unpackScalesK4(w, utmp, sc16)

	Comment("Mins: summs -= dmin·d8 · Σ min_j · (bsum[2j] + bsum[2j+1]).")
	m := q5kMins(utmp, bs)
	dm := f16(w.Offset(2))
	VMULSS(d, dm, dm)
	VFNMADD231SS(m, dm, summs)

	Comment("Quants: four groups of 64, low nibbles then high nibbles, each plus its high bit.")
	sumi := YMM()
	VPXOR(sumi, sumi, sumi)
	for g := 0; g < 4; g++ {
		lo, hi, sl, sh, y := YMM(), YMM(), YMM(), YMM(), YMM()
		q5kValues(w, g, low, one, lo, hi)
		VMOVDQU(q.Offset(64*g), y)
		VPMADDUBSW(y, lo, lo)
		VPBROADCASTW(sc16.Offset(4*g), sl)
		VPMADDWD(sl, lo, lo)
		VMOVDQU(q.Offset(64*g+32), y)
		VPMADDUBSW(y, hi, hi)
		VPBROADCASTW(sc16.Offset(4*g+2), sh)
		VPMADDWD(sh, hi, hi)
		VPADDD(hi, lo, lo)
		VPADDD(lo, sumi, sumi)
	}
	VCVTDQ2PS(sumi, sumi)
	ds := blockScale(w, d)
	VFMADD231PS(sumi, ds, acc)

	ADDQ(U32(q5kBytes), w.Base)
	ADDQ(U32(256), q.Base)
	ADDQ(U32(4), d.Base)
	ADDQ(U32(64), bs.Base)
	DECQ(n)
	JMP(LabelRef("q5kloop"))
	Label("q5kdone")
	s := hsum(acc)
	VADDSS(summs, s, s)
	VZEROUPPER()
	Store(s, ReturnIndex(0))
	RET()
}

func tileQ5_K() {
	TEXT("tileQ5_KAVX2", NOSPLIT, "func(w []byte, wstride int, q []int8, d []float32, bsum []int32, cols int, out *[4]float32)")
	Pragma("noescape")
	Doc("tileQ5_KAVX2 sets out[2i+j] to dotQ5_KAVX2 of Q5_K weight row i (at w+i·wstride bytes,",
		"i < 2) and activation row j (q+j·cols, d+j·cols/256, bsum+j·cols/16, j < 2), bitwise:",
		"each weight block's scales and values are unpacked once for both rows.")
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
	// acc of pair (i, j) at 32·(2i+j), its summs at 4·(2i+j).
	acc, summs := AllocLocal(128), AllocLocal(16)
	z := YMM()
	VXORPS(z, z, z)
	for k := 0; k < 4; k++ {
		VMOVUPS(z, acc.Offset(32*k))
	}
	VMOVUPS(z.AsX(), summs)
	low, one := bytes(0x0f), bytes(1)
	Label("t5kloop")
	CMPQ(n, U32(0))
	JE(LabelRef("t5kdone"))
	for i := range w {
		unpackScalesK4(w[i], utmp[i], sc16[i])
	}
	Comment("Mins of each pair.")
	for i := range w {
		for j := range q {
			m := q5kMins(utmp[i], bs[j])
			dm, s := f16(w[i].Offset(2)), XMM()
			VMULSS(d[j], dm, dm)
			VMOVSS(summs.Offset(4*(2*i+j)), s)
			VFNMADD231SS(m, dm, s)
			VMOVSS(s, summs.Offset(4*(2*i+j)))
		}
	}
	Comment("Quants: four groups of 64, low nibbles then high nibbles, each plus its high bit.")
	var sumi [2][2]VecVirtual
	for i := range sumi {
		for j := range sumi[i] {
			sumi[i][j] = YMM()
			VPXOR(sumi[i][j], sumi[i][j], sumi[i][j])
		}
	}
	for g := 0; g < 4; g++ {
		var val [2][2]VecVirtual // [i][lo, hi]
		for i := range w {
			val[i][0], val[i][1] = YMM(), YMM()
			q5kValues(w[i], g, low, one, val[i][0], val[i][1])
		}
		for j := range q {
			var p [2][2]VecVirtual
			for h := 0; h < 2; h++ {
				y := YMM()
				VMOVDQU(q[j].Offset(64*g+32*h), y)
				for i := range w {
					sc := YMM()
					p[i][h] = YMM()
					VPMADDUBSW(y, val[i][h], p[i][h])
					VPBROADCASTW(sc16[i].Offset(4*g+2*h), sc)
					VPMADDWD(sc, p[i][h], p[i][h])
				}
			}
			for i := range w {
				VPADDD(p[i][1], p[i][0], p[i][0])
				VPADDD(p[i][0], sumi[i][j], sumi[i][j])
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
		ADDQ(U32(q5kBytes), w[i].Base)
		ADDQ(U32(256), q[i].Base)
		ADDQ(U32(4), d[i].Base)
		ADDQ(U32(64), bs[i].Base)
	}
	DECQ(n)
	JMP(LabelRef("t5kloop"))
	Label("t5kdone")
	out := Mem{Base: Load(Param("out"), GP64())}
	for k := 0; k < 4; k++ {
		a := YMM()
		VMOVUPS(acc.Offset(32*k), a)
		s := hsum(a)
		VADDSS(summs.Offset(4*k), s, s)
		VMOVSS(s, out.Offset(4*k))
	}
	VZEROUPPER()
	RET()
}
