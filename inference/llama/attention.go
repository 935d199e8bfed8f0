package llama

import (
	"math"
	"unsafe"
)

//go:generate sh -c "cd internal/asm/kvcache && go run . -out ../../../kvcache_amd64.s -stubs ../../../kvcache_stubs_amd64.go -pkg llama"

// The KV cache holds binary16 values, as llama.cpp's default cache type
// (F16): K and V rows are rounded to F16 when stored, and attention reads
// them back exactly, so storing them as uint16 rather than as float32
// holding F16 values halves the cache and changes no result. The kernels
// that read it (dotKF16, madVF16) compute bitwise what the float32 ones
// (dotF32AVX2 or dotSeq, madF16) compute on the widened values.

// store writes the K and V rows of position pos of layer li, rounded to
// F16, into the cache. It rounds k and v in place.
func (s *State) store(li, pos int, k, v []float32) {
	roundF16(k)
	roundF16(v)
	kc, vc := s.k[li][pos*len(k):][:len(k)], s.v[li][pos*len(v):][:len(v)]
	for i := range k {
		kc[i], vc[i] = f32to16(k[i]), f32to16(v[i]) // exact: k and v are F16 values
	}
}

// attnJob computes attention for the (row, head) pairs of a batch, index i
// being row i/Heads and head i%Heads, so that heads run on all workers. A
// head's result does not depend on which worker runs it.
type attnJob struct {
	s      *State
	li     int
	q, out [][]float32
	qh     [][]float32 // per worker: the query head rounded to F16
}

func (j *attnJob) run(lo, hi, worker int) {
	c := j.s.m.Config
	qh := j.qh[worker]
	for i := lo; i < hi; i++ {
		b, hd := i/c.Heads, i%c.Heads
		copy(qh, j.q[b][hd*c.HeadDim:(hd+1)*c.HeadDim])
		roundF16(qh)
		acc := j.out[b][hd*c.HeadDim : (hd+1)*c.HeadDim]
		off := hd / (c.Heads / c.KVHeads) * c.HeadDim
		j.s.attendHead(j.li, j.s.pos+b+1, off, qh, acc)
	}
}

// attendHead sets acc to the attention of query head qh (rounded to F16)
// over the first end cache positions of layer li, at offset off of each
// cache row, as llama.cpp's CPU flash attention does with an F16 cache:
// scores from F16 dot products, an online softmax, and an F16 accumulator.
// With the SIMD kernels the dot products and the accumulator's multiply-adds
// are those of llama.cpp's AVX2 build (float32 lanes, fused); without them,
// those of its portable build (dot products summed in float64).
func (s *State) attendHead(li, end, off int, qh, acc []float32) {
	c := s.m.Config
	kvDim := c.KVHeads * c.HeadDim
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	kc, vc := s.k[li], s.v[li]
	clear(acc)
	mx := float32(math.Inf(-1))
	var sum float32
	for p := range end {
		kr, vr := kc[p*kvDim+off:][:len(qh)], vc[p*kvDim+off:][:len(acc)]
		sc := dotKF16(qh, kr) * scale
		ms, vs := float32(1), float32(1)
		if sc > mx {
			ms = float32(math.Exp(float64(mx - sc)))
			mx = sc
			scaleF16(acc, ms)
		} else {
			vs = float32(math.Exp(float64(sc - mx)))
		}
		madVF16(acc, vr, vs)
		sum = float32(sum*ms) + vs
	}
	inv := 1 / sum
	for i := range acc {
		acc[i] *= inv
	}
}

// scaleF16 sets acc[i] to acc[i]·s rounded to F16.
func scaleF16(acc []float32, s float32) {
	if useSIMD {
		scaleF16AVX2(acc, s)
		return
	}
	for i := range acc {
		acc[i] = f16table[f32to16(acc[i]*s)]
	}
}

// dotKF16Go is dotSeq(q, k widened to float32): products in float32,
// summed in float64, as llama.cpp's portable ggml_vec_dot_f16.
func dotKF16Go(q []float32, k []uint16) float32 {
	k = k[:len(q)]
	var s float64
	for i, x := range q {
		s += float64(x * f16table[k[i]])
	}
	return float32(s)
}

// madVF16Go sets acc[i] to acc[i] + v[i]·s rounded to F16, v[:len(acc)]
// being a cache row: the product rounded first, as llama.cpp's portable
// build (the SIMD kernels fuse it with the sum, as its AVX2 build).
func madVF16Go(acc []float32, v []uint16, s float32) {
	v = v[:len(acc)]
	for i := range acc {
		acc[i] = f16table[f32to16(acc[i]+float32(f16table[v[i]]*s))]
	}
}

// cacheBytes returns the size of s's KV cache.
func (s *State) cacheBytes() int {
	n := 0
	for i := range s.k {
		n += len(s.k[i]) + len(s.v[i])
	}
	return n * int(unsafe.Sizeof(s.k[0][0]))
}
