package llama

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/ollama/ollama/fs/ggml"
)

// deepseek2 (DeepSeek-V2, V2-Lite, V3) differs from llama in its attention
// and its FFN, both computed here as Ollama v0.17.4's own engine computes
// them (model/models/deepseek2, its non-MLA path: the file has attn_kv_b,
// not attn_k_b/attn_v_b):
//
//   - Multi-head latent attention. Queries come from attn_q, or through a
//     low rank: attn_q_a, an RMS norm (attn_q_a_norm), attn_q_b. Each query
//     head has a part without RoPE (qk_nope = key_length - rope dims) and a
//     RoPE part. attn_kv_a_mqa compresses the token into a latent of
//     kv_lora_rank plus one RoPE key part that all heads share; the latent
//     is normed (attn_kv_a_norm) and attn_kv_b expands it into every head's
//     key part without RoPE and its value (value_length, which need not be
//     key_length). A key head is [RoPE part, nope part], a query head the
//     same, so the scores are those of ordinary attention over heads of
//     key_length; the values are value_length wide.
//   - YaRN RoPE (rope.scaling.*): ggml's rope with extrapolation factor 1,
//     the frequency scale 1/factor, the ramp between ggml's correction
//     dimensions (beta fast 32, slow 1) over original_context_length, and
//     the attention factor 1/(1+0.1·ln factor) that cancels the magnitude
//     YaRN gives the cosines. The scores are scaled by mscale²/√key_length,
//     mscale = 1 + yarn_log_multiplier·ln factor.
//   - Attention without flash attention (Ollama's engine does not enable
//     it for deepseek2, whose K and V heads differ in size): F16 query and
//     cache, the scores' softmax in float32, then the probabilities
//     rounded to F16 and multiplied with the F16 values. For the files
//     Ollama runs through llama.cpp, which turns flash attention on, as
//     llama.cpp's flash attention (attendHead's arithmetic).
//   - The first leading_dense_block_count layers have a dense FFN
//     (feed_forward_length); the others route among expert_count experts
//     of expert_feed_forward_length: scores by sigmoid or softmax as
//     expert_gating_func says (absent: softmax, as llama.cpp reads
//     DeepSeek-V2 files; Ollama's own engine runs sigmoid whatever the key
//     says, and runs only files with the deepseek-v3 pre-tokenizer, so a
//     DeepSeek-V2 file, pre-tokenizer deepseek-llm, goes to its llama.cpp),
//     the top expert_used_count by score plus exp_probs_b.bias when
//     present, weighted by their unbiased scores, renormalised when
//     expert_weights_norm (default true, as Ollama's engine) and scaled by
//     expert_weights_scale; plus a shared expert (ffn_*_shexp, ungated)
//     that every token uses.
//
// llama.cpp computes the same attention and RoPE for these files (its
// yarn_attn_factor and mscale come to Ollama's for a nonzero
// yarn_log_multiplier), so one implementation matches both.
//
// The KV cache holds every head's key and value, as Ollama's non-MLA path
// does (not the latent): State's K rows are Heads×key_length wide, its V
// rows Heads×value_length (storeKV writes each at pos×its length).
// The shared expert lives with the dense part, as qwen2moe's does.

// DeepSeek2Config is the shape of a deepseek2 model beyond Config's. In a
// deepseek2 Config, HeadDim is key_length, RopeDim the RoPE part of a head,
// FeedForward the routed experts' size.
type DeepSeek2Config struct {
	QLoraRank  int // 0: queries through attn_q
	KVLoraRank int
	NopeDim    int // HeadDim - RopeDim
	ValueDim   int // value_length

	LeadingDense      int // layers with a dense FFN, first
	DenseFeedForward  int // their FFN size (feed_forward_length)
	SharedFeedForward int // the shared expert's size (0: none)
	WeightsScale      float32
	WeightsNorm       bool
	SoftmaxGating     bool // expert_gating_func softmax (1, or absent), not sigmoid (2)

	RopeFreqScale  float32 // 1/rope.scaling.factor
	RopeAttnFactor float32 // ggml's attn_factor
	RopeOrigCtx    int     // YaRN's original context length
	KQScale        float32 // the attention scores' scale

	// FlashAttention: attention as llama.cpp's CPU flash attention
	// computes it, for the files Ollama runs through llama.cpp (which
	// turns it on); else as Ollama's own engine, which does not.
	FlashAttention bool
}

