package llama

import (
	"fmt"
	"math"

	"github.com/ollama/ollama/fs/ggml"
)

// Architectures. Besides llama (dense or Mixtral-style MoE) the engine runs
// the Qwen families, which differ from llama in a few places each:
//
//   - qwen2: biases on the Q, K and V projections; NeoX RoPE (dimension i
//     turns with i+d/2, not with i+1).
//   - qwen3: an RMS norm over each Q and K head (attn_q_norm, attn_k_norm)
//     before RoPE, no biases; a head size of its own
//     (attention.key_length), so Heads×HeadDim need not be the embedding size.
//   - qwen2moe: qwen2's attention; routed experts whose softmax weights are
//     not renormalised after the top-k choice, plus a shared expert that
//     every token uses, scaled by its own sigmoid gate (ffn_gate_inp_shexp).
//   - qwen3moe: qwen3's attention; routed experts, top-k with weights
//     renormalised to sum to one.
//
// Every hyperparameter comes from the GGUF: expert_feed_forward_length (the
// routed experts' size, which Config.FeedForward holds for MoE models),
// expert_shared_feed_forward_length, norm_top_k_prob, rope.freq_base,
// key_length.
//
// The shared expert lives with the dense part of the model (it is loaded with
// ReadOptions.WithoutExperts too): every token needs it, so sending it
// across the network would cost a round trip per layer and token for no
// saving in memory worth having.

// arch is what sets an architecture apart from llama.
type arch struct {
	neox    bool // NeoX RoPE
	bias    bool // optional Q/K/V biases
	qkNorm  bool // per-head Q and K RMS norms
	moe     bool // every layer is MoE
	shared  bool // a gated shared expert beside the routed ones
	rawTopK bool // the top-k expert weights are not renormalised
	mla     bool // deepseek2: latent attention and its own FFN (arch_deepseek2.go)
}

var architectures = map[string]arch{
	"llama":     {},
	"qwen2":     {neox: true, bias: true},
	"qwen3":     {neox: true, qkNorm: true},
	"qwen2moe":  {neox: true, bias: true, moe: true, shared: true, rawTopK: true},
	"qwen3moe":  {neox: true, qkNorm: true, moe: true},
	"deepseek2": {moe: true, mla: true},
}

// lookupArch returns the architecture of a file's general.architecture.
func lookupArch(name string) (arch, error) {
	a, ok := architectures[name]
	if !ok {
		return a, fmt.Errorf("architecture %q: %w (llama, qwen2, qwen3, qwen2moe, qwen3moe, deepseek2)", name, ErrUnsupported)
	}
	return a, nil
}

// configure sets the parts of c that the architecture reads its own way.
func (a arch) configure(kv ggml.KV, c *Config) error {
	if a.mla {
		return configureDeepSeek2(kv, c)
	}
	c.RopeNeoX = a.neox
	c.ExpertWeightsRaw = a.rawTopK
	if _, ok := kv[c.Arch+".norm_top_k_prob"]; ok && a.moe {
		// Written by Ollama's converter, read by its qwen3moe (llama.cpp
		// renormalises qwen3moe's weights regardless).
		c.ExpertWeightsRaw = !kv.Bool("norm_top_k_prob")
	}
	if a.moe && c.Experts == 0 {
		return fmt.Errorf("a %s model without expert_count", c.Arch)
	}
	if a.moe {
		ff := int(kv.Uint("expert_feed_forward_length"))
		if ff == 0 && c.ExpertsUsed > 0 {
			ff = c.FeedForward / c.ExpertsUsed // llama.cpp's default for qwen2moe
		}
		c.FeedForward = ff
	}
	if a.shared {
		c.SharedFeedForward = int(kv.Uint("expert_shared_feed_forward_length", uint32(kv.Uint("feed_forward_length"))))
	}
	return nil
}

// qwenLayer holds the tensors of a layer that llama does not have.
type qwenLayer struct {
	bq, bk, bv   []float32 // projection biases (qwen2, qwen2moe), nil if absent
	qNorm, kNorm []float32 // per-head norms (qwen3, qwen3moe)

	sharedGateInp        *matrix // 1 × Embedding: the shared expert's gate
	sharedGate, sharedUp *matrix
	sharedDown           *matrix
}

// loadQwen reads the tensors of layer i that the architecture adds.
func (ld *loader) loadQwen(a arch, c Config, i int, l *layer) {
	n := func(s string) string { return fmt.Sprintf("blk.%d.%s", i, s) }
	kvDim := c.KVHeads * c.HeadDim
	if a.bias {
		l.qwen.bq = ld.optionalVector(n("attn_q.bias"), c.Heads*c.HeadDim)
		l.qwen.bk = ld.optionalVector(n("attn_k.bias"), kvDim)
		l.qwen.bv = ld.optionalVector(n("attn_v.bias"), kvDim)
	}
	if a.qkNorm {
		l.qwen.qNorm = ld.vector(n("attn_q_norm.weight"), c.HeadDim)
		l.qwen.kNorm = ld.vector(n("attn_k_norm.weight"), c.HeadDim)
	}
	if a.shared {
		l.qwen.sharedGateInp = ld.rowMatrix(n("ffn_gate_inp_shexp.weight"), c.Embedding)
		l.qwen.sharedGate = ld.matrix(n("ffn_gate_shexp.weight"), c.SharedFeedForward, c.Embedding)
		l.qwen.sharedUp = ld.matrix(n("ffn_up_shexp.weight"), c.SharedFeedForward, c.Embedding)
		l.qwen.sharedDown = ld.matrix(n("ffn_down_shexp.weight"), c.Embedding, c.SharedFeedForward)
	}
}

