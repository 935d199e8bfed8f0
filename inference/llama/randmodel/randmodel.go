package randmodel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// TensorType is the storage type of a tensor's elements, numbered as in GGML.
type TensorType uint32

// Tensor types that Write can produce.
const (
	F32 TensorType = 0
	F16 TensorType = 1
)

func (t TensorType) String() string {
	switch t {
	case F32:
		return "F32"
	case F16:
		return "F16"
	}
	return fmt.Sprintf("TensorType(%d)", uint32(t))
}

// size is the number of bytes of one element.
func (t TensorType) size() uint64 {
	if t == F16 {
		return 2
	}
	return 4
}

// Config describes a model. Zero fields take defaults when written (see Write);
// Embedding, Layers, FeedForward and Heads must be set.
type Config struct {
	Name          string // general.name; default "mwpeer-test"
	Embedding     int    // hidden size
	Layers        int    // transformer blocks
	FeedForward   int    // FFN (or per-expert FFN) hidden size
	Heads         int    // attention heads; must divide Embedding
	KVHeads       int    // key/value heads, must divide Heads; default Heads
	RopeDim       int    // rotary dimensions, even and at most Embedding/Heads; default Embedding/Heads
	ContextLength int    // llama.context_length; default 512
	Experts       int    // FFN experts per layer; 0 means a dense model
	ExpertsUsed   int    // experts chosen per token; default 2 (for MoE models)

	// Type is the storage type of the weight matrices. Norm weights are always F32.
	// F16 sets general.file_type to 1, which Ollama needs before it will quantize.
	Type TensorType

	Seed  int64   // seeds the weights; each tensor draws from its own stream
	Scale float32 // standard deviation of the weight matrices; default 0.5

	// Printable makes the model never emit a special token (not even </s>) nor a
	// byte outside printable ASCII, so greedy generation always runs to its limit
	// and every generated token is a whole piece of text: Ollama reports one
	// log-probability per token. See printableChannel for how.
	Printable bool

	// Words are extra normal tokens (SentencePiece pieces such as "▁the") appended
	// after the byte tokens. Without them every text is spelled in bytes.
	Words []string

	// Arch is general.architecture: "llama" (the default), "qwen2",
	// "qwen3", "qwen2moe", "qwen3moe" (see qwen.go) or "deepseek2"
	// (deepseek2.go). For the MoE architectures FeedForward is the routed
	// experts' size.
	Arch string
	// HeadDim is the attention head size (attention.key_length), qwen3 and
	// qwen3moe only; default Embedding/Heads.
	HeadDim int
	// SharedFeedForward is the shared expert's FFN size (qwen2moe only;
	// default FeedForward).
	SharedFeedForward int
	// RopeBase is rope.freq_base (default: not written for llama, which
	// then reads 10000; 1000000 for the Qwen families, as Qwen has it).
	RopeBase float32

	// DeepSeek2 is the rest of a deepseek2 model's shape (deepseek2.go),
	// set for that architecture only (a value, so that Configs compare
	// and print as values).
	DeepSeek2 DeepSeek2

	// BPE, when set, replaces the SentencePiece vocabulary by a byte-level
	// BPE one (see BPE); Words must then be empty.
	BPE *BPE

	// Favor names a token (by its text) that a Printable model emits at
	// every step: the output head reads the printable channel with a large
	// positive weight for it. Tests use it to make a model end its turn
	// ("<|im_end|>") or write a special token that does not end it.
	Favor string

	// suppress marks the tokens a Printable model never emits, favor the one
	// it always emits (both set by Write).
	suppress []bool
	favor    int
}

// Tiny returns the documented test model: 64-dim, 2 layers, 4 heads, and a
// Mixture-of-Experts FFN of 4 experts of 128, 2 used per token, all F32, and
// Printable. It is about 1 MB.
func Tiny() Config {
	return Config{
		Name:          "mwpeer-tiny-moe",
		Embedding:     64,
		Layers:        2,
		FeedForward:   128,
		Heads:         4,
		KVHeads:       4,
		RopeDim:       16,
		ContextLength: 512,
		Experts:       4,
		ExpertsUsed:   2,
		Type:          F32,
		Seed:          1,
		Scale:         0.5,
		Printable:     true,
	}
}