// ollamaDeepSeek2Pre is the only pre-tokenizer with which Ollama v0.17.4
// runs deepseek2 in its own engine; it runs the others through llama.cpp.
const ollamaDeepSeek2Pre = "deepseek-v3"

// expert_gating_func's values.
const (
	gatingSoftmax = 1
	gatingSigmoid = 2
)

// configureDeepSeek2 reads a deepseek2 file's hyperparameters into c.
func configureDeepSeek2(kv ggml.KV, c *Config) error {
	d := &DeepSeek2Config{
		QLoraRank:        int(kv.Uint("attention.q_lora_rank")),
		KVLoraRank:       int(kv.Uint("attention.kv_lora_rank")),
		ValueDim:         int(kv.Uint("attention.value_length")),
		LeadingDense:     int(kv.Uint("leading_dense_block_count")),
		DenseFeedForward: c.FeedForward,
		WeightsScale:     kv.Float("expert_weights_scale"),
		WeightsNorm:      kv.Bool("expert_weights_norm", true),
		RopeOrigCtx:      int(kv.Uint("rope.scaling.original_context_length")),
	}
	d.NopeDim = c.HeadDim - c.RopeDim
	if kv.Uint("attention.key_length_mla") != 0 || kv.Uint("attention.value_length_mla") != 0 {
		return fmt.Errorf("deepseek2 with absorbed MLA weights (key_length_mla): %w", ErrUnsupported)
	}
	switch g := kv.Uint("expert_gating_func"); g {
	case 0, gatingSoftmax: // absent: softmax, llama.cpp's default for DeepSeek-V2 files
		d.SoftmaxGating = true
	case gatingSigmoid:
	default:
		return fmt.Errorf("deepseek2 expert_gating_func %d: %w", g, ErrUnsupported)
	}
	if s := kv.String("rope.scaling.type"); s != "" && s != "none" && s != "yarn" {
		return fmt.Errorf("rope scaling %q: %w", s, ErrUnsupported)
	}
	if c.KVHeads != c.Heads || c.Experts == 0 || d.ValueDim > c.HeadDim || d.KVLoraRank <= 0 || d.ValueDim <= 0 || d.NopeDim <= 0 ||
		d.QLoraRank < 0 || d.LeadingDense > c.Layers || d.KVLoraRank > MaxEmbedding || d.QLoraRank > MaxEmbedding ||
		d.ValueDim > MaxEmbedding || c.HeadDim > MaxEmbedding {
		return fmt.Errorf("bad deepseek2 shape: %d heads, %d kv heads, %d experts, %+v", c.Heads, c.KVHeads, c.Experts, *d)
	}
	c.FeedForward = int(kv.Uint("expert_feed_forward_length"))
	d.SharedFeedForward = c.FeedForward * int(kv.Uint("expert_shared_count"))
	c.ExpertWeightsRaw = !d.WeightsNorm
	d.FlashAttention = kv.String("tokenizer.ggml.pre") != ollamaDeepSeek2Pre

	// As Ollama's engine: a factor of 0 (absent) would make mscale NaN
	// there; here it means no scaling.
	factor := kv.Float("rope.scaling.factor", 1)
	if factor <= 0 {
		factor = 1
	}
	d.RopeFreqScale = 1 / factor
	d.RopeAttnFactor = float32(1.0 / (1.0 + 0.1*math.Log(float64(factor))))
	mscale := float32(1.0 + float64(kv.Float("rope.scaling.yarn_log_multiplier"))*math.Log(float64(factor)))
	d.KQScale = float32(float64(mscale) * float64(mscale) / math.Sqrt(float64(c.HeadDim)))
	c.DeepSeek2 = d
	return nil
}

