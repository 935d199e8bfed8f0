//go:build !purego

package llama

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/cpu"
)

// neonBound is the error allowed between a NEON kernel and its pure-Go twin:
// (terms+24)·2⁻²²·Σ|wᵢxᵢ|, where terms is the number of float additions one
// lane makes (elements/16 for F32 and F16, blocks for the quantized types),
// 24 covers the reduction of the lanes and the scalar tail (at most 15
// additions), and Σ|wᵢxᵢ| is over the dequantized weights and activations.
// Integer block sums are exact in both; only the order of the float sums
// differs, each rounding by at most 2⁻²⁴ relative to the magnitude so far.
// Dropping or doubling one element would exceed it by orders of magnitude.
func neonBound(terms int, norm float64) float64 {
	return float64(terms+24) * 0x1p-22 * norm
}

func needNEON(t testing.TB) {
	t.Helper()
	if !useSIMD {
		t.Skip("this CPU reports no Advanced SIMD: only the pure-Go kernels run")
	}
}

// sdotModes returns the settings of useSDOT to test: the fallback always,
// SDOT when the CPU has it. It restores useSDOT when the test ends.
func sdotModes(t *testing.T) []bool {
	saved := useSDOT
	t.Cleanup(func() { useSDOT = saved })
	if cpu.ARM64.HasASIMDDP {
		return []bool{false, true}
	}
	t.Log("no dotprod extension: only the SMULL/SADALP path is tested")
	return []bool{false}
}

func neonAbsDot(w, x []float32) float64 {
	var s float64
	for i := range w {
		s += math.Abs(float64(w[i]) * float64(x[i]))
	}
	return s
}

func neonRandFloats(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()))
	}
	return x
}

// TestNEONKernelsSelected: on arm64 with Advanced SIMD the products run the
// NEON kernels, Kernels says so, and SDOT is used exactly when the CPU has
// the dotprod extension.
func TestNEONKernelsSelected(t *testing.T) {
	if useSIMD != cpu.ARM64.HasASIMD {
		t.Fatalf("useSIMD %v, CPU reports ASIMD %v", useSIMD, cpu.ARM64.HasASIMD)
	}
	if useSDOT != cpu.ARM64.HasASIMDDP {
		t.Fatalf("useSDOT %v, CPU reports dotprod %v", useSDOT, cpu.ARM64.HasASIMDDP)
	}
	want := "generic"
	if cpu.ARM64.HasASIMD {
		want = "neon"
	}
	if got := Kernels(); got != want {
		t.Fatalf("Kernels() = %q, want %q", got, want)
	}
	t.Logf("kernels %s, SDOT %v", Kernels(), useSDOT)
}

// neonLengths are 0 to 300 and some longer lengths: every tail size.
func neonLengths() []int {
	n := []int{1000, 1024, 2816, 4099}
	for i := range 301 {
		n = append(n, i)
	}
	return n
}

// TestNEONDotF32MatchesGeneric: the NEON F32 dot equals dotF32 within
// neonBound on every length from 0 to 300 and some longer ones.
func TestNEONDotF32MatchesGeneric(t *testing.T) {
	needNEON(t)
	rng := rand.New(rand.NewPCG(11, 11))
	for _, n := range neonLengths() {
		a, b := neonRandFloats(rng, n), neonRandFloats(rng, n+3) // b may be longer
		got, want := dotF32NEON(a, b), dotF32(a, b[:n])
		if d := math.Abs(float64(got - want)); d > neonBound(n/16, neonAbsDot(a, b)) {
			t.Fatalf("length %d: neon %g, generic %g: difference %.3g exceeds %.3g", n, got, want, d, neonBound(n/16, neonAbsDot(a, b)))
		}
	}
}

