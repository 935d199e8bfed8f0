//go:build !purego

package llama

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// simdBound is the error allowed between a SIMD kernel and its pure-Go twin:
// (terms+8)·2⁻²²·Σ|wᵢxᵢ|, where terms is the number of float additions one
// lane makes (elements/32 for F32 and F16, blocks for the quantized types)
// and Σ|wᵢxᵢ| is over the dequantized weights and activations. Integer block
// sums are exact in both; only the order of float sums differs, each sum
// rounding by at most 2⁻²⁴ relative to the magnitude so far.
func simdBound(terms int, norm float64) float64 {
	return float64(terms+8) * 0x1p-22 * norm
}

func needSIMD(t testing.TB) {
	t.Helper()
	if !useSIMD {
		t.Skip("this CPU lacks AVX2, FMA or F16C: only the pure-Go kernels run")
	}
}

// absDot returns Σ|wᵢxᵢ|.
func absDot(w, x []float32) float64 {
	var s float64
	for i := range w {
		s += math.Abs(float64(w[i]) * float64(x[i]))
	}
	return s
}

func randFloats(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()))
	}
	return x
}

// TestSIMDDotF32MatchesGeneric: the AVX2 F32 dot equals dotF32 within
// simdBound on every length from 0 to 300 and some longer ones (tails of
// every size included).
func TestSIMDDotF32MatchesGeneric(t *testing.T) {
	needSIMD(t)
	rng := rand.New(rand.NewPCG(1, 1))
	for n := range 301 {
		checkF32(t, rng, n)
	}
	for _, n := range []int{1000, 1024, 2816, 4099} {
		checkF32(t, rng, n)
	}
}

func checkF32(t *testing.T, rng *rand.Rand, n int) {
	t.Helper()
	a, b := randFloats(rng, n), randFloats(rng, n)
	got, want := dotF32AVX2(a, b), dotF32(a, b)
	if d := math.Abs(float64(got - want)); d > simdBound(n/32, absDot(a, b)) {
		t.Fatalf("length %d: avx2 %g, generic %g", n, got, want)
	}
}

// TestSIMDDotF16MatchesGeneric: the AVX2 F16 dot (F16C conversion) equals
// the generic conversion and dot within simdBound.
func TestSIMDDotF16MatchesGeneric(t *testing.T) {
	needSIMD(t)
	rng := rand.New(rand.NewPCG(2, 2))
	lengths := []int{1000, 1024, 2816, 4099}
	for n := range 301 {
		lengths = append(lengths, n)
	}
	for _, n := range lengths {
		w := make([]byte, 2*n)
		for i := range n {
			h := f32to16(float32(rng.NormFloat64()))
			w[2*i], w[2*i+1] = byte(h), byte(h>>8)
		}
		x := randFloats(rng, n)
		roundF16(x)
		wf := make([]float32, n)
		f16row(w, wf)
		got, want := dotF16AVX2(w, x), dotF32(wf, x)
		if d := math.Abs(float64(got - want)); d > simdBound(n/32, absDot(wf, x)) {
			t.Fatalf("length %d: avx2 %g, generic %g", n, got, want)
		}
	}
}