// deepseek2Layer holds the tensors of a deepseek2 layer that llama does
// not have. wq (when QLoraRank is 0), wo, the norms and the FFN tensors
// are layer's own.
type deepseek2Layer struct {
	qa, qb      *matrix
	qaNorm      []float32
	kva, kvb    *matrix
	kvaNorm     []float32
	probsBias   []float32 // exp_probs_b.bias, nil if absent
	shGate      *matrix   // the shared expert, nil if none
	shUp, shDwn *matrix
}

// loadDeepSeek2 reads layer i of a deepseek2 model.
func (ld *loader) loadDeepSeek2(c Config, i int, l *layer, withoutExperts bool) {
	d := c.DeepSeek2
	n := func(s string) string { return fmt.Sprintf("blk.%d.%s.weight", i, s) }
	x := &deepseek2Layer{}
	l.ds2 = x
	l.attnNorm = ld.vector(n("attn_norm"), c.Embedding)
	l.ffnNorm = ld.vector(n("ffn_norm"), c.Embedding)
	qDim := c.Heads * c.HeadDim
	if d.QLoraRank > 0 {
		x.qa = ld.matrix(n("attn_q_a"), d.QLoraRank, c.Embedding)
		x.qaNorm = ld.vector(n("attn_q_a_norm"), d.QLoraRank)
		x.qb = ld.matrix(n("attn_q_b"), qDim, d.QLoraRank)
	} else {
		l.wq = ld.matrix(n("attn_q"), qDim, c.Embedding)
	}
	x.kva = ld.matrix(n("attn_kv_a_mqa"), d.KVLoraRank+c.RopeDim, c.Embedding)
	x.kvaNorm = ld.vector(n("attn_kv_a_norm"), d.KVLoraRank)
	x.kvb = ld.matrix(n("attn_kv_b"), c.Heads*(d.NopeDim+d.ValueDim), d.KVLoraRank)
	l.wo = ld.matrix(n("attn_output"), c.Embedding, c.Heads*d.ValueDim)
	if i < d.LeadingDense {
		l.gate = ld.matrix(n("ffn_gate"), d.DenseFeedForward, c.Embedding)
		l.up = ld.matrix(n("ffn_up"), d.DenseFeedForward, c.Embedding)
		l.down = ld.matrix(n("ffn_down"), c.Embedding, d.DenseFeedForward)
		return
	}
	l.gateInp = ld.matrix(n("ffn_gate_inp"), c.Experts, c.Embedding)
	if name := fmt.Sprintf("blk.%d.exp_probs_b.bias", i); ld.tensors[name] != nil {
		x.probsBias = ld.vector(name, c.Experts)
	}
	if d.SharedFeedForward > 0 {
		x.shGate = ld.matrix(n("ffn_gate_shexp"), d.SharedFeedForward, c.Embedding)
		x.shUp = ld.matrix(n("ffn_up_shexp"), d.SharedFeedForward, c.Embedding)
		x.shDwn = ld.matrix(n("ffn_down_shexp"), c.Embedding, d.SharedFeedForward)
	}
	if withoutExperts {
		return
	}
	l.gateExp = ld.experts(n("ffn_gate_exps"), c.Experts, c.FeedForward, c.Embedding)
	l.upExp = ld.experts(n("ffn_up_exps"), c.Experts, c.FeedForward, c.Embedding)
	l.downEx = ld.experts(n("ffn_down_exps"), c.Experts, c.Embedding, c.FeedForward)
}