// TestNEONDotF16MatchesGeneric: the NEON F16 dot (FCVTL widening) equals the
// pure-Go conversion and dotF32 within neonBound, on every length from 0 to
// 300 and some longer ones, with weights of every binary16 class but NaN
// and infinity (subnormals included).
func TestNEONDotF16MatchesGeneric(t *testing.T) {
	needNEON(t)
	rng := rand.New(rand.NewPCG(12, 12))
	for _, n := range neonLengths() {
		w := make([]byte, 2*n)
		for i := range n {
			h := uint16(rng.Uint32())
			if h&0x7c00 == 0x7c00 {
				h &^= 0x4000 // no infinities or NaNs
			}
			w[2*i], w[2*i+1] = byte(h), byte(h>>8)
		}
		x := neonRandFloats(rng, n)
		roundF16(x)
		wf := make([]float32, n)
		f16row(w, wf)
		got, want := dotF16NEON(w, x), dotF32(wf, x)
		if d := math.Abs(float64(got - want)); d > neonBound(n/16, neonAbsDot(wf, x)) {
			t.Fatalf("length %d: neon %g, generic %g: difference %.3g exceeds %.3g", n, got, want, d, neonBound(n/16, neonAbsDot(wf, x)))
		}
	}
}

// TestNEONQuantizedDotsMatchGeneric: the NEON Q8_0, Q4_0, Q4_K, Q5_K and
// Q6_K dots (SDOT and the SMULL/SADALP fallback) equal the pure-Go ones within neonBound, on random blocks (every byte
// value, -128 included), activations of a wide dynamic range, block counts
// odd and even (the scalar tail) up to 300 blocks (33 of 256 elements, past
// the K-quant kernels' chunks of 16).
func TestNEONQuantizedDotsMatchGeneric(t *testing.T) {
	needNEON(t)
	rng := rand.New(rand.NewPCG(13, 13))
	for _, sdot := range sdotModes(t) {
		useSDOT = sdot
		for _, typ := range []uint32{typeQ8_0, typeQ4_0, typeQ4_K, typeQ5_K, typeQ6_K} {
			elems, _, _ := blockLayout(typ)
			var blocks []int
			if elems == 32 {
				for nb := range 21 {
					blocks = append(blocks, nb)
				}
				blocks = append(blocks, 33, 64, 88, 128, 299, 300)
			} else {
				blocks = []int{0, 1, 2, 3, 4, 5, 11, 15, 16, 17, 33}
			}
			for _, nb := range blocks {
				t.Run(fmt.Sprintf("sdot=%v/%s/%d", sdot, typeName(typ), nb), func(t *testing.T) {
					checkQuantizedDot(t, rng, typ, nb)
				})
			}
		}
	}
}

func checkQuantizedDot(t *testing.T, rng *rand.Rand, typ uint32, nb int) {
	elems, _, _ := blockLayout(typ)
	cols := nb * elems
	for range 10 {
		var w []byte
		var wf []float32
		if cols > 0 {
			m := randomMatrix(t, rng, typ, 1, cols)
			w, wf = m.raw, make([]float32, cols)
			m.row(0, wf)
		}
		var a acts
		a.prepare(kindOf(typ), [][]float32{neonRandFloats(rng, cols)})
		var s scratch
		var got, want float32
		extra := 0.0 // Σ|dmin·min·x| for Q4_K, whose mins are summed apart
		switch typ {
		case typeQ8_0:
			got, want = dotQ8_0NEON(w, a.q, a.d), dotQ8_0(w, a.q, a.d)
		case typeQ4_0:
			got, want = dotQ4_0NEON(w, a.q, a.d), dotQ4_0(w, a.q, a.d)
		case typeQ4_K, typeQ5_K:
			s.q, s.sc, s.mn = make([]int8, cols), make([]int32, cols/32), make([]int32, cols/32)
			s.d, s.dmin = make([]float32, nb), make([]float32, nb)
			if typ == typeQ5_K {
				unpackQ5_K(w, &s)
			} else {
				unpackQ4_K(w, &s)
			}
			got, want = dotQ4_KNEON(w, a.q, a.d, a.bsum), s.dotQ4_K(a.q, a.d, a.bsum)
			if typ == typeQ5_K {
				got = dotQ5_KNEON(w, a.q, a.d, a.bsum)
			}
			for i := range cols {
				extra += math.Abs(float64(s.dmin[i/256]) * float64(s.mn[i/32]) * float64(a.q[i]) * float64(a.d[i/256]))
			}
		case typeQ6_K:
			s.q, s.sc, s.d = make([]int8, cols), make([]int32, cols/16), make([]float32, nb)
			unpackQ6_K(w, &s)
			got, want = dotQ6_KNEON(w, a.q, a.d, a.bsum), s.dotQ6_K(a.q, a.d)
		}
		xf := make([]float32, cols)
		for i := range xf {
			xf[i] = float32(a.q[i]) * a.d[i/(cols/len(a.d))]
		}
		bound := neonBound(nb, neonAbsDot(wf, xf)+extra)
		if d := math.Abs(float64(got - want)); d > bound {
			t.Fatalf("neon %g, generic %g: difference %.3g exceeds %.3g", got, want, d, bound)
		}
	}
}

