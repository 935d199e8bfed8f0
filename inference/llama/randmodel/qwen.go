package randmodel

// archTraits are the tensors and keys an architecture adds to llama's.
type archTraits struct {
	bias   bool // attn_q/k/v.bias
	qkNorm bool // attn_q_norm, attn_k_norm and attention.key_length
	moe    bool // MoE in every layer (expert_feed_forward_length)
	shared bool // a gated shared expert (ffn_*_shexp)
	mla    bool // deepseek2: its own layers and keys (deepseek2.go)
}

// archs are the architectures Write can produce, as llama.cpp and Ollama
// v0.17.4 load them: Ollama runs llama, qwen2 and qwen2moe through
// llama.cpp, qwen3, qwen3moe and deepseek2 in its own Go engine.
var archs = map[string]archTraits{
	"llama":     {},
	"qwen2":     {bias: true},
	"qwen3":     {qkNorm: true},
	"qwen2moe":  {bias: true, moe: true, shared: true},
	"qwen3moe":  {qkNorm: true, moe: true},
	"deepseek2": {mla: true},
}

// archKeys returns the metadata the architecture adds.
func (c Config) archKeys() []keyValue {
	a, ar := archs[c.Arch], c.Arch+"."
	var kvs []keyValue
	if a.mla {
		kvs = c.deepseek2Keys()
	}
	if c.RopeBase != 0 {
		kvs = append(kvs, keyValue{ar + "rope.freq_base", c.RopeBase})
	}
	if a.qkNorm {
		kvs = append(kvs,
			keyValue{ar + "attention.key_length", uint32(c.HeadDim)},
			keyValue{ar + "attention.value_length", uint32(c.HeadDim)})
	}
	if a.moe {
		kvs = append(kvs, keyValue{ar + "expert_feed_forward_length", uint32(c.FeedForward)})
	}
	if a.shared {
		kvs = append(kvs, keyValue{ar + "expert_shared_feed_forward_length", uint32(c.SharedFeedForward)})
	}
	return kvs
}

// TinyQwen2 returns a Qwen2-style dense model: TinyDense's shape with
// attention biases, NeoX RoPE, rope base 1e6 and the Qwen vocabulary.
func TinyQwen2() Config {
	c := TinyDense()
	c.Name, c.Arch, c.Seed = "mwpeer-tiny-qwen2", "qwen2", 21
	c.BPE = QwenBPE()
	return c
}

// TinyQwen3 returns a Qwen3-style dense model: Q/K norms and heads of 32
// (so Heads×HeadDim, 128, is twice the embedding), with grouped-query
// attention (4 heads, 2 KV heads).
func TinyQwen3() Config {
	c := TinyDense()
	c.Name, c.Arch, c.Seed = "mwpeer-tiny-qwen3", "qwen3", 22
	c.KVHeads, c.HeadDim, c.RopeDim = 2, 32, 32
	c.BPE = QwenBPE()
	return c
}

// TinyQwen2MoE returns a Qwen2-MoE-style model: 4 routed experts of 64, 2
// used per token, and a shared expert of 96 behind its sigmoid gate.
func TinyQwen2MoE() Config {
	c := Tiny()
	c.Name, c.Arch, c.Seed = "mwpeer-tiny-qwen2moe", "qwen2moe", 23
	c.FeedForward, c.SharedFeedForward = 64, 96
	c.BPE = QwenBPE()
	return c
}

// TinyQwen3MoE returns a Qwen3-MoE-style model: 8 routed experts of 64, 2
// used per token with renormalised weights, Q/K norms, heads of 32.
func TinyQwen3MoE() Config {
	c := Tiny()
	c.Name, c.Arch, c.Seed = "mwpeer-tiny-qwen3moe", "qwen3moe", 24
	c.Experts, c.FeedForward = 8, 64
	c.KVHeads, c.HeadDim, c.RopeDim = 2, 32, 32
	c.BPE = QwenBPE()
	return c
}