// batchDeepSeek2 is batch for a deepseek2 model. It uses the workspace's
// buffers as batch does, some for other things: u holds the low-rank
// queries and then the value rows, k the compressed KV, v its expansion
// by attn_kv_b, g the key rows, shared the shared expert's output.
func (s *State) batchDeepSeek2(ctx context.Context, tokens []int) ([]float32, error) {
	m, c, w := s.m, s.m.Config, s.ws
	d := c.DeepSeek2
	n := len(tokens)
	x := w.x.get(n, c.Embedding)
	for b, t := range tokens {
		m.embed.row(t, x[b])
	}
	h := w.h.get(n, c.Embedding)
	o := w.o.get(n, c.Embedding)
	for li := range m.layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l := &m.layers[li]
		for b := range x {
			rmsNorm(h[b], x[b], l.attnNorm, c.NormEpsilon)
		}
		att := s.latentAttention(li, h)
		w.use(att)
		w.mul(l.wo, o)
		for b := range x {
			for i := range x[b] {
				x[b][i] += o[b][i]
			}
			rmsNorm(h[b], x[b], l.ffnNorm, c.NormEpsilon)
		}
		if li < d.LeadingDense {
			w.swiglu(l.gate, l.up, l.down, h, o)
		} else if err := s.moeDeepSeek2(ctx, li, h, o); err != nil {
			return nil, err
		}
		for b := range x {
			for i := range x[b] {
				x[b][i] += o[b][i]
			}
		}
	}
	s.pos += n
	return s.logits(x[n-1 : n]), nil
}

// latentAttention computes layer li's multi-head latent attention of the
// normed rows h (positions s.pos...), storing their keys and values in the
// cache, and returns the heads' outputs (n × Heads·ValueDim).
func (s *State) latentAttention(li int, h [][]float32) [][]float32 {
	c, w := s.m.Config, s.ws
	d := c.DeepSeek2
	l := &s.m.layers[li]
	n := len(h)
	q := w.q.get(n, c.Heads*c.HeadDim)
	w.use(h)
	if d.QLoraRank > 0 {
		qa := w.u.get(n, d.QLoraRank)
		w.mul(l.ds2.qa, qa)
		kv := w.k.get(n, d.KVLoraRank+c.RopeDim)
		w.mul(l.ds2.kva, kv)
		for b := range qa {
			rmsNorm(qa[b], qa[b], l.ds2.qaNorm, c.NormEpsilon)
		}
		w.use(qa)
		w.mul(l.ds2.qb, q)
	} else {
		w.mul(l.wq, q)
		w.mul(l.ds2.kva, w.k.get(n, d.KVLoraRank+c.RopeDim))
	}
	kv := w.k.r
	x := &w.ds2
	x.lat = grow(x.lat, n) // the latents, without the RoPE key part
	lat := x.lat
	for b := range kv {
		lat[b] = kv[b][:d.KVLoraRank]
		rmsNorm(lat[b], lat[b], l.ds2.kvaNorm, c.NormEpsilon)
	}
	headKV := d.NopeDim + d.ValueDim
	kvb := w.v.get(n, c.Heads*headKV)
	w.use(lat)
	w.mul(l.ds2.kvb, kvb)
	keys := w.g.get(n, c.Heads*c.HeadDim)
	vals := w.u.get(n, c.Heads*d.ValueDim)
	x.qr = grow(x.qr, c.Heads*c.RopeDim)
	qr := x.qr
	for b := range n {
		pos := s.pos + b
		kRot := kv[b][d.KVLoraRank:]
		ropeYarn(kRot, 1, c.RopeDim, pos, c.RopeBase, d)
		for hd := range c.Heads {
			qh := q[b][hd*c.HeadDim : (hd+1)*c.HeadDim]
			copy(qr[hd*c.RopeDim:(hd+1)*c.RopeDim], qh[d.NopeDim:])
		}
		ropeYarn(qr, c.Heads, c.RopeDim, pos, c.RopeBase, d)
		for hd := range c.Heads {
			// Query and key heads as Ollama concatenates them: RoPE part
			// first, then the part without RoPE.
			qh := q[b][hd*c.HeadDim : (hd+1)*c.HeadDim]
			copy(qh[c.RopeDim:], qh[:d.NopeDim])
			copy(qh[:c.RopeDim], qr[hd*c.RopeDim:(hd+1)*c.RopeDim])
			kh := keys[b][hd*c.HeadDim : (hd+1)*c.HeadDim]
			copy(kh[:c.RopeDim], kRot)
			copy(kh[c.RopeDim:], kvb[b][hd*headKV:][:d.NopeDim])
			copy(vals[b][hd*d.ValueDim:(hd+1)*d.ValueDim], kvb[b][hd*headKV+d.NopeDim:][:d.ValueDim])
		}
		s.storeKV(li, pos, keys[b], vals[b])
	}
	att := w.att.get(n, c.Heads*d.ValueDim)
	workers := w.team.workers()
	x.qh, x.probs = grow(x.qh, workers), grow(x.probs, workers)
	for i := range workers {
		x.qh[i] = grow(x.qh[i], c.HeadDim)
		x.probs[i] = grow(x.probs[i], s.ctxLen) // once: decoding does not allocate
	}
	x.job = mlaJob{s: s, li: li, q: q, out: att}
	w.team.parallel(&x.job, n*c.Heads, 1)
	x.job = mlaJob{}
	return att
}