// kindOf is the activations' form for weights of type typ.
func kindOf(typ uint32) actKind {
	m := matrix{typ: typ}
	return m.kind()
}

// TestNEONSDOTAndFallbackSameBlockSums: SDOT and SMULL/SADALP give the same
// integer block sums, so with one block pair and a unit scale (lanes
// summed exactly in float32) the two paths agree bitwise with the integer
// sum.
func TestNEONSDOTAndFallbackSameBlockSums(t *testing.T) {
	needNEON(t)
	rng := rand.New(rand.NewPCG(14, 14))
	modes := sdotModes(t)
	for range 200 {
		w := make([]byte, 2*34)
		q := make([]int8, 64)
		for i := range w {
			w[i] = byte(rng.Uint32())
		}
		w[0], w[1], w[34], w[35] = 0x00, 0x3c, 0x00, 0x3c // F16 1.0
		var want int32
		for i := range q {
			q[i] = int8(rng.Uint32())
			want += int32(int8(w[2+i+2*(i/32)])) * int32(q[i])
		}
		for _, sdot := range modes {
			if got := dotQ8_0NEON2(w, q, []float32{1, 1}, sdot); got != float32(want) {
				t.Fatalf("sdot %v: %g, want %d", sdot, got, want)
			}
		}
	}
}

// TestNEONQuantizeQ8_0: the ARM quantization has the reference scales
// bitwise, and its values differ from the reference's only at exact ties
// (x/d an odd multiple of ½), which it rounds to even.
func TestNEONQuantizeQ8_0(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 15))
	const n = 32 * 500
	x := neonRandFloats(rng, n)
	for i := 0; i < n; i += 97 {
		x[i] = float32(math.Round(float64(x[i]))) + 0.5 // ties once scaled by 1
	}
	for i := 0; i < 32; i++ {
		x[i] = float32(i) - 15.5 // a block whose scale is 127/127: every value a tie
	}
	x[0] = 127
	q, d := make([]int8, n), make([]float32, n/32)
	rq, rd := make([]int8, n), make([]float32, n/32)
	quantizeQ8_0NEON(x, q, d)
	quantizeQ8_0(x, rq, rd)
	ties := 0
	for i := range q {
		if math.Float32bits(d[i/32]) != math.Float32bits(rd[i/32]) {
			t.Fatalf("block %d: scale %g, reference %g", i/32, d[i/32], rd[i/32])
		}
		if q[i] == rq[i] {
			continue
		}
		amax := float32(0)
		for _, v := range x[i/32*32 : i/32*32+32] {
			amax = max(amax, abs32(v))
		}
		v := float64(x[i] * (1 / (amax / 127)))
		if v-math.Floor(v) != 0.5 || float64(q[i]) != math.RoundToEven(v) {
			t.Fatalf("element %d (%g): %d, reference %d, scaled %g", i, x[i], q[i], rq[i], v)
		}
		ties++
	}
	if ties == 0 {
		t.Fatal("no ties met: the test does not test the rounding")
	}
}

