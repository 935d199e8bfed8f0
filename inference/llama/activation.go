package llama

import "math"

// SiLU as llama.cpp computes it. Its FFN calls ggml_vec_swiglu_f32, which
// runs ggml_v_silu, x/(1+ggml_v_expf(-x)), on whole vectors and the scalar
// x/(1+expf(-x)) on the tail: 4 lanes without FMA in the portable build
// (SSE2 is part of x86-64), 8 lanes with FMA in the AVX2 build.
// ggml_v_expf is a polynomial approximation with a stated maximum error of
// 1.45358 + 0.5 ulp (TestExpfError measures it against math.Exp).

// siluMul sets g[i] = silu(g[i])·u[i], as ggml_vec_swiglu_f32 does in
// llama.cpp's AVX2 build with the SIMD kernels, in its portable build
// without them.
func siluMul(g, u []float32) {
	u = u[:len(g)]
	i, ok := siluMulSIMD(g, u)
	if !ok {
		for n := len(g) &^ 3; i < n; i++ { // whole groups of 4 lanes
			g[i] = g[i] / (1 + vexpf(-g[i], false)) * u[i]
		}
	}
	for ; i < len(g); i++ {
		g[i] = g[i] / (1 + float32(math.Exp(float64(-g[i])))) * u[i]
	}
}

// vexpf is ggml_v_expf on one lane: with fused multiply-adds (the AVX2
// build's _mm256_fmadd_ps) or with a product rounded before the sum (the
// SSE2 build's MADD128).
func vexpf(x float32, fused bool) float32 {
	if fused {
		return vexpfFused(x)
	}
	return vexpfUnfused(x)
}

// madd32 returns a·b+c with the product rounded first. The explicit
// conversion keeps any compiler from fusing it (Go may fuse x*y+z on arm64).
func madd32(a, b, c float32) float32 { return float32(a*b) + c }

// fma32 returns a·b+c rounded once to float32, through float64: the product
// is exact there, and the sum rounds twice differently from once only when
// the float64 sum lands on a float32 tie (about 2⁻²⁹ of cases).
func fma32(a, b, c float32) float32 { return float32(math.FMA(float64(a), float64(b), float64(c))) }

// vexpfUnfused and vexpfFused are ggml_v_expf with madd32 and fma32: two
// copies of the same lines, so that both multiply-adds inline.
func vexpfUnfused(x float32) float32 {
	const r = float32(0x1.8p23)
	z := madd32(x, 0x1.715476p+0, r)
	n := float32(z - r)
	b := madd32(-n, 0x1.7f7d1cp-20, madd32(-n, 0x1.62e4p-1, x))
	e := math.Float32bits(z) << 23
	k := math.Float32frombits(e + math.Float32bits(1))
	u := float32(b * b)
	j := madd32(madd32(madd32(0x1.0e4020p-7, b, 0x1.573e2ep-5), u, madd32(0x1.555e66p-3, b, 0x1.fffdb6p-2)), u, float32(0x1.ffffecp-1*b))
	if abs32(n) <= 126 {
		return madd32(j, k, k)
	}
	return vexpfSlow(n, e, j, false)
}

func vexpfFused(x float32) float32 {
	const r = float32(0x1.8p23)
	z := fma32(x, 0x1.715476p+0, r)
	n := float32(z - r)
	b := fma32(-n, 0x1.7f7d1cp-20, fma32(-n, 0x1.62e4p-1, x))
	e := math.Float32bits(z) << 23
	k := math.Float32frombits(e + math.Float32bits(1))
	u := float32(b * b)
	j := fma32(fma32(fma32(0x1.0e4020p-7, b, 0x1.573e2ep-5), u, fma32(0x1.555e66p-3, b, 0x1.fffdb6p-2)), u, float32(0x1.ffffecp-1*b))
	if abs32(n) <= 126 {
		return fma32(j, k, k)
	}
	return vexpfSlow(n, e, j, true)
}

// vexpfSlow is ggml_v_expf's path for |n| > 126, results near overflow or
// underflow: the scale split in two factors s1·s2.
func vexpfSlow(n float32, e uint32, j float32, fused bool) float32 {
	var g uint32
	if n <= 0 {
		g = 0x82000000
	}
	s1 := math.Float32frombits(g + 0x7f000000)
	s2 := math.Float32frombits(e - g)
	if abs32(n) > 192 {
		return float32(s1 * s1)
	}
	if fused {
		return float32(fma32(s2, j, s2) * s1)
	}
	return float32(madd32(s2, j, s2) * s1)
}

// softmax replaces x by its softmax as ggml's soft_max op does
// (ggml_vec_soft_max_f32): exp(x-max) through ggml_v_expf on whole vectors,
// each vector's lanes summed in float32 and added to a float64 sum, exp on
// the tail; then x scaled by float32(1/sum). The vectors are 8 lanes with
// FMA in llama.cpp's AVX2 build (with the SIMD kernels), 4 lanes without FMA
// in its portable build.
func softmax(x []float32) { softmaxWith(x, softmaxWide()) }

// softmaxWith is softmax with vectors of 8 lanes and FMA (wide) or of 4
// lanes without.
func softmaxWith(x []float32, wide bool) {
	mx := float32(math.Inf(-1))
	for _, v := range x {
		mx = max(mx, v)
	}
	var sum float64
	i := 0
	if wide {
		var e [8]float32
		for ; i+8 <= len(x); i += 8 {
			for l := range e {
				e[l] = vexpf(x[i+l]-mx, true)
				x[i+l] = e[l]
			}
			// _mm256 high half plus low half, then movehl, then movehdup.
			a0, a1, a2, a3 := e[4]+e[0], e[5]+e[1], e[6]+e[2], e[7]+e[3]
			sum += float64(float32(a0+a2) + float32(a1+a3))
		}
	} else {
		for ; i+4 <= len(x); i += 4 {
			e0, e1 := vexpf(x[i]-mx, false), vexpf(x[i+1]-mx, false)
			e2, e3 := vexpf(x[i+2]-mx, false), vexpf(x[i+3]-mx, false)
			x[i], x[i+1], x[i+2], x[i+3] = e0, e1, e2, e3
			// SSE2: pairs by shuffle, then the high pair's sum by movehl.
			sum += float64(float32(e0+e1) + float32(e2+e3))
		}
	}
	for ; i < len(x); i++ {
		e := float32(math.Exp(float64(x[i] - mx)))
		x[i] = e
		sum += float64(e)
	}
	inv := float32(1 / sum)
	for i := range x {
		x[i] *= inv
	}
}
