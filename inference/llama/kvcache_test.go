package llama

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// widened returns the binary16 values h as float32.
func widened(h []uint16) []float32 {
	w := make([]float32, len(h))
	for i, x := range h {
		w[i] = f16table[x]
	}
	return w
}

// randF16 returns n random binary16 values of magnitude below about scale
// (finite, with subnormals among them).
func randF16(rng *rand.Rand, n int, scale float64) []uint16 {
	h := make([]uint16, n)
	for i := range h {
		h[i] = f32to16(float32(rng.NormFloat64() * scale))
	}
	return h
}

// dotRef and madRef are the float32 kernels attention ran on an F32 cache
// holding F16 values, before the cache became F16: the oracles of dotKF16
// and madVF16.
func dotRef(q, k []float32) float32 {
	if useSIMD {
		return dotF32AVX2(q, k)
	}
	return dotSeq(q, k)
}

func madRef(acc, v []float32, s float32) {
	if useSIMD {
		madF16AVX2(acc, v[:len(acc)], s)
		return
	}
	v = v[:len(acc)]
	for i := range acc {
		acc[i] = f16table[f32to16(acc[i]+float32(v[i]*s))]
	}
}

// TestKVKernelsMatchF32: the kernels that read the F16 cache compute
// bitwise what the float32 kernels computed on the same values widened, for
// every length to 300 and long rows (tails of every size), and the pure-Go
// twins match the float32 pure-Go ones.
func TestKVKernelsMatchF32(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	lengths := []int{512, 1000}
	for n := range 301 {
		lengths = append(lengths, n)
	}
	for _, n := range lengths {
		q := widened(randF16(rng, n, 2))
		k := randF16(rng, n, 2)
		kw := widened(k)
		if got, want := dotKF16(q, k), dotRef(q, kw); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("n=%d: dotKF16 = %v, float32 kernel %v", n, got, want)
		}
		if got, want := dotKF16Go(q, k), dotSeq(q, kw); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("n=%d: dotKF16Go = %v, dotSeq %v", n, got, want)
		}
		acc := widened(randF16(rng, n, 1))
		want := append([]float32(nil), acc...)
		s := float32(rng.Float64())
		madVF16(acc, k, s)
		madRef(want, kw, s)
		for i := range acc {
			if math.Float32bits(acc[i]) != math.Float32bits(want[i]) {
				t.Fatalf("n=%d: madVF16[%d] = %v, float32 kernel %v", n, i, acc[i], want[i])
			}
		}
	}
}

// attendRef is attendHead as it was on an F32 cache holding F16 values.
func (s *State) attendRef(li, end, off int, qh, acc []float32) {
	c := s.m.Config
	kvDim := c.KVHeads * c.HeadDim
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	kc, vc := widened(s.k[li]), widened(s.v[li])
	clear(acc)
	mx := float32(math.Inf(-1))
	var sum float32
	for p := range end {
		kr, vr := kc[p*kvDim+off:][:len(qh)], vc[p*kvDim+off:][:len(acc)]
		sc := dotRef(qh, kr) * scale
		ms, vs := float32(1), float32(1)
		if sc > mx {
			ms = float32(math.Exp(float64(mx - sc)))
			mx = sc
			scaleF16(acc, ms)
		} else {
			vs = float32(math.Exp(float64(sc - mx)))
		}
		madRef(acc, vr, vs)
		sum = float32(sum*ms) + vs
	}
	inv := 1 / sum
	for i := range acc {
		acc[i] *= inv
	}
}

// TestF16CacheAttentionBitwise: after a prompt fills the cache of a real
// model, every head of every layer attends bitwise as it did when the cache
// was float32 holding F16 values, with heads of 16 and of 64 (the 32-lane
// loop of the SIMD kernel) and grouped-query attention.
func TestF16CacheAttentionBitwise(t *testing.T) {
	gqa := randmodel.Config{Name: "gqa", Embedding: 256, Layers: 2, FeedForward: 256, Heads: 4, KVHeads: 2,
		ContextLength: 256, Type: randmodel.F16, Seed: 9, Scale: 0.1, Printable: true}
	for _, c := range []randmodel.Config{randmodel.TinyDense(), gqa} {
		t.Run(c.Name, func(t *testing.T) {
			m := load(t, c)
			st := m.NewState(0, nil)
			prompt := m.Vocab.Encode("the cache holds binary16 values, as llama.cpp's default cache does")
			if _, err := st.Forward(context.Background(), prompt); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(5, 6))
			hd := m.Config.HeadDim
			qh := widened(randF16(rng, hd, 1))
			got, want := make([]float32, hd), make([]float32, hd)
			for li := range m.Config.Layers {
				for kv := range m.Config.KVHeads {
					for _, end := range []int{1, st.pos / 2, st.pos} {
						st.attendHead(li, end, kv*hd, qh, got)
						st.attendRef(li, end, kv*hd, qh, want)
						for i := range got {
							if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
								t.Fatalf("layer %d kv head %d over %d positions: [%d] = %v, F32 cache %v", li, kv, end, i, got[i], want[i])
							}
						}
					}
				}
			}
			if got, want := st.cacheBytes(), 2*m.Config.Layers*st.ctxLen*m.Config.KVHeads*hd*2; got != want {
				t.Errorf("cache of %d bytes, want %d (2 bytes a value)", got, want)
			}
		})
	}
}