// TestNEONProductMatchesGeneric: whole products (mul) with the NEON kernels
// equal those of the pure-Go kernels within neonBound, for every type,
// batches of 1 and 5, on 3 workers. The two quantize activations apart
// (Q8_0 as the ARM build, Q8_K with the product fused as GCC's builds, for
// NEON), but the values differ only at exact ties, which random normal
// inputs do not meet: the bound is the kernels'.
func TestNEONProductMatchesGeneric(t *testing.T) {
	needNEON(t)
	rng := rand.New(rand.NewPCG(16, 16))
	defer func(v bool) { useSIMD = v }(useSIMD)
	const rows, cols = 37, 512
	for _, typ := range kernelTypes {
		for _, batch := range []int{1, 5} {
			m := randomMatrix(t, rng, typ, rows, cols)
			in := randomRows(rng, batch, cols)
			useSIMD = true
			got := product(m, in, 3)
			var a acts
			a.prepare(m.kind(), in)
			useSIMD = false
			want := product(m, in, 3)
			useSIMD = true
			terms := cols / 16
			if elems, _, _ := blockLayout(typ); elems > 1 {
				terms = cols / elems
			}
			wf := make([]float32, cols)
			for b := range in {
				x := dequantActs(&a, b)
				for r := range rows {
					m.row(r, wf)
					bound := neonBound(terms, neonAbsDot(wf, x))
					if typ == typeQ4_K || typ == typeQ5_K {
						bound *= 2 // the mins, summed apart, are at most as large
					}
					if d := math.Abs(float64(got[b][r] - want[b][r])); d > bound {
						t.Fatalf("%s batch %d, row %d of input %d: neon %g, generic %g: difference %.3g exceeds %.3g", typeName(typ), batch, r, b, got[b][r], want[b][r], d, bound)
					}
				}
			}
		}
	}
}

// dequantActs returns row b of a as float32 values.
func dequantActs(a *acts, b int) []float32 {
	switch a.kind {
	case actF32:
		return a.in[b]
	case actF16:
		return a.f[b*a.cols : (b+1)*a.cols]
	}
	x := make([]float32, a.cols)
	per := a.cols * a.n / len(a.d)
	for i := range x {
		x[i] = float32(a.q[b*a.cols+i]) * a.d[(b*a.cols+i)/per]
	}
	return x
}

// TestNEONRoundF16IsExact: FCVTN and FCVTL give bitwise the values of the
// pure-Go rounding to binary16, for normal, subnormal, overflowing and tie
// values, on every length from 0 to 40 (the one-at-a-time tail).
func TestNEONRoundF16IsExact(t *testing.T) {
	needNEON(t)
	rng := rand.New(rand.NewPCG(17, 17))
	x := []float32{0, float32(math.Copysign(0, -1)), 1, 65504, 65519, 65520, 1e9, -1e9, 6e-8, 3e-8, 2.9e-8, 1e-10, 5.96e-8,
		float32(math.Inf(1)), float32(math.Inf(-1)), 1 + 0x1p-11, 1 + 3*0x1p-11, 0x1p-14 + 0x1p-25}
	for range 100000 {
		x = append(x, math.Float32frombits(rng.Uint32()&^(0xff<<23)|uint32(100+rng.IntN(60))<<23))
	}
	check := func(x []float32) {
		got := append([]float32(nil), x...)
		roundF16NEON(got)
		for i, v := range x {
			if want := f16table[f32to16(v)]; math.Float32bits(got[i]) != math.Float32bits(want) {
				t.Fatalf("%g (%#x): NEON %g, pure Go %g", v, math.Float32bits(v), got[i], want)
			}
		}
	}
	check(x)
	for n := range 41 {
		check(x[len(x)-n:])
	}
}

// TestNEONAttentionKernels: madF16NEON and scaleF16NEON equal their scalar
// definitions bitwise (a fused multiply-add or a product, then the rounding
// to binary16), on every length from 0 to 80.
func TestNEONAttentionKernels(t *testing.T) {
	needNEON(t)
	rng := rand.New(rand.NewPCG(18, 18))
	for n := range 81 {
		acc, v := neonRandFloats(rng, n), neonRandFloats(rng, n+2)
		roundF16(acc)
		s := float32(rng.Float64())
		got := append([]float32(nil), acc...)
		madF16NEON(got, v[:n], s)
		for i := range acc {
			want := f16table[f32to16(float32(math.FMA(float64(v[i]), float64(s), float64(acc[i]))))]
			if math.Float32bits(got[i]) != math.Float32bits(want) {
				t.Fatalf("mad, length %d, element %d: %g, want %g", n, i, got[i], want)
			}
		}
		got = append(got[:0], acc...)
		scaleF16NEON(got, s)
		for i := range acc {
			if want := f16table[f32to16(acc[i]*s)]; math.Float32bits(got[i]) != math.Float32bits(want) {
				t.Fatalf("scale, length %d, element %d: %g, want %g", n, i, got[i], want)
			}
		}
	}
}