// deepseek2Scratch holds the buffers of a deepseek2 forward pass that
// the workspace does not have.
type deepseek2Scratch struct {
	lat       [][]float32 // the latent part of the compressed KV rows
	qr        []float32   // the RoPE parts of a token's query heads
	choice    []float32   // router scores plus exp_probs_b
	qh, probs [][]float32 // per worker: a query head, a row of probabilities
	job       mlaJob
}

// mlaJob computes the attention of the (row, head) pairs of a batch, index
// i being row i/Heads and head i%Heads, on all workers, as attnJob does.
type mlaJob struct {
	s      *State
	li     int
	q, out [][]float32
}

func (j *mlaJob) run(lo, hi, worker int) {
	c := j.s.m.Config
	d := c.DeepSeek2
	x := &j.s.ws.ds2
	qh := x.qh[worker]
	for i := lo; i < hi; i++ {
		b, hd := i/c.Heads, i%c.Heads
		copy(qh, j.q[b][hd*c.HeadDim:(hd+1)*c.HeadDim])
		roundF16(qh)
		out := j.out[b][hd*d.ValueDim : (hd+1)*d.ValueDim]
		if d.FlashAttention {
			j.s.attendHeadFlash(j.li, j.s.pos+b+1, hd, qh, out)
		} else {
			j.s.attendHeadUnfused(j.li, j.s.pos+b+1, hd, qh, x.probs[worker], out)
		}
	}
}

// storeKV is store for K and V rows of different lengths: each is written
// at pos times its length, rounded to F16 (in place too).
func (s *State) storeKV(li, pos int, k, v []float32) {
	roundF16(k)
	roundF16(v)
	kc, vc := s.k[li][pos*len(k):][:len(k)], s.v[li][pos*len(v):][:len(v)]
	for i, x := range k {
		kc[i] = f32to16(x)
	}
	for i, x := range v {
		vc[i] = f32to16(x)
	}
}

// attendHeadUnfused sets out to head hd's attention of query qh (rounded
// to F16) over the first end cache positions of layer li, as ggml does
// without flash attention: F16 dot products scaled by KQScale, ggml's
// softmax, the probabilities rounded to F16 and multiplied with the F16
// values (products in float32 summed in float64, as the portable
// ggml_vec_dot_f16). probs is scratch of at least end.
func (s *State) attendHeadUnfused(li, end, hd int, qh, probs, out []float32) {
	c := s.m.Config
	d := c.DeepSeek2
	kDim, vDim := c.Heads*c.HeadDim, c.Heads*d.ValueDim
	kc, vc := s.k[li], s.v[li]
	p := probs[:end]
	for i := range p {
		p[i] = dotKF16(qh, kc[i*kDim+hd*c.HeadDim:][:c.HeadDim]) * d.KQScale
	}
	softmax(p)
	roundF16(p)
	for j := range out {
		var sum float64
		for i, pr := range p {
			sum += float64(pr * f16table[vc[i*vDim+hd*d.ValueDim+j]])
		}
		out[j] = float32(sum)
	}
}

