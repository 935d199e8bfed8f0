package llama

import (
	"context"
	"testing"

	"github.com/mwpeer/mwpeer/internal/ggufgen"
)

// BenchmarkTiny reports prefill and decode tokens/s of the tiny MoE and dense models.
func BenchmarkTiny(b *testing.B) {
	for _, c := range []ggufgen.Config{ggufgen.Tiny(), ggufgen.TinyDense()} {
		m := load(b, c)
		prompt := make([]int, 128)
		for i := range prompt {
			prompt[i] = 3 + 'a' + i%26
		}
		b.Run(c.Name+"/prefill", func(b *testing.B) {
			for b.Loop() {
				if _, err := m.NewState(len(prompt), nil).Forward(context.Background(), prompt); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(prompt))/b.Elapsed().Seconds(), "tokens/s")
		})
		b.Run(c.Name+"/decode", func(b *testing.B) {
			const n = 64
			for b.Loop() {
				st := m.NewState(n+1, nil)
				tok := prompt[0]
				for range n {
					logits, err := st.Forward(context.Background(), []int{tok})
					if err != nil {
						b.Fatal(err)
					}
					tok = NewSampler(Options{}).Sample(logits)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