// BenchmarkNEONProduct times a 256×4096 product of one activation row with
// the NEON kernels and with the pure-Go ones, for every weight type, on
// real arm64 hardware. Under qemu-aarch64 the times are the emulator's
// (FCVTL, for one, is a helper call there), not a CPU's: they say nothing
// of the kernels' speed.
func BenchmarkNEONProduct(b *testing.B) {
	needNEON(b)
	defer func(v bool) { useSIMD = v }(useSIMD)
	for _, typ := range kernelTypes {
		b.Run(typeName(typ), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(19, uint64(typ)))
			m := benchMatrix(b, rng, typ, 256, 4096)
			in, out := randomRows(rng, 1, 4096), randomRows(rng, 1, 256)
			for _, kernels := range []string{"neon", "generic"} {
				b.Run(kernels, func(b *testing.B) {
					useSIMD = kernels == "neon"
					w := newWorkspace(1)
					w.team.start()
					defer w.team.stop()
					for b.Loop() {
						w.use(in)
						w.mul(m, out)
					}
				})
			}
		})
	}
}

// benchMatrix is randomMatrix for a benchmark: random blocks of type typ
// with small positive F16 scales (Q4_K's dmin and Q6_K's d included).
func benchMatrix(b *testing.B, rng *rand.Rand, typ uint32, rows, cols int) *matrix {
	elems, size, _ := blockLayout(typ)
	data := make([]byte, rows*cols/elems*size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if typ == typeF32 || typ == typeF16 {
		for i := 0; i < len(data); i += size {
			v := float32(rng.NormFloat64())
			if typ == typeF32 {
				binary.LittleEndian.PutUint32(data[i:], math.Float32bits(v))
			} else {
				binary.LittleEndian.PutUint16(data[i:], f32to16(v))
			}
		}
	}
	scaleAt := map[uint32][]int{typeQ8_0: {0}, typeQ4_0: {0}, typeQ4_K: {0, 2}, typeQ5_K: {0, 2}, typeQ6_K: {208}}[typ]
	for blk := 0; blk < len(data); blk += size {
		for _, off := range scaleAt {
			binary.LittleEndian.PutUint16(data[blk+off:], f32to16(0.001+0.01*rng.Float32()))
		}
	}
	m, err := newMatrix(typ, rows, cols, data)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// TestNEONKernelsAreARMBitwise: the kernels give bitwise the results of
// llama.cpp's ARM NEON arithmetic written out in Go (armDot*): the same
// lanes (SDOT's and SMULL/SADALP's differ), the same fused or separate
// multiply-adds, the same order of sums, on lengths 0 to 300 (F32, F16), 0
// to 40 blocks (Q8_0, Q4_0) and up to 33 blocks (the K-quants, whose
// integer sums must then be exact).
func TestNEONKernelsAreARMBitwise(t *testing.T) {
	needNEON(t)
	rng := rand.New(rand.NewPCG(20, 20))
	for n := range 301 {
		a, b := neonRandFloats(rng, n), neonRandFloats(rng, n)
		if got, want := dotF32NEON(a, b), armDotF32(a, b); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("F32, length %d: %g, ARM arithmetic %g", n, got, want)
		}
		w := make([]byte, 2*n)
		for i := range n {
			h := f32to16(float32(rng.NormFloat64()))
			w[2*i], w[2*i+1] = byte(h), byte(h>>8)
		}
		roundF16(b)
		if got, want := dotF16NEON(w, b), armDotF16(w, b); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("F16, length %d: %g, ARM arithmetic %g", n, got, want)
		}
	}
	for _, sdot := range sdotModes(t) {
		useSDOT = sdot
		for _, typ := range []uint32{typeQ4_K, typeQ5_K, typeQ6_K} {
			for _, nb := range []int{0, 1, 2, 15, 16, 17, 33} {
				cols := nb * 256
				var w []byte
				if nb > 0 {
					w = randomMatrix(t, rng, typ, 1, cols).raw
				}
				var a acts
				a.prepare(actQ8_K, [][]float32{neonRandFloats(rng, cols)})
				var got float32
				switch typ {
				case typeQ4_K:
					got = dotQ4_KNEON(w, a.q, a.d, a.bsum)
				case typeQ5_K:
					got = dotQ5_KNEON(w, a.q, a.d, a.bsum)
				case typeQ6_K:
					got = dotQ6_KNEON(w, a.q, a.d, a.bsum)
				}
				if want := armDotK(typ, w, a.q, a.d, a.bsum); math.Float32bits(got) != math.Float32bits(want) {
					t.Fatalf("%s, sdot %v, %d blocks: %g, ARM arithmetic %g", typeName(typ), sdot, nb, got, want)
				}
			}
		}
		for _, typ := range []uint32{typeQ8_0, typeQ4_0} {
			for nb := range 41 {
				cols := nb * 32
				var w []byte
				if nb > 0 {
					w = randomMatrix(t, rng, typ, 1, cols).raw
				}
				var a acts
				a.prepare(actQ8_0, [][]float32{neonRandFloats(rng, cols)})
				var got float32
				if typ == typeQ4_0 {
					got = dotQ4_0NEON(w, a.q, a.d)
				} else {
					got = dotQ8_0NEON(w, a.q, a.d)
				}
				if want := armDotQ(typ, w, a.q, a.d, sdot); math.Float32bits(got) != math.Float32bits(want) {
					t.Fatalf("%s, sdot %v, %d blocks: %g, ARM arithmetic %g", typeName(typ), sdot, nb, got, want)
				}
			}
		}
	}
}

