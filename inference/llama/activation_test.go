package llama

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// ulps returns how many float32 steps apart a and b are (both finite, same sign).
func ulps(a, b float32) int64 {
	d := int64(math.Float32bits(a)) - int64(math.Float32bits(b))
	if d < 0 {
		d = -d
	}
	return d
}

// expfSweep returns float32 values from -87 to 88 (where exp is a normal
// float32), every 2⁻¹² apart plus random ones.
func expfSweep() []float32 {
	var xs []float32
	for x := -87.0; x <= 88; x += 0x1p-12 {
		xs = append(xs, float32(x))
	}
	rng := rand.New(rand.NewPCG(13, 13))
	for range 1 << 16 {
		xs = append(xs, float32(rng.Float64()*175-87))
	}
	return xs
}

// TestExpfError: ggml_v_expf, as vexpf computes it in both its forms, is
// within 2 ulp of the correctly rounded exponential (ggml states 1.45358 +
// 0.5 ulp) from -87 to 88; measured: see the log.
func TestExpfError(t *testing.T) {
	xs := expfSweep()
	for _, fused := range []bool{false, true} {
		var worst int64
		var worstRel float64
		for _, x := range xs {
			want := math.Exp(float64(x))
			got := vexpf(x, fused)
			worst = max(worst, ulps(got, float32(want)))
			worstRel = max(worstRel, math.Abs(float64(got)-want)/want)
		}
		t.Logf("fused %v: %d values, largest error %d ulp, %.3g relative to math.Exp", fused, len(xs), worst, worstRel)
		if worst > 2 || worstRel > 2.5e-7 {
			t.Errorf("fused %v: error up to %d ulp (%.3g relative)", fused, worst, worstRel)
		}
	}
	// Beyond the normal range: overflow to +Inf, underflow to 0 or a subnormal.
	for _, fused := range []bool{false, true} {
		if got := vexpf(89, fused); !math.IsInf(float64(got), 1) {
			t.Errorf("fused %v: exp(89) = %g, want +Inf", fused, got)
		}
		if got := vexpf(-104, fused); got != 0 {
			t.Errorf("fused %v: exp(-104) = %g, want 0", fused, got)
		}
		if got, want := vexpf(-90, fused), math.Exp(-90); math.Abs(float64(got)-want) > 0x1p-149 {
			t.Errorf("fused %v: exp(-90) = %g, want %g", fused, got, want)
		}
	}
}

// TestSiLUMulPortable: without the SIMD kernels, siluMul follows the
// portable build: whole groups of 4 through ggml_v_expf without FMA, the
// tail through exp.
func TestSiLUMulPortable(t *testing.T) {
	if useSIMD {
		t.Skip("the SIMD kernels run siluMul here; TestSIMDSiLUMulMatchesGeneric covers them")
	}
	rng := rand.New(rand.NewPCG(14, 14))
	for n := range 40 {
		g, u := randomRows(rng, 1, n)[0], randomRows(rng, 1, n)[0]
		want := make([]float32, n)
		for i, x := range g {
			e := float32(math.Exp(float64(-x)))
			if i < n&^3 {
				e = vexpf(-x, false)
			}
			want[i] = x / (1 + e) * u[i]
		}
		siluMul(g, u)
		for i := range g {
			if math.Float32bits(g[i]) != math.Float32bits(want[i]) {
				t.Fatalf("length %d element %d: %g, want %g", n, i, g[i], want[i])
			}
		}
	}
}

// TestSoftmax: softmax, in both forms (8 lanes fused as llama.cpp's AVX2
// build, 4 unfused as its portable one), sums to 1 within float32
// rounding, keeps the order of its inputs (checked up to length 40), and
// equals math.Exp's softmax within 6 ulp (ggml_v_expf's 2 ulp, the float32
// partial sums and the scaling), on every length from 0 to 300 and long ones
// (whole vectors and tails of both widths), inputs from -90 to 90.
func TestSoftmax(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 17))
	lengths := []int{1000, 4099}
	for n := range 301 {
		lengths = append(lengths, n)
	}
	for _, wide := range []bool{false, true} {
		var worst int64
		for _, n := range lengths {
			reps := 20
			if n > 40 {
				reps = 2
			}
			for range reps {
				x := make([]float32, n)
				for i := range x {
					x[i] = float32(rng.Float64()*180 - 90)
				}
				y := slices.Clone(x)
				softmaxWith(y, wide)
				if n == 0 {
					continue
				}
				mx := slices.Max(x)
				var ref, sum float64
				for _, v := range x {
					ref += math.Exp(float64(v - mx))
				}
				for i, v := range y {
					sum += float64(v)
					want := math.Exp(float64(x[i]-mx)) / ref
					if want < 0x1p-100 {
						continue // near the subnormal range: absolute error only
					}
					d := ulps(v, float32(want))
					worst = max(worst, d)
					if d > 6 {
						t.Fatalf("wide %v, length %d element %d: %g, want %g (%d ulp)", wide, n, i, v, want, d)
					}
					for j := range x[:min(n, 40)] {
						if n <= 40 && x[j] < x[i] && y[j] > v {
							t.Fatalf("wide %v, length %d: x[%d] < x[%d] but its softmax is greater", wide, n, j, i)
						}
					}
				}
				if math.Abs(sum-1) > float64(n)*0x1p-23 {
					t.Fatalf("wide %v, length %d: sums to %g", wide, n, sum)
				}
			}
		}
		t.Logf("wide %v: largest difference from math.Exp's softmax %d ulp", wide, worst)
	}
}