// TinyDense returns Tiny without experts: one dense FFN per layer.
func TinyDense() Config {
	c := Tiny()
	c.Name = "mwpeer-tiny-dense"
	c.Experts = 0
	c.ExpertsUsed = 0
	return c
}

// Special token IDs of every generated vocabulary.
const (
	UnknownToken = 0 // <unk>
	BOSToken     = 1 // <s>
	EOSToken     = 2 // </s>
)

// token_type values of the SentencePiece vocabulary.
const (
	tokenNormal  = 1
	tokenUnknown = 2
	tokenControl = 3
	tokenByte    = 6
)

// normEpsilon is llama.attention.layer_norm_rms_epsilon.
const normEpsilon = 1e-5

// alignment of the tensor data, GGUF's default (general.alignment is not written).
const alignment = 32

// Tensor is one tensor of a generated file.
type Tensor struct {
	Name  string
	Shape []uint64 // GGUF order, innermost (contiguous) dimension first
	Type  TensorType
}

// Elements returns the number of elements of t.
func (t Tensor) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Size returns the number of bytes of t's data.
func (t Tensor) Size() uint64 { return t.Elements() * t.Type.size() }

// isNorm reports whether t holds RMS-norm weights, which are drawn around 1.
func (t Tensor) isNorm() bool { return strings.HasSuffix(t.Name, "norm.weight") }

// withDefaults returns c with its zero fields filled, or an error if c cannot be written.
func (c Config) withDefaults() (Config, error) {
	if c.Embedding <= 0 || c.Layers <= 0 || c.FeedForward <= 0 || c.Heads <= 0 {
		return c, errors.New("randmodel: Embedding, Layers, FeedForward and Heads must be positive")
	}
	if c.Embedding%c.Heads != 0 {
		return c, fmt.Errorf("randmodel: Heads (%d) must divide Embedding (%d)", c.Heads, c.Embedding)
	}
	if c.Name == "" {
		c.Name = "mwpeer-test"
	}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if c.KVHeads < 0 || c.Heads%c.KVHeads != 0 {
		return c, fmt.Errorf("randmodel: KVHeads (%d) must divide Heads (%d)", c.KVHeads, c.Heads)
	}
	if c.Arch == "" {
		c.Arch = "llama"
	}
	a, ok := archs[c.Arch]
	if !ok {
		return c, fmt.Errorf("randmodel: unknown architecture %q", c.Arch)
	}
	if c.HeadDim != 0 && c.HeadDim != c.Embedding/c.Heads && !a.qkNorm && !a.mla {
		return c, fmt.Errorf("randmodel: HeadDim is for qwen3 and qwen3moe, not %s", c.Arch)
	}
	if c.HeadDim == 0 {
		c.HeadDim = c.Embedding / c.Heads
	}
	c, err := c.deepseek2Defaults()
	if err != nil {
		return c, err
	}
	if c.Arch != "llama" && !a.mla && a.moe != (c.Experts > 0) {
		return c, fmt.Errorf("randmodel: %s with %d experts", c.Arch, c.Experts)
	}
	if a.shared && c.SharedFeedForward == 0 {
		c.SharedFeedForward = c.FeedForward
	}
	if c.RopeBase == 0 && c.Arch != "llama" {
		c.RopeBase = 1e6
	}
	if c.Arch != "llama" && c.BPE == nil {
		return c, fmt.Errorf("randmodel: %s needs a BPE vocabulary", c.Arch)
	}
	headDim := c.HeadDim
	if c.RopeDim == 0 {
		c.RopeDim = headDim
	}
	if c.RopeDim < 0 || c.RopeDim > headDim || c.RopeDim%2 != 0 {
		return c, fmt.Errorf("randmodel: RopeDim (%d) must be even and at most the head size %d", c.RopeDim, headDim)
	}
	if c.ContextLength == 0 {
		c.ContextLength = 512
	}
	if c.ContextLength < 0 {
		return c, fmt.Errorf("randmodel: negative ContextLength %d", c.ContextLength)
	}
	if c.Experts < 0 {
		return c, fmt.Errorf("randmodel: negative Experts %d", c.Experts)
	}
	if c.Experts > 0 {
		if c.ExpertsUsed == 0 {
			c.ExpertsUsed = min(2, c.Experts)
		}
		if c.ExpertsUsed < 1 || c.ExpertsUsed > c.Experts {
			return c, fmt.Errorf("randmodel: ExpertsUsed (%d) must be between 1 and Experts (%d)", c.ExpertsUsed, c.Experts)
		}
	} else if c.ExpertsUsed != 0 {
		return c, errors.New("randmodel: ExpertsUsed set on a dense model")
	}
	if c.Type != F32 && c.Type != F16 {
		return c, fmt.Errorf("randmodel: unsupported tensor type %v", c.Type)
	}
	if c.Scale == 0 {
		c.Scale = 0.5
	}
	if c.Scale < 0 {
		return c, fmt.Errorf("randmodel: negative Scale %g", c.Scale)
	}
	if c.BPE != nil {
		if len(c.Words) > 0 {
			return c, errors.New("randmodel: Words are SentencePiece pieces; a BPE vocabulary takes Merges")
		}
		if _, _, _, err := c.BPE.tokens(); err != nil {
			return c, err
		}
		return c, nil
	}
	seen := make(map[string]bool)
	for _, tok := range baseTokens() {
		seen[tok] = true
	}
	for _, w := range c.Words {
		if w == "" || seen[w] {
			return c, fmt.Errorf("randmodel: word %q is empty or already in the vocabulary", w)
		}
		seen[w] = true
	}
	return c, nil
}