// armLanes sums four float32x4 accumulators as GGML_F32x4_REDUCE does:
// acc0+acc2, acc1+acc3, their sum, then (l0+l1)+(l2+l3) (vaddvq_f32).
func armLanes(acc *[4][4]float32) float32 {
	for l := range 4 {
		acc[0][l] += acc[2][l]
		acc[1][l] += acc[3][l]
		acc[0][l] += acc[1][l]
	}
	return (acc[0][0] + acc[0][1]) + (acc[0][2] + acc[0][3])
}

// armDotF32 is ggml_vec_dot_f32 on NEON: element i+4j+l of each step of 16
// goes to lane l of accumulator j by a fused multiply-add (fma32, through
// float64: it could round twice, where a float64 sum falls exactly halfway
// between two float32 values, which these inputs do not meet); the tail
// adds rounded products to the float32 sum.
func armDotF32(a, b []float32) float32 {
	var acc [4][4]float32
	n := len(a) &^ 15
	for i := 0; i < n; i++ {
		j, l := i%16/4, i%4
		acc[j][l] = fma32(a[i], b[i], acc[j][l])
	}
	s := armLanes(&acc)
	for i := n; i < len(a); i++ {
		s += float32(a[i] * b[i])
	}
	return s
}

// armDotF16 is ggml_vec_dot_f16 on NEON without FP16 arithmetic: armDotF32's
// lanes on the widened weights, the tail summed in float64.
func armDotF16(w []byte, x []float32) float32 {
	var acc [4][4]float32
	n := len(x) &^ 15
	wf := make([]float32, len(x))
	f16row(w, wf)
	for i := 0; i < n; i++ {
		j, l := i%16/4, i%4
		acc[j][l] = fma32(wf[i], x[i], acc[j][l])
	}
	s := float64(armLanes(&acc))
	for i := n; i < len(x); i++ {
		s += float64(wf[i] * x[i])
	}
	return float32(s)
}