// TestSIMDQuantizedDotsMatchGeneric: the AVX2 Q8_0, Q4_0, Q4_K, Q5_K and Q6_K dots
// equal the pure-Go ones within simdBound, on random blocks (every byte
// value, -128 included) and activations of a wide dynamic range.
func TestSIMDQuantizedDotsMatchGeneric(t *testing.T) {
	needSIMD(t)
	rng := rand.New(rand.NewPCG(3, 3))
	for _, typ := range []uint32{typeQ8_0, typeQ4_0, typeQ4_K, typeQ5_K, typeQ6_K} {
		elems, _, _ := blockLayout(typ)
		blocks := []int{1, 2, 3, 4, 5, 7, 8, 9, 16, 33}
		if elems == 32 {
			blocks = append(blocks, 64, 88, 128)
		}
		for _, nb := range blocks {
			t.Run(fmt.Sprintf("%s/%d", typeName(typ), nb), func(t *testing.T) {
				cols := nb * elems
				for range 20 {
					m := randomMatrix(t, rng, typ, 1, cols)
					in := [][]float32{randFloats(rng, cols)}
					var a acts
					a.prepare(m.kind(), in)
					w := m.raw
					var s scratch
					var got, want float32
					switch typ {
					case typeQ8_0:
						got, want = dotQ8_0AVX2(w, a.q, a.d), dotQ8_0(w, a.q, a.d)
					case typeQ4_0:
						got, want = dotQ4_0AVX2(w, a.q, a.d), dotQ4_0(w, a.q, a.d)
					case typeQ4_K:
						s.q, s.sc, s.mn = make([]int8, cols), make([]int32, cols/32), make([]int32, cols/32)
						s.d, s.dmin = make([]float32, nb), make([]float32, nb)
						unpackQ4_K(w, &s)
						got, want = dotQ4_KAVX2(w, a.q, a.d, a.bsum), s.dotQ4_K(a.q, a.d, a.bsum)
					case typeQ5_K:
						s.q, s.sc, s.mn = make([]int8, cols), make([]int32, cols/32), make([]int32, cols/32)
						s.d, s.dmin = make([]float32, nb), make([]float32, nb)
						unpackQ5_K(w, &s)
						got, want = dotQ5_KAVX2(w, a.q, a.d, a.bsum), s.dotQ4_K(a.q, a.d, a.bsum)
					case typeQ6_K:
						s.q, s.sc, s.d = make([]int8, cols), make([]int32, cols/16), make([]float32, nb)
						unpackQ6_K(w, &s)
						got, want = dotQ6_KAVX2(w, a.q, a.d), s.dotQ6_K(a.q, a.d)
					}
					wf, xf := make([]float32, cols), make([]float32, cols)
					m.row(0, wf)
					per := cols / len(a.d)
					for i := range xf {
						xf[i] = float32(a.q[i]) * a.d[i/per]
					}
					norm := absDot(wf, xf)
					if typ == typeQ4_K || typ == typeQ5_K {
						// The mins are subtracted separately: bound by Σ|dmin·min·x| too.
						for blk := range nb {
							for j := range 8 {
								for i := blk*256 + j*32; i < blk*256+j*32+32; i++ {
									norm += math.Abs(float64(s.dmin[blk]) * float64(s.mn[blk*8+j]) * float64(xf[i]))
								}
							}
						}
					}
					if d := math.Abs(float64(got - want)); d > simdBound(nb, norm) {
						t.Fatalf("avx2 %g, generic %g: difference %.3g exceeds %.3g", got, want, d, simdBound(nb, norm))
					}
				}
			})
		}
	}
}

// TestSIMDRoundF16IsExact: F16C's rounding gives bitwise the values of the
// pure-Go rounding, for normal, subnormal, overflowing and tie values.
func TestSIMDRoundF16IsExact(t *testing.T) {
	needSIMD(t)
	rng := rand.New(rand.NewPCG(4, 4))
	x := []float32{0, -0, 1, 65504, 65519, 65520, 1e9, -1e9, 6e-8, 3e-8, 2.9e-8, 1e-10, 5.96e-8,
		float32(math.Inf(1)), float32(math.Inf(-1)), 1 + 0x1p-11, 1 + 3*0x1p-11, 0x1p-14 + 0x1p-25}
	for range 100000 {
		x = append(x, math.Float32frombits(rng.Uint32()&^(0xff<<23)|uint32(100+rng.IntN(60))<<23))
	}
	got := append([]float32(nil), x...)
	roundF16AVX2(got)
	for i, v := range x {
		if want := f16table[f32to16(v)]; math.Float32bits(got[i]) != math.Float32bits(want) {
			t.Fatalf("%g (%#x): F16C %g, pure Go %g", v, math.Float32bits(v), got[i], want)
		}
	}
}

// TestSIMDAttentionKernels: madF16AVX2 and scaleF16AVX2 equal their scalar
// definitions (fused multiply-add, then rounding to F16) bitwise.
func TestSIMDAttentionKernels(t *testing.T) {
	needSIMD(t)
	rng := rand.New(rand.NewPCG(5, 5))
	for n := range 80 {
		acc, v := randFloats(rng, n), randFloats(rng, n)
		roundF16(acc)
		s := float32(rng.Float64())
		got := append([]float32(nil), acc...)
		madF16AVX2(got, v, s)
		for i := range acc {
			want := f16table[f32to16(float32(math.FMA(float64(v[i]), float64(s), float64(acc[i]))))]
			if math.Float32bits(got[i]) != math.Float32bits(want) {
				t.Fatalf("mad, length %d, element %d: %g, want %g", n, i, got[i], want)
			}
		}
		got = append(got[:0], acc...)
		scaleF16AVX2(got, s)
		for i := range acc {
			if want := f16table[f32to16(acc[i]*s)]; math.Float32bits(got[i]) != math.Float32bits(want) {
				t.Fatalf("scale, length %d, element %d: %g, want %g", n, i, got[i], want)
			}
		}
	}
}

