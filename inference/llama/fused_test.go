package llama

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// TestFusedProductsAreSeparateProducts: products run as one job (w.begin,
// w.add, w.addRows, w.run), of every weight type, on inputs of different
// batch sizes and on a range of an input's rows, give bitwise what each
// gives run alone (matrix.mul), on 1, 2 and 3 workers.
func TestFusedProductsAreSeparateProducts(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, typ := range kernelTypes {
		t.Run(typeName(typ), func(t *testing.T) {
			// Shapes of a decode step's small products and of odd sizes,
			// so that chunks end inside tiles and products.
			ms := []*matrix{randomMatrix(t, rng, typ, 512, 512), randomMatrix(t, rng, typ, 1, 512),
				randomMatrix(t, rng, typ, 37, 512), randomMatrix(t, rng, typ, 300, 512)}
			ins := [][][]float32{randomRows(rng, 1, 512), randomRows(rng, 5, 512), randomRows(rng, 2, 512)}
			var want [][][]float32 // per (input, matrix)
			for _, in := range ins {
				for _, m := range ms {
					want = append(want, product(m, in, 1))
				}
			}
			// Rows 1 to 3 of the batch of 5, as addRows takes them.
			for _, m := range ms {
				want = append(want, product(m, ins[1][1:4], 1))
			}
			for _, workers := range []int{1, 2, 3} {
				w := newWorkspace(workers)
				w.team.start()
				w.begin(len(ins), len(ms))
				var got [][][]float32
				for i, in := range ins {
					w.input(i, in)
					for _, m := range ms {
						out := randomRows(rng, len(in), m.rows)
						w.add(i, m, out)
						got = append(got, out)
					}
				}
				for _, m := range ms {
					out := randomRows(rng, 3, m.rows)
					w.addRows(1, 1, 4, m, out)
					got = append(got, out)
				}
				w.run()
				w.team.stop()
				for p := range want {
					for b := range want[p] {
						for r := range want[p][b] {
							if math.Float32bits(got[p][b][r]) != math.Float32bits(want[p][b][r]) {
								t.Fatalf("%d workers, product %d row %d element %d: fused %g, alone %g", workers, p, b, r, got[p][b][r], want[p][b][r])
							}
						}
					}
				}
			}
		})
	}
}

// separateExperts hides that its Experts are a model's own, so that a State
// runs each expert in a call of its own and the shared expert after them
// (the path of experts held elsewhere), not localExperts' fused jobs.
type separateExperts struct{ Experts }

// TestFusedExpertsGiveTheSameLogits: a State running its experts locally
// (every expert's gate and up products in one job, their down products in
// another, the shared expert with them) gives bitwise the logits of one
// running each expert and the shared expert separately, for a prompt (rows
// of one expert grouped) and decode steps, on MoE models of each family
// with products large enough to be split over the workers.
func TestFusedExpertsGiveTheSameLogits(t *testing.T) {
	wide := func(c randmodel.Config, typ randmodel.TensorType) randmodel.Config {
		c.Embedding, c.Type = 256, typ
		c.Name += "-wide-" + typ.String()
		return c
	}
	var cases []randmodel.Config
	for _, typ := range []randmodel.TensorType{randmodel.F32, randmodel.F16} {
		q2 := wide(randmodel.TinyQwen2MoE(), typ)
		q2.FeedForward, q2.SharedFeedForward = 256, 512
		q3 := wide(randmodel.TinyQwen3MoE(), typ)
		q3.FeedForward = 192
		mx := wide(randmodel.Tiny(), typ)
		cases = append(cases, q2, q3, mx)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			m := load(t, c)
			ctx := context.Background()
			fused, separate := m.NewState(0, nil), m.NewState(0, separateExperts{m.Local()})
			prompt := m.Vocab.Encode("Hello there, the quick brown fox jumps over the lazy dog.")
			for step, toks := range [][]int{prompt, {80}, {81}, {90}} {
				want, err := separate.Forward(ctx, toks)
				if err != nil {
					t.Fatal(err)
				}
				want = slices.Clone(want)
				got, err := fused.Forward(ctx, toks)
				if err != nil {
					t.Fatal(err)
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("step %d (%d tokens): logit %d: fused %g, separate %g", step, len(toks), i, got[i], want[i])
					}
				}
			}
		})
	}
}
