package llama

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// randomMatrix returns a rows×cols matrix of type typ with random values and
// sane block scales.
func randomMatrix(t *testing.T, rng *rand.Rand, typ uint32, rows, cols int) *matrix {
	t.Helper()
	elems, size, _ := blockLayout(typ)
	data := make([]byte, rows*cols/elems*size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	scale := func(b []byte, v float32) { binary.LittleEndian.PutUint16(b, f32to16(v)) }
	for blk := 0; blk < len(data)/size; blk++ {
		b := data[blk*size : (blk+1)*size]
		switch typ {
		case typeF32:
			binary.LittleEndian.PutUint32(b, math.Float32bits(float32(rng.NormFloat64())))
		case typeF16:
			scale(b, float32(rng.NormFloat64()))
		case typeQ8_0, typeQ4_0:
			scale(b, 0.01+0.02*rng.Float32())
		case typeQ4_K, typeQ5_K:
			scale(b, 0.01+0.02*rng.Float32())
			scale(b[2:], 0.01*rng.Float32())
		case typeQ6_K:
			scale(b[208:], 0.001+0.002*rng.Float32())
		}
	}
	m, err := newMatrix(typ, rows, cols, data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func randomRows(rng *rand.Rand, n, cols int) [][]float32 {
	r := make([][]float32, n)
	for i := range r {
		r[i] = make([]float32, cols)
		for j := range r[i] {
			r[i][j] = float32(rng.NormFloat64())
		}
	}
	return r
}

var kernelTypes = []uint32{typeF32, typeF16, typeQ8_0, typeQ4_0, typeQ4_K, typeQ5_K, typeQ6_K}

// product runs m · in on a workspace of the given number of workers.
func product(m *matrix, in [][]float32, workers int) [][]float32 {
	w := newWorkspace(workers)
	w.team.start()
	defer w.team.stop()
	out := make([][]float32, len(in))
	for i := range out {
		out[i] = make([]float32, m.rows)
	}
	w.use(in)
	w.mul(m, out)
	return out
}

// TestMulRowIndependentOfBatchAndWorkers: a row's product is bitwise the same
// alone, in a batch of others, and on 1, 2 or 3 workers.
func TestMulRowIndependentOfBatchAndWorkers(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, typ := range kernelTypes {
		t.Run(typeName(typ), func(t *testing.T) {
			m := randomMatrix(t, rng, typ, 300, 512)
			in := randomRows(rng, 5, 512)
			batch := product(m, in, 2)
			for _, workers := range []int{1, 2, 3} {
				for i := range in {
					alone := product(m, in[i:i+1], workers)[0]
					for r := range alone {
						if math.Float32bits(alone[r]) != math.Float32bits(batch[i][r]) {
							t.Fatalf("%d workers: row %d output %d: %g alone, %g in the batch", workers, i, r, alone[r], batch[i][r])
						}
					}
				}
			}
		})
	}
}

// TestMulMatchesDequantized: the block kernels compute the product of the
// dequantized weights and the quantized activations.
func TestMulMatchesDequantized(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, typ := range kernelTypes {
		t.Run(typeName(typ), func(t *testing.T) {
			m := randomMatrix(t, rng, typ, 16, 512)
			in := randomRows(rng, 2, 512)
			got := product(m, in, 2)
			var a acts
			a.prepare(m.kind(), in)
			w := make([]float32, m.cols)
			for b := range in {
				x := make([]float32, m.cols)
				switch a.kind {
				case actF32:
					copy(x, in[b])
				case actF16:
					copy(x, a.f[b*m.cols:])
				case actQ8_0:
					for i := range x {
						x[i] = float32(a.q[b*m.cols+i]) * a.d[(b*m.cols+i)/32]
					}
				case actQ8_K:
					for i := range x {
						x[i] = float32(a.q[b*m.cols+i]) * a.d[(b*m.cols+i)/256]
					}
				}
				for r := range m.rows {
					m.row(r, w)
					var want, norm float64
					for i := range w {
						want += float64(w[i]) * float64(x[i])
						norm += math.Abs(float64(w[i]) * float64(x[i]))
					}
					if d := math.Abs(float64(got[b][r]) - want); d > 1e-5*norm {
						t.Fatalf("row %d output %d: %g, dequantized %g", b, r, got[b][r], want)
					}
				}
			}
		})
	}
}

// TestExpertRowIndependentOfBatch: Expert.Apply gives a row bitwise the same
// result whatever other rows are in the call, which distributed experts rely on.
func TestExpertRowIndependentOfBatch(t *testing.T) {
	c := randmodel.Tiny()
	c.Embedding, c.FeedForward = 256, 512 // large enough for the products to be split over workers
	for _, typ := range []randmodel.TensorType{randmodel.F32, randmodel.F16} {
		c.Type = typ
		m := load(t, c)
		e, err := m.Expert(1, 2)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(5, 6))
		in := randomRows(rng, 7, c.Embedding)
		batch := randomRows(rng, 7, c.Embedding)
		if err := e.Apply(in, batch); err != nil {
			t.Fatal(err)
		}
		for i := range in {
			alone := randomRows(rng, 1, c.Embedding)
			// Alone, and with other rows around it in another order.
			if err := e.Apply(in[i:i+1], alone); err != nil {
				t.Fatal(err)
			}
			mixed := [][]float32{in[(i+3)%7], in[i], in[(i+1)%7]}
			mixedOut := randomRows(rng, 3, c.Embedding)
			if err := e.Apply(mixed, mixedOut); err != nil {
				t.Fatal(err)
			}
			for j := range alone[0] {
				if math.Float32bits(alone[0][j]) != math.Float32bits(batch[i][j]) || math.Float32bits(mixedOut[1][j]) != math.Float32bits(batch[i][j]) {
					t.Fatalf("%v: row %d element %d: %g alone, %g in a batch of 7, %g in a batch of 3", typ, i, j, alone[0][j], batch[i][j], mixedOut[1][j])
				}
			}
		}
	}
}

// TestDecodeDoesNotAllocate: once a State has run its prompt, decoding a
// token allocates nothing (buffers are reused, helpers start from a prebuilt
// function value).
func TestDecodeDoesNotAllocate(t *testing.T) {
	dense := randmodel.TinyDense()
	dense.Embedding, dense.FeedForward = 256, 1024 // products large enough to use every worker
	moe := randmodel.Tiny()
	for _, c := range []randmodel.Config{dense, moe} {
		m := load(t, c)
		st := m.NewState(0, nil)
		ctx := context.Background()
		if _, err := st.Forward(ctx, []int{1, 70, 71, 72}); err != nil {
			t.Fatal(err)
		}
		tok := []int{80}
		allocs := testing.AllocsPerRun(20, func() {
			if _, err := st.Forward(ctx, tok); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per decoded token, want 0", c.Name, allocs)
		}
	}
}