// TestSIMDTileF16IsDot: the F16 tile kernel gives bitwise the results of
// dotF16AVX2 for every pair of its rows.
func TestSIMDTileF16IsDot(t *testing.T) {
	needSIMD(t)
	rng := rand.New(rand.NewPCG(6, 6))
	for _, n := range []int{16, 32, 48, 64, 256, 1024, 2816} {
		rb := 2*n + 32 // rows with a gap, as a stride test
		w := make([]byte, 3*rb)
		for i := range w {
			w[i] = byte(rng.Uint32())
			if i%2 == 1 {
				w[i] &= 0xbb // finite values
			}
		}
		x := randFloats(rng, 2*n+8)
		var out [6]float32
		tileF16AVX2(w, rb, x, n+8, n, &out)
		for i := range 3 {
			for j := range 2 {
				want := dotF16AVX2(w[i*rb:i*rb+2*n], x[j*(n+8):j*(n+8)+n])
				if math.Float32bits(out[2*i+j]) != math.Float32bits(want) {
					t.Fatalf("n %d: tile (%d, %d) %g, dot %g", n, i, j, out[2*i+j], want)
				}
			}
		}
	}
}

// TestSIMDTileQ8_0IsDot: the Q8_0 tile kernel gives bitwise the results of
// dotQ8_0AVX2 for every pair of its rows, odd and even block counts.
func TestSIMDTileQ8_0IsDot(t *testing.T) {
	needSIMD(t)
	rng := rand.New(rand.NewPCG(7, 7))
	for _, nb := range []int{1, 2, 3, 4, 5, 32, 33, 88} {
		cols := nb * 32
		m := randomMatrix(t, rng, typeQ8_0, 2, cols)
		var a acts
		a.prepare(actQ8_0, [][]float32{randFloats(rng, cols), randFloats(rng, cols)})
		var out [4]float32
		tileQ8_0AVX2(m.raw, m.rowBytes, a.q, a.d, cols, &out)
		for i := range 2 {
			for j := range 2 {
				want := dotQ8_0AVX2(m.raw[i*m.rowBytes:(i+1)*m.rowBytes], a.q[j*cols:(j+1)*cols], a.d[j*nb:(j+1)*nb])
				if math.Float32bits(out[2*i+j]) != math.Float32bits(want) {
					t.Fatalf("%d blocks: tile (%d, %d) %g, dot %g", nb, i, j, out[2*i+j], want)
				}
			}
		}
	}
}

// TestSIMDTileQ4_KIsDot: the Q4_K and Q5_K tile kernels give bitwise the
// results of dotQ4_KAVX2 and dotQ5_KAVX2 for every pair of their rows.
func TestSIMDTileQ4_KIsDot(t *testing.T) {
	needSIMD(t)
	rng := rand.New(rand.NewPCG(8, 8))
	for _, typ := range []uint32{typeQ4_K, typeQ5_K} {
		dot, tile := dotQ4_KAVX2, tileQ4_KAVX2
		if typ == typeQ5_K {
			dot, tile = dotQ5_KAVX2, tileQ5_KAVX2
		}
		for _, nb := range []int{1, 2, 3, 4, 11} {
			cols := nb * 256
			m := randomMatrix(t, rng, typ, 2, cols)
			var a acts
			a.prepare(actQ8_K, [][]float32{randFloats(rng, cols), randFloats(rng, cols)})
			var out [4]float32
			tile(m.raw, m.rowBytes, a.q, a.d, a.bsum, cols, &out)
			for i := range 2 {
				for j := range 2 {
					want := dot(m.raw[i*m.rowBytes:(i+1)*m.rowBytes], a.q[j*cols:(j+1)*cols], a.d[j*nb:(j+1)*nb], a.bsum[j*cols/16:(j+1)*cols/16])
					if math.Float32bits(out[2*i+j]) != math.Float32bits(want) {
						t.Fatalf("%s, %d blocks: tile (%d, %d) %g, dot %g", typeName(typ), nb, i, j, out[2*i+j], want)
					}
				}
			}
		}
	}
}

