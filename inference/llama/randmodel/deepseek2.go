package randmodel

import "fmt"

// DeepSeek2 holds what a deepseek2 model (DeepSeek-V2, V2-Lite, V3) has
// beyond Config's fields: multi-head latent attention (MLA), leading dense
// layers, a shared expert, the router's weights scale and YaRN RoPE.
//
// In a deepseek2 Config, Heads is the number of attention heads (KVHeads
// must equal it, as Ollama's engine reshapes the keys by head_count_kv),
// RopeDim is qk_rope_head_dim (the RoPE part of every query and key head,
// shared by the heads for keys), FeedForward the routed experts' size and
// Experts/ExpertsUsed the routed experts. HeadDim is set to NopeDim+RopeDim
// (attention.key_length).
type DeepSeek2 struct {
	QLoraRank  int // attention.q_lora_rank; 0: queries through attn_q directly
	KVLoraRank int // attention.kv_lora_rank: the compressed KV latent
	NopeDim    int // qk_nope_head_dim: the part of a head without RoPE
	ValueDim   int // attention.value_length: the value head size

	LeadingDense     int     // leading_dense_block_count: first layers with a dense FFN
	DenseFeedForward int     // feed_forward_length: their FFN size
	SharedExperts    int     // expert_shared_count: the shared expert is SharedExperts×FeedForward wide
	WeightsScale     float32 // expert_weights_scale (routed_scaling_factor)
	WeightsNorm      bool    // expert_weights_norm: top-k weights renormalised
	ProbsBias        bool    // write exp_probs_b.bias (DeepSeek-V3's routing bias)
	// SoftmaxGating sets expert_gating_func to softmax (1), as DeepSeek-V2
	// has it, rather than sigmoid (2). Ollama v0.17.4's own engine runs
	// sigmoid whatever the key says; use it with DeepSeekLLMBPE, whose
	// pre-tokenizer that engine refuses, so that Ollama runs the file
	// through llama.cpp, which reads the key.
	SoftmaxGating bool

	// YaRN RoPE scaling: rope.scaling.factor (1: none, but written all
	// the same, as Ollama's engine needs it), original_context_length and
	// yarn_log_multiplier (0.1×mscale_all_dim).
	RopeFactor        float32
	RopeOrigContext   int
	YarnLogMultiplier float32
}

// DeepSeekBPE returns a DeepSeek-V3-style vocabulary: pre-tokenizer
// deepseek-v3 (the one Ollama v0.17.4's engine runs deepseek2 with),
// merges learned from MergeCorpus, BOS <｜begin▁of▁sentence｜> added to
// every prompt, EOS <｜end▁of▁sentence｜>, and DeepSeek-V2 Chat's template.
func DeepSeekBPE() *BPE {
	return &BPE{
		Pre:          "deepseek-v3",
		Merges:       TrainMerges(MergeCorpus, 300),
		Special:      []string{"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"},
		BOS:          "<｜begin▁of▁sentence｜>",
		EOS:          "<｜end▁of▁sentence｜>",
		AddBOS:       true,
		ChatTemplate: deepseek2Template,
	}
}

// DeepSeekLLMBPE is DeepSeekBPE with DeepSeek-V2's pre-tokenizer,
// deepseek-llm, which Ollama v0.17.4 runs through llama.cpp.
func DeepSeekLLMBPE() *BPE {
	b := DeepSeekBPE()
	b.Pre = "deepseek-llm"
	return b
}

// deepseek2Template is DeepSeek-V2(-Lite)-Chat's Jinja chat template.
const deepseek2Template = "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"

// TinyDeepSeek2 returns a DeepSeek-V2-Lite-style model: 3 layers, the
// first dense; 4 heads with queries through a low-rank q_a/q_b (rank 48),
// a KV latent of 32 plus a shared RoPE key part of 16, key heads of 32
// (16 without RoPE), value heads of 24; 8 routed experts of 48, 2 used
// per token with renormalised weights scaled by 1.5, plus a shared expert
// (2×48) and the routing bias; YaRN RoPE with factor 4 over an original
// context of 64 and DeepSeek's mscale.
func TinyDeepSeek2() Config {
	c := Tiny()
	c.Name, c.Arch, c.Seed = "mwpeer-tiny-deepseek2", "deepseek2", 25
	c.Layers, c.Experts, c.ExpertsUsed, c.FeedForward = 3, 8, 2, 48
	c.Heads, c.KVHeads, c.RopeDim = 4, 4, 16
	c.RopeBase = 10000
	c.BPE = DeepSeekBPE()
	c.DeepSeek2 = DeepSeek2{
		QLoraRank: 48, KVLoraRank: 32, NopeDim: 16, ValueDim: 24,
		LeadingDense: 1, DenseFeedForward: 96, SharedExperts: 2,
		WeightsScale: 1.5, WeightsNorm: true, ProbsBias: true,
		RopeFactor: 4, RopeOrigContext: 64, YarnLogMultiplier: 0.0707,
	}
	return c
}

