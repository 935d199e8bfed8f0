package llama

import (
	"math"
	"unsafe"
)

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
		var sc float32
		if useSIMD {
			sc = dotF32AVX2(qh, kr) * scale
		} else {
			sc = dotSeq(qh, kr) * scale
		}
		ms, vs := float32(1), float32(1)
		if sc > mx {
			ms = float32(math.Exp(float64(mx - sc)))
			mx = sc
			scaleF16(acc, ms)
		} else {
			vs = float32(math.Exp(float64(sc - mx)))
		}
		madF16(acc, vr, vs)
		sum = sum*ms + vs
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

// madF16 sets acc[i] to acc[i] + v[i]·s rounded to F16: the product rounded
// first in the pure-Go kernels (as llama.cpp's portable build), fused with
// the sum in the SIMD ones (as its AVX2 build).
func madF16(acc, v []float32, s float32) {
	if useSIMD {
		madF16AVX2(acc, v[:len(acc)], s)
		return
	}
	v = v[:len(acc)]
	for i := range acc {
		acc[i] = f16table[f32to16(acc[i]+float32(v[i]*s))]
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