// TestSIMDTileQ6_KIsDot: the Q6_K tile kernel gives bitwise the results of
// dotQ6_KAVX2 for every pair of its rows.
func TestSIMDTileQ6_KIsDot(t *testing.T) {
	needSIMD(t)
	rng := rand.New(rand.NewPCG(9, 9))
	for _, nb := range []int{1, 2, 3, 4, 11} {
		cols := nb * 256
		m := randomMatrix(t, rng, typeQ6_K, 2, cols)
		var a acts
		a.prepare(actQ8_K, [][]float32{randFloats(rng, cols), randFloats(rng, cols)})
		var out [4]float32
		tileQ6_KAVX2(m.raw, m.rowBytes, a.q, a.d, cols, &out)
		for i := range 2 {
			for j := range 2 {
				want := dotQ6_KAVX2(m.raw[i*m.rowBytes:(i+1)*m.rowBytes], a.q[j*cols:(j+1)*cols], a.d[j*nb:(j+1)*nb])
				if math.Float32bits(out[2*i+j]) != math.Float32bits(want) {
					t.Fatalf("%d blocks: tile (%d, %d) %g, dot %g", nb, i, j, out[2*i+j], want)
				}
			}
		}
	}
}

// TestBatchProductDoesNotAllocate: a product of a batch (the tiled kernels)
// allocates nothing once the workspace has grown.
func TestBatchProductDoesNotAllocate(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	for _, typ := range kernelTypes {
		m := randomMatrix(t, rng, typ, 60, 512)
		in := randomRows(rng, 5, 512)
		out := randomRows(rng, 5, 60)
		w := newWorkspace(2)
		w.team.start()
		allocs := testing.AllocsPerRun(10, func() {
			w.use(in)
			w.mul(m, out)
		})
		w.team.stop()
		if allocs != 0 {
			t.Errorf("%s: %v allocations per product, want 0", typeName(typ), allocs)
		}
	}
}

// TestSIMDExpfIsGGML: the AVX2 exponential (expfAVX2, the one siluMulAVX2
// uses) gives ggml's fused ggml_v_expf: bitwise vexpf(x, true) but for
// vexpf's rare double roundings (at most 1 ulp), fast and slow paths
// included (the sweep runs into overflow and underflow).
func TestSIMDExpfIsGGML(t *testing.T) {
	needSIMD(t)
	xs := expfSweep()
	for x := float32(-110); x < 95; x += 0.25 {
		xs = append(xs, x)
	}
	got := append([]float32(nil), xs...)
	expfAVX2(got)
	differ := 0
	for i, x := range xs[:len(xs)&^7] {
		want := vexpf(x, true)
		if math.Float32bits(got[i]) != math.Float32bits(want) {
			differ++
			if ulps(got[i], want) > 1 {
				t.Fatalf("exp(%g): avx2 %g, ggml %g", x, got[i], want)
			}
		}
	}
	t.Logf("%d values, %d one ulp apart (double rounding in the Go emulation)", len(xs), differ)
}

// TestSIMDSiLUMulMatchesGeneric: the AVX2 SiLU (8 lanes, fused, as
// llama.cpp's AVX2 build) and the pure-Go one (4 lanes, unfused, as its
// portable build) agree within 4 ulp of the result (each exp is within 2 ulp
// of exact, then one addition, one division and one product) on every
// length from 0 to 300 and long ones.
func TestSIMDSiLUMulMatchesGeneric(t *testing.T) {
	needSIMD(t)
	rng := rand.New(rand.NewPCG(15, 15))
	lengths := []int{1000, 2816, 4099}
	for n := range 301 {
		lengths = append(lengths, n)
	}
	var worst int64
	for _, n := range lengths {
		g, u := randFloats(rng, n), randFloats(rng, n)
		want := append([]float32(nil), g...)
		for i, x := range want {
			e := float32(math.Exp(float64(-x)))
			if i < n&^3 {
				e = vexpf(-x, false)
			}
			want[i] = x / (1 + e) * u[i]
		}
		siluMul(g, u)
		for i := range g {
			d := ulps(g[i], want[i])
			worst = max(worst, d)
			if d > 4 && math.Abs(float64(g[i]-want[i])) > 1e-30 {
				t.Fatalf("length %d element %d: avx2 %g, generic %g (%d ulp)", n, i, g[i], want[i], d)
			}
		}
	}
	t.Logf("largest difference %d ulp", worst)
}

// BenchmarkSiLUMul: the FFN's SiLU on a row of 2816 (the bench model's FFN
// width), with the AVX2 kernel and with the pure-Go one.
func BenchmarkSiLUMul(b *testing.B) {
	needSIMD(b)
	rng := rand.New(rand.NewPCG(18, 18))
	g0, u := randFloats(rng, 2816), randFloats(rng, 2816)
	g := make([]float32, len(g0))
	for _, simd := range []bool{true, false} {
		name := "avx2"
		if !simd {
			name = "generic"
		}
		b.Run(name, func(b *testing.B) {
			defer func(old bool) { useSIMD = old }(useSIMD)
			useSIMD = simd
			for b.Loop() {
				copy(g, g0)
				siluMul(g, u)
			}
		})
	}
}