// deepseek2Defaults checks a deepseek2 Config and sets its HeadDim.
func (c Config) deepseek2Defaults() (Config, error) {
	d := c.DeepSeek2
	if c.Arch != "deepseek2" {
		if d != (DeepSeek2{}) {
			return c, fmt.Errorf("randmodel: DeepSeek2 set for %s", c.Arch)
		}
		return c, nil
	}
	if c.KVHeads != c.Heads {
		return c, fmt.Errorf("randmodel: deepseek2 needs KVHeads (%d) = Heads (%d)", c.KVHeads, c.Heads)
	}
	if c.RopeDim <= 0 || c.RopeDim%2 != 0 || d.NopeDim <= 0 || d.KVLoraRank <= 0 || d.ValueDim <= 0 ||
		d.QLoraRank < 0 || d.SharedExperts < 0 || d.LeadingDense < 0 || d.LeadingDense > c.Layers ||
		(d.LeadingDense > 0 && d.DenseFeedForward <= 0) || d.RopeFactor <= 0 {
		return c, fmt.Errorf("randmodel: bad deepseek2 shape %+v (rope %d)", d, c.RopeDim)
	}
	c.HeadDim = d.NopeDim + c.RopeDim
	return c, nil
}

// deepseek2Keys returns the metadata of a deepseek2 model beyond llama's.
func (c Config) deepseek2Keys() []keyValue {
	d, ar := c.DeepSeek2, c.Arch+"."
	gating := uint32(2) // sigmoid
	if d.SoftmaxGating {
		gating = 1
	}
	kvs := []keyValue{
		{ar + "attention.key_length", uint32(c.HeadDim)},
		{ar + "attention.value_length", uint32(d.ValueDim)},
		{ar + "attention.kv_lora_rank", uint32(d.KVLoraRank)},
		{ar + "leading_dense_block_count", uint32(d.LeadingDense)},
		{ar + "expert_feed_forward_length", uint32(c.FeedForward)},
		{ar + "expert_shared_count", uint32(d.SharedExperts)},
		{ar + "expert_weights_scale", d.WeightsScale},
		{ar + "expert_weights_norm", d.WeightsNorm},
		{ar + "expert_gating_func", gating},
		{ar + "rope.scaling.type", "yarn"},
		{ar + "rope.scaling.factor", d.RopeFactor},
		{ar + "rope.scaling.original_context_length", uint32(d.RopeOrigContext)},
		{ar + "rope.scaling.yarn_log_multiplier", d.YarnLogMultiplier},
	}
	if d.QLoraRank > 0 {
		kvs = append(kvs, keyValue{ar + "attention.q_lora_rank", uint32(d.QLoraRank)})
	}
	return kvs
}

// deepseek2Layer returns the tensors of layer i of a deepseek2 model.
func (c Config) deepseek2Layer(i int) []Tensor {
	d := c.DeepSeek2
	emb, heads, ff := uint64(c.Embedding), uint64(c.Heads), uint64(c.FeedForward)
	mat := func(name string, shape ...uint64) Tensor { return Tensor{name, shape, c.Type} }
	vec := func(name string, n uint64) Tensor { return Tensor{name, []uint64{n}, F32} }
	blk := func(s string) string { return fmt.Sprintf("blk.%d.%s.weight", i, s) }
	ts := []Tensor{vec(blk("attn_norm"), emb)}
	if d.QLoraRank > 0 {
		r := uint64(d.QLoraRank)
		ts = append(ts, mat(blk("attn_q_a"), emb, r), vec(blk("attn_q_a_norm"), r),
			mat(blk("attn_q_b"), r, heads*uint64(c.HeadDim)))
	} else {
		ts = append(ts, mat(blk("attn_q"), emb, heads*uint64(c.HeadDim)))
	}
	kvr := uint64(d.KVLoraRank)
	ts = append(ts,
		mat(blk("attn_kv_a_mqa"), emb, kvr+uint64(c.RopeDim)),
		vec(blk("attn_kv_a_norm"), kvr),
		mat(blk("attn_kv_b"), kvr, heads*uint64(d.NopeDim+d.ValueDim)),
		mat(blk("attn_output"), heads*uint64(d.ValueDim), emb),
		vec(blk("ffn_norm"), emb),
	)
	if i < d.LeadingDense {
		dff := uint64(d.DenseFeedForward)
		return append(ts, mat(blk("ffn_gate"), emb, dff), mat(blk("ffn_up"), emb, dff), mat(blk("ffn_down"), dff, emb))
	}
	n := uint64(c.Experts)
	ts = append(ts,
		mat(blk("ffn_gate_inp"), emb, n),
		mat(blk("ffn_gate_exps"), emb, ff, n),
		mat(blk("ffn_up_exps"), emb, ff, n),
		mat(blk("ffn_down_exps"), ff, emb, n),
	)
	if d.ProbsBias {
		ts = append(ts, vec(fmt.Sprintf("blk.%d.exp_probs_b.bias", i), n))
	}
	if d.SharedExperts > 0 {
		sf := ff * uint64(d.SharedExperts)
		ts = append(ts, mat(blk("ffn_gate_shexp"), emb, sf), mat(blk("ffn_up_shexp"), emb, sf), mat(blk("ffn_down_shexp"), sf, emb))
	}
	return ts
}
