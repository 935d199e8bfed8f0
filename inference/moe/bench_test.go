package moe

import (
	"context"
	"fmt"
	"testing"

	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// benchConfigs are the models of BenchmarkDistributed: the tiny MoE test
// model with 8 experts, and a generated F16 MoE of about 220 MB.
func benchConfigs() []randmodel.Config {
	tiny := moeConfig()
	big := randmodel.Config{Name: "mwpeer-bench-moe-220mb", Embedding: 512, Layers: 8, FeedForward: 1024, Heads: 8, KVHeads: 4,
		ContextLength: 512, Experts: 8, ExpertsUsed: 2, Type: randmodel.F16, Seed: 7, Scale: 0.05, Printable: true}
	return []randmodel.Config{tiny, big}
}

// BenchmarkDistributed prints decode tokens/s of a MoE model run whole in
// this process and with its experts on three other peers over loopback
// (each expert on two of them), without and with 2% of the expert calls
// spot-checked (DefaultVerify), the bytes of rows on the wire per token next
// to the minimum 2 × hidden × experts used × layers × 4, and expert calls
// (and spot-checks) per token. Hosts and requester share this machine's cores.
func BenchmarkDistributed(b *testing.B) {
	for _, c := range benchConfigs() {
		m := loadModel(b, c)
		prompt := m.Vocab.Encode("the quick brown fox jumps over the lazy dog")
		const n = 32
		decode := func(b *testing.B, x llama.Experts) {
			for b.Loop() {
				if _, _, err := m.GenerateTokens(context.Background(), prompt, llama.Options{MaxTokens: n}, x, func(llama.Token) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "tokens/s")
		}
		b.Run(c.Name+"/local", func(b *testing.B) { decode(b, nil) })
		for _, verify := range []float64{0, DefaultVerify} {
			name := c.Name + "/3-peers"
			if verify > 0 {
				name += fmt.Sprintf("-verify-%g%%", 100*verify)
			}
			b.Run(name, func(b *testing.B) { distributed(b, m, c, prompt, n, verify, decode) })
		}
	}
}

// distributed is BenchmarkDistributed's run over three peers, with a share
// verify of the expert calls spot-checked.
func distributed(b *testing.B, m *llama.Model, c randmodel.Config, prompt []int, n int, verify float64, decode func(*testing.B, llama.Experts)) {
	s := newSwarm(b, m, 3, replicated(3, c.Experts))
	x := s.experts(b)
	x.Verify = verify
	decode(b, x)
	calls := float64(x.RemoteCalls.Load())
	// Every prompt token and every generated one but the last goes
	// through the model.
	tokens := float64(b.N * (len(prompt) + n - 1))
	wire := float64(x.Client.BytesOut.Load() + x.Client.BytesIn.Load())
	minimum := float64(2 * c.Embedding * c.ExpertsUsed * c.Layers * 4)
	b.ReportMetric(wire/tokens, "wire-B/token")
	b.ReportMetric(minimum, "min-B/token")
	b.ReportMetric(calls/tokens, "calls/token")
	if verify > 0 {
		b.ReportMetric(float64(x.Checks.Load())/tokens, "checks/token")
	}
	if x.Failovers.Load() != 0 || x.Caught.Load() != 0 {
		b.Fatalf("%d failovers, %d caught on a healthy swarm", x.Failovers.Load(), x.Caught.Load())
	}
}