// optionalVector is vector for a tensor that may be absent (nil then).
func (ld *loader) optionalVector(name string, n int) []float32 {
	if _, ok := ld.tensors[name]; !ok {
		return nil
	}
	return ld.vector(name, n)
}

// rowMatrix reads a one-dimensional tensor of n elements as a 1 × n matrix,
// so that its products with activations run the kernels of every other
// product (as llama.cpp multiplies it).
func (ld *loader) rowMatrix(name string, n int) *matrix {
	t, buf := ld.data(name, uint64(n))
	if t == nil {
		return nil
	}
	m, err := newMatrix(t.Kind, 1, n, buf)
	if err != nil {
		ld.err = fmt.Errorf("tensor %s: %w", name, err)
	}
	return m
}

// positionQK turns the projections of one token at pos into what the cache
// and the attention take: biases added, Q and K heads normed, then RoPE.
func (m *Model) positionQK(l *layer, q, k, v []float32, pos int) {
	c := &m.Config
	addBias(q, l.qwen.bq)
	addBias(k, l.qwen.bk)
	addBias(v, l.qwen.bv)
	if l.qwen.qNorm != nil {
		for h := range c.Heads {
			x := q[h*c.HeadDim : (h+1)*c.HeadDim]
			rmsNorm(x, x, l.qwen.qNorm, c.NormEpsilon)
		}
		for h := range c.KVHeads {
			x := k[h*c.HeadDim : (h+1)*c.HeadDim]
			rmsNorm(x, x, l.qwen.kNorm, c.NormEpsilon)
		}
	}
	if c.RopeNeoX {
		ropeNeoX(q, c.Heads, c.HeadDim, c.RopeDim, pos, c.RopeBase)
		ropeNeoX(k, c.KVHeads, c.HeadDim, c.RopeDim, pos, c.RopeBase)
		return
	}
	rope(q, c.Heads, c.HeadDim, c.RopeDim, pos, c.RopeBase)
	rope(k, c.KVHeads, c.HeadDim, c.RopeDim, pos, c.RopeBase)
}

func addBias(x, b []float32) {
	if b == nil {
		return
	}
	for i := range x {
		x[i] += b[i]
	}
}

// ropeNeoX rotates the pairs (i, i+ropeDim/2) of the first ropeDim
// dimensions of each head by pos·base^(-2i/ropeDim): llama.cpp's NeoX RoPE,
// which the Qwen architectures use. The angles' cosines and sines are
// computed once for all heads (as rope does, and ggml's rope cache): a
// qwen2moe token turned them over again for each of its 8 query and 8 key
// heads, 3% of its decode time.
func ropeNeoX(x []float32, heads, headDim, ropeDim, pos int, base float32) {
	var buf [256]float32 // cos, sin of up to 128 pairs, on the stack
	half := ropeDim / 2
	cs := buf[:]
	if 2*half > len(buf) {
		cs = make([]float32, 2*half)
	}
	thetaScale := float32(math.Pow(float64(base), float64(float32(-2)/float32(ropeDim))))
	theta := float32(pos)
	for i := range half {
		cs[2*i], cs[2*i+1] = float32(math.Cos(float64(theta))), float32(math.Sin(float64(theta)))
		theta *= thetaScale
	}
	for h := range heads {
		v := x[h*headDim : h*headDim+ropeDim]
		for i := range half {
			cos, sin := cs[2*i], cs[2*i+1]
			x0, x1 := v[i], v[i+half]
			v[i] = float32(x0*cos) - float32(x1*sin)
			v[i+half] = float32(x0*sin) + float32(x1*cos)
		}
	}
}

// sharedExpert adds layer li's shared expert to out, for the rows h: its
// SwiGLU FFN scaled by sigmoid(gate·h), computed as llama.cpp does, as
// silu(x)/x. (With local experts, localExperts computes it with the routed
// experts and moe calls addShared.)
func (s *State) sharedExpert(li int, h, out [][]float32) {
	l := &s.m.layers[li]
	if l.qwen.sharedGate == nil {
		return
	}
	w := s.ws
	g, y := s.sharedRows(len(h))
	w.use(h)
	w.mul(l.qwen.sharedGateInp, g)
	w.swiglu(l.qwen.sharedGate, l.qwen.sharedUp, l.qwen.sharedDown, h, y)
	s.addShared(li, out)
}

// sharedRows returns the buffers of the shared expert's results for n rows:
// its gate (one value a row) and its output, w.sharedG and w.sharedY.
func (s *State) sharedRows(n int) (g, y [][]float32) {
	w := s.ws
	gate := w.shared.get(n, 1+s.m.Config.Embedding)
	w.sharedG, w.sharedY = grow(w.sharedG, n), grow(w.sharedY, n)
	g, y = w.sharedG, w.sharedY
	for b := range gate {
		g[b], y[b] = gate[b][:1], gate[b][1:]
	}
	return g, y
}

// addShared adds the shared expert's output w.sharedY, scaled by the
// sigmoid of its gate w.sharedG, to out (nothing if layer li has none).
func (s *State) addShared(li int, out [][]float32) {
	if s.m.layers[li].qwen.sharedGate == nil {
		return
	}
	g, y := s.ws.sharedG, s.ws.sharedY
	for b := range out {
		x := g[b][0]
		sig := x / (1 + float32(math.Exp(float64(-x)))) / x
		for i, v := range y[b] {
			out[b][i] += float32(v * sig)
		}
	}
}