// baseTokens returns <unk>, <s>, </s> and the byte tokens <0x00>..<0xFF>.
func baseTokens() []string {
	toks := []string{"<unk>", "<s>", "</s>"}
	for b := range 256 {
		toks = append(toks, fmt.Sprintf("<0x%02X>", b))
	}
	return toks
}

// VocabSize returns the number of tokens of c's vocabulary.
func (c Config) VocabSize() int {
	if c.BPE != nil {
		toks, _, _, _ := c.BPE.tokens()
		return len(toks)
	}
	return 3 + 256 + len(c.Words)
}

// Tensors returns the tensors Write writes for c, in file order.
func (c Config) Tensors() ([]Tensor, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	emb, ff, vocab := uint64(c.Embedding), uint64(c.FeedForward), uint64(c.VocabSize())
	qd := uint64(c.Heads * c.HeadDim)
	kv := uint64(c.KVHeads * c.HeadDim)
	mat := func(name string, shape ...uint64) Tensor { return Tensor{name, shape, c.Type} }
	norm := func(name string) Tensor { return Tensor{name, []uint64{emb}, F32} }
	vec := func(name string, n uint64) Tensor { return Tensor{name, []uint64{n}, F32} }
	a := archs[c.Arch]

	ts := []Tensor{mat("token_embd.weight", emb, vocab)}
	for i := range c.Layers {
		if a.mla {
			ts = append(ts, c.deepseek2Layer(i)...)
			continue
		}
		blk := func(s string) string { return fmt.Sprintf("blk.%d.%s.weight", i, s) }
		ts = append(ts,
			norm(blk("attn_norm")),
			mat(blk("attn_q"), emb, qd),
			mat(blk("attn_k"), emb, kv),
			mat(blk("attn_v"), emb, kv),
			mat(blk("attn_output"), qd, emb),
			norm(blk("ffn_norm")),
		)
		if a.bias {
			bias := func(s string) string { return fmt.Sprintf("blk.%d.%s.bias", i, s) }
			ts = append(ts, vec(bias("attn_q"), qd), vec(bias("attn_k"), kv), vec(bias("attn_v"), kv))
		}
		if a.qkNorm {
			hd := uint64(c.HeadDim)
			ts = append(ts, vec(blk("attn_q_norm"), hd), vec(blk("attn_k_norm"), hd))
		}
		if a.shared {
			sf := uint64(c.SharedFeedForward)
			ts = append(ts,
				vec(blk("ffn_gate_inp_shexp"), emb),
				mat(blk("ffn_gate_shexp"), emb, sf),
				mat(blk("ffn_up_shexp"), emb, sf),
				mat(blk("ffn_down_shexp"), sf, emb),
			)
		}
		if c.Experts > 0 {
			n := uint64(c.Experts)
			ts = append(ts,
				mat(blk("ffn_gate_inp"), emb, n),
				mat(blk("ffn_gate_exps"), emb, ff, n),
				mat(blk("ffn_up_exps"), emb, ff, n),
				mat(blk("ffn_down_exps"), ff, emb, n),
			)
		} else {
			ts = append(ts,
				mat(blk("ffn_gate"), emb, ff),
				mat(blk("ffn_up"), emb, ff),
				mat(blk("ffn_down"), ff, emb),
			)
		}
	}
	ts = append(ts, norm("output_norm.weight"), mat("output.weight", emb, vocab))
	return ts, nil
}