// armDotQ is ggml_vec_dot_q8_0_q8_0 (typ Q8_0) or ggml_vec_dot_q4_0_q8_0
// (Q4_0) on NEON: blocks in pairs, each block's products summed into four
// int32 lanes (SDOT: bytes 4l..4l+3 of each 16-byte vector in lane l;
// SMULL/SADALP: bytes 2l, 2l+1, 2l+8, 2l+9), the lanes times the block's
// scale added to an accumulator for even blocks and one for odd blocks
// (multiply, then add), each summed (l0+l1)+(l2+l3), then a last odd block
// in scalar code.
func armDotQ(typ uint32, w []byte, q []int8, d []float32, sdot bool) float32 {
	size := 34
	if typ == typeQ4_0 {
		size = 18
	}
	weight := func(blk, i int) int32 { // element i of block blk
		x := w[blk*size+2:]
		if typ == typeQ8_0 {
			return int32(int8(x[i]))
		}
		if i < 16 {
			return int32(x[i]&0x0f) - 8
		}
		return int32(x[i-16]>>4) - 8
	}
	scale := func(blk int) float32 { return f16table[uint16(w[blk*size])|uint16(w[blk*size+1])<<8] }
	var acc [2][4]float32
	nb := len(d)
	for blk := 0; blk < nb&^1; blk++ {
		var lanes [4]int32
		for i := range 32 {
			j := i % 16
			l := j / 4
			if !sdot {
				l = j % 8 / 2
			}
			lanes[l] += weight(blk, i) * int32(q[blk*32+i])
		}
		s := scale(blk) * d[blk]
		for l := range 4 {
			acc[blk%2][l] += float32(float32(lanes[l]) * s)
		}
	}
	sum := ((acc[0][0] + acc[0][1]) + (acc[0][2] + acc[0][3])) + ((acc[1][0] + acc[1][1]) + (acc[1][2] + acc[1][3]))
	if nb%2 == 1 {
		blk := nb - 1
		var si int32
		for i := range 32 {
			si += weight(blk, i) * int32(q[blk*32+i])
		}
		if typ == typeQ8_0 {
			sum += float32(float32(si) * (scale(blk) * d[blk]))
		} else {
			sum += float32(float32(si) * scale(blk) * d[blk])
		}
	}
	return sum
}

// armDotK is ggml_vec_dot_q4_K_q8_K, ggml_vec_dot_q5_K_q8_K or
// ggml_vec_dot_q6_K_q8_K on NEON, from scalar integer sums over the
// pure-Go unpacking: per block, Q4_K sum -= (y.d·dmin)·mins then
// sum += (y.d·d)·isum; Q5_K sum += (y.d·d)·isum - (y.d·dmin)·mins; Q6_K
// sum += (d·y.d)·isum, the values centred (ggml's isum - 32·mins).
func armDotK(typ uint32, w []byte, q []int8, d []float32, bsum []int32) float32 {
	nb := len(d)
	var s scratch
	s.q, s.d, s.dmin = make([]int8, nb*256), make([]float32, nb), make([]float32, nb)
	switch typ {
	case typeQ4_K, typeQ5_K:
		s.sc, s.mn = make([]int32, nb*8), make([]int32, nb*8)
		if typ == typeQ4_K {
			unpackQ4_K(w, &s)
		} else {
			unpackQ5_K(w, &s)
		}
	case typeQ6_K:
		s.sc = make([]int32, nb*16)
		unpackQ6_K(w, &s)
	}
	var sum float32
	for blk := range nb {
		var isum, mins int32
		if typ == typeQ6_K {
			for j := range 16 {
				for i := j * 16; i < j*16+16; i++ {
					isum += s.sc[blk*16+j] * int32(s.q[blk*256+i]) * int32(q[blk*256+i])
				}
			}
			sum += float32(s.d[blk] * d[blk] * float32(isum))
			continue
		}
		for j := range 8 {
			for i := j * 32; i < j*32+32; i++ {
				isum += s.sc[blk*8+j] * int32(s.q[blk*256+i]) * int32(q[blk*256+i])
			}
			mins += s.mn[blk*8+j] * (bsum[blk*16+2*j] + bsum[blk*16+2*j+1])
		}
		dd, dmin := d[blk]*s.d[blk], d[blk]*s.dmin[blk]
		if typ == typeQ4_K {
			sum -= float32(dmin * float32(mins))
			sum += float32(dd * float32(isum))
		} else {
			sum += float32(float32(dd*float32(isum)) - float32(dmin*float32(mins)))
		}
	}
	return sum
}