// attendHeadFlash is attendHead (llama.cpp's CPU flash attention) for
// head hd of a deepseek2 cache, whose K and V rows differ in size, with
// the scores scaled by KQScale.
func (s *State) attendHeadFlash(li, end, hd int, qh, acc []float32) {
	c := s.m.Config
	d := c.DeepSeek2
	kDim, vDim := c.Heads*c.HeadDim, c.Heads*d.ValueDim
	kc, vc := s.k[li], s.v[li]
	clear(acc)
	mx := float32(math.Inf(-1))
	var sum float32
	for p := range end {
		kr, vr := kc[p*kDim+hd*c.HeadDim:][:c.HeadDim], vc[p*vDim+hd*d.ValueDim:][:d.ValueDim]
		sc := dotKF16(qh, kr) * d.KQScale
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

// moeDeepSeek2 runs layer li's routed experts and shared expert on the
// rows h into out, as Ollama's engine does (see the top of this file).
func (s *State) moeDeepSeek2(ctx context.Context, li int, h, out [][]float32) error {
	c, w := s.m.Config, s.ws
	d := c.DeepSeek2
	l := &s.m.layers[li]
	n, used := len(h), c.ExpertsUsed
	logits := w.router.get(n, c.Experts)
	w.use(h)
	w.mul(l.gateInp, logits)
	w.sel = grow(w.sel, n*used)
	w.wt = grow(w.wt, n*used)
	w.ds2.choice = grow(w.ds2.choice, c.Experts)
	choice := w.ds2.choice
	for b, lg := range logits {
		if d.SoftmaxGating {
			softmax(lg)
		} else {
			for e, v := range lg {
				lg[e] = 1 / (1 + float32(math.Exp(float64(-v))))
			}
		}
		for e := range lg {
			choice[e] = lg[e]
			if l.ds2.probsBias != nil {
				choice[e] += l.ds2.probsBias[e]
			}
		}
		sel, wt := w.sel[b*used:(b+1)*used], w.wt[b*used:(b+1)*used]
		var sum float64
		for slot := range sel {
			best := -1
			for e, p := range choice {
				if (best < 0 || p > choice[best]) && !slices.Contains(sel[:slot], e) {
					best = e
				}
			}
			sel[slot], wt[slot] = best, lg[best]
			sum += float64(lg[best])
		}
		div := float32(sum)
		if d.SoftmaxGating {
			div = max(div, 6.103515625e-5) // llama.cpp's clamp; Ollama's engine (sigmoid) has none
		}
		for slot := range wt {
			if d.WeightsNorm {
				wt[slot] /= div
			}
			wt[slot] *= d.WeightsScale
		}
	}
	res := w.res.get(n*used, c.Embedding)
	if err := s.applyExperts(ctx, li, h, res); err != nil {
		return err
	}
	for b := range out {
		for slot := range used {
			y, wt := res[b*used+slot], w.wt[b*used+slot]
			if slot == 0 {
				for j, v := range y {
					out[b][j] = v * wt
				}
				continue
			}
			for j, v := range y {
				out[b][j] += float32(v * wt)
			}
		}
	}
	if l.ds2.shGate == nil {
		return nil
	}
	sh := w.shared.get(n, c.Embedding)
	w.swiglu(l.ds2.shGate, l.ds2.shUp, l.ds2.shDwn, h, sh)
	for b := range out {
		for j, v := range sh[b] {
			out[b][j] += v
		}
	}
	return nil
}

// applyExperts runs the experts chosen in w.sel for layer li on the rows
// h, writing slot i's output into res[i], locally or through s.experts.
func (s *State) applyExperts(ctx context.Context, li int, h, res [][]float32) error {
	c, w := s.m.Config, s.ws
	used := c.ExpertsUsed
	w.gin, w.gout = grow(w.gin, len(res)), grow(w.gout, len(res))
	if !s.local {
		return s.remoteExperts(ctx, li, h, res)
	}
	l := &s.m.layers[li]
	for e := range c.Experts {
		in, got := w.gin[:0], w.gout[:0]
		for i, se := range w.sel[:len(res)] {
			if se == e {
				in, got = append(in, h[i/used]), append(got, res[i])
			}
		}
		if len(in) == 0 {
			continue
		}
		if l.gateExp == nil {
			_, err := s.m.Expert(li, e)
			return fmt.Errorf("layer %d expert %d: %w", li, e, err)
		}
		w.swiglu(l.gateExp[e], l.upExp[e], l.downEx[e], in, got)
	}
	return nil
}

// ropeYarn rotates adjacent pairs (2i, 2i+1) of each of heads rows of dims
// values (x holds them back to back) as ggml_rope_ext does in normal mode
// with YaRN: Ollama's deepseek2 passes the frequency scale 1/factor,
// extrapolation factor 1, its attention factor, the original context
// length (128Ki if 0), beta fast 32 and beta slow 1.
func ropeYarn(x []float32, heads, dims, pos int, base float32, d *DeepSeek2Config) {
	var buf [256]float32
	cs := buf[:]
	if dims > len(buf) {
		cs = make([]float32, dims)
	}
	cs = cs[:dims]
	orig := d.RopeOrigCtx
	if orig == 0 {
		orig = 128 << 10
	}
	lo, hi := yarnCorrDims(dims, orig, base, 32, 1)
	freqScale, extFactor := d.RopeFreqScale, float32(1)
	thetaScale := float32(math.Pow(float64(base), float64(float32(-2)/float32(dims))))
	theta := float32(pos)
	for i0 := 0; i0 < dims; i0 += 2 {
		interp := freqScale * theta
		th := interp
		mscale := d.RopeAttnFactor
		if extFactor != 0 {
			y := (float32(i0/2) - lo) / max(0.001, hi-lo)
			ramp := (1 - min(1, max(0, y))) * extFactor
			th = float32(interp*(1-ramp)) + float32(theta*ramp)
			mscale *= 1 + float32(0.1*log32(1/freqScale))
		}
		cs[i0] = float32(math.Cos(float64(th))) * mscale
		cs[i0+1] = float32(math.Sin(float64(th))) * mscale
		theta *= thetaScale
	}
	for h := range heads {
		v := x[h*dims : (h+1)*dims]
		for i := 0; i < dims; i += 2 {
			cos, sin := cs[i], cs[i+1]
			x0, x1 := v[i], v[i+1]
			v[i] = float32(x0*cos) - float32(x1*sin)
			v[i+1] = float32(x0*sin) + float32(x1*cos)
		}
	}
}

// yarnCorrDims is ggml_rope_yarn_corr_dims.
func yarnCorrDims(dims, origCtx int, base, betaFast, betaSlow float32) (lo, hi float32) {
	corr := func(rot float32) float32 {
		return float32(dims) * log32(float32(origCtx)/(rot*2*float32(math.Pi))) / (2 * log32(base))
	}
	lo = max(0, float32(math.Floor(float64(corr(betaFast)))))
	hi = min(float32(dims-1), float32(math.Ceil(float64(corr(betaSlow)))))
	return lo, hi
}

func log32(x float32) float32 { return float32(math.Log(float64(x))) }

// deepseek2ActiveParams is ActiveParams for deepseek2: the latent
// attention's projections and norms, the dense FFN of the leading layers,
// and for the others the router, the experts a token uses and the shared
// expert.
func (c Config) deepseek2ActiveParams() int64 {
	d := c.DeepSeek2
	e, heads := int64(c.Embedding), int64(c.Heads)
	q := e * heads * int64(c.HeadDim)
	if d.QLoraRank > 0 {
		r := int64(d.QLoraRank)
		q = e*r + r + r*heads*int64(c.HeadDim)
	}
	kvr := int64(d.KVLoraRank)
	attn := q + e*(kvr+int64(c.RopeDim)) + kvr + kvr*heads*int64(d.NopeDim+d.ValueDim) + heads*int64(d.ValueDim)*e
	dense := 3 * e * int64(d.DenseFeedForward)
	moe := e*int64(c.Experts) + 3*e*int64(c.FeedForward)*int64(c.ExpertsUsed) + 3*e*int64(d.SharedFeedForward)
	lead := int64(min(d.LeadingDense, c.Layers))
	return 2*int64(c.Vocab)*e + int64(c.Layers)*(attn+2*e) + lead*dense + (int64(c.Layers)-lead)*moe + e
}