// WriteFile writes the model c to the file path.
func WriteFile(path string, c Config) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := Write(f, c); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Write writes the model c to w as GGUF version 3.
func Write(w io.Writer, c Config) error {
	c, err := c.withDefaults()
	if err != nil {
		return err
	}
	tensors, err := c.Tensors()
	if err != nil {
		return err
	}
	e := &encoder{w: bufio.NewWriterSize(w, 64<<10)}

	fileType := uint32(0) // all F32
	if c.Type == F16 {
		fileType = 1 // mostly F16
	}
	tokenizer, suppress, err := c.tokenizer()
	if err != nil {
		return err
	}
	c.suppress = suppress
	c.favor = -1
	if c.Favor != "" {
		for _, kv := range tokenizer {
			if kv.key != "tokenizer.ggml.tokens" {
				continue
			}
			for i, t := range kv.value.([]string) {
				if t == c.Favor {
					c.favor = i
				}
			}
		}
		if c.favor < 0 || !c.Printable {
			return fmt.Errorf("randmodel: Favor %q needs Printable and a token of that text", c.Favor)
		}
	}

	ar := c.Arch + "."
	ff := c.FeedForward
	if c.Arch == "deepseek2" {
		ff = c.DeepSeek2.DenseFeedForward // the routed experts' is expert_feed_forward_length
	}
	kvs := []keyValue{
		{"general.architecture", c.Arch},
		{"general.name", c.Name},
		{"general.file_type", fileType},
		{ar + "context_length", uint32(c.ContextLength)},
		{ar + "embedding_length", uint32(c.Embedding)},
		{ar + "block_count", uint32(c.Layers)},
		{ar + "feed_forward_length", uint32(ff)},
		{ar + "attention.head_count", uint32(c.Heads)},
		{ar + "attention.head_count_kv", uint32(c.KVHeads)},
		{ar + "rope.dimension_count", uint32(c.RopeDim)},
		{ar + "attention.layer_norm_rms_epsilon", float32(normEpsilon)},
	}
	if c.Experts > 0 {
		kvs = append(kvs,
			keyValue{ar + "expert_count", uint32(c.Experts)},
			keyValue{ar + "expert_used_count", uint32(c.ExpertsUsed)},
		)
	}
	kvs = append(kvs, c.archKeys()...)
	kvs = append(kvs, tokenizer...)

	e.raw([]byte("GGUF"))
	e.u32(3)
	e.u64(uint64(len(tensors)))
	e.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		e.str(kv.key)
		e.value(kv.value)
	}
	var offset uint64
	for _, t := range tensors {
		e.str(t.Name)
		e.u32(uint32(len(t.Shape)))
		for _, d := range t.Shape {
			e.u64(d)
		}
		e.u32(uint32(t.Type))
		e.u64(offset)
		offset = align(offset + t.Size())
	}
	e.pad()
	for _, t := range tensors {
		e.tensor(t, c)
		e.pad()
	}
	if e.err != nil {
		return fmt.Errorf("randmodel: %w", e.err)
	}
	if err := e.w.Flush(); err != nil {
		return fmt.Errorf("randmodel: %w", err)
	}
	return nil
}

// keyValue is one metadata entry.
type keyValue struct {
	key   string
	value any
}

func align(n uint64) uint64 { return (n + alignment - 1) / alignment * alignment }
