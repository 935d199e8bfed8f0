package llama

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/ollama/ollama/fs/ggml"

	"github.com/mwpeer/mwpeer/experts/shard"
)

// Config is the shape of a model, read from its GGUF metadata.
type Config struct {
	Name          string // general.name
	Embedding     int
	Layers        int
	FeedForward   int
	Heads         int
	KVHeads       int
	HeadDim       int
	RopeDim       int
	RopeBase      float32
	NormEpsilon   float32
	ContextLength int
	Experts       int // 0: dense
	ExpertsUsed   int
	Vocab         int

	Arch              string // general.architecture (arch_qwen.go)
	RopeNeoX          bool   // NeoX RoPE (the Qwen families)
	SharedFeedForward int    // the shared expert's FFN size (qwen2moe); 0: none
	ExpertWeightsRaw  bool   // the top-k experts' weights are not renormalised (qwen2moe)

	DeepSeek2 *DeepSeek2Config // deepseek2's latent attention and FFN (arch_deepseek2.go); nil for the others
}

// ActiveParams is the number of weights one token uses: embeddings and
// output, attention, the router, and the feed-forward of the experts it is
// routed to (all of it for a dense model).
func (c Config) ActiveParams() int64 {
	if c.DeepSeek2 != nil {
		return c.deepseek2ActiveParams()
	}
	e, ff, hd := int64(c.Embedding), int64(c.FeedForward), int64(c.HeadDim)
	attn := e*int64(c.Heads)*hd*2 + e*int64(c.KVHeads)*hd*2
	ffn := 3*e*ff*int64(max(c.ExpertsUsed, 1)) + 3*e*int64(c.SharedFeedForward)
	router := e * int64(c.Experts)
	return 2*int64(c.Vocab)*e + int64(c.Layers)*(attn+ffn+router+2*e) + e
}

// layer holds the weights of one transformer block.
type layer struct {
	attnNorm, ffnNorm      []float32
	wq, wk, wv, wo         *matrix
	gate, up, down         *matrix   // dense FFN
	gateInp                *matrix   // MoE router
	gateExp, upExp, downEx []*matrix // MoE experts
	qwen                   qwenLayer // what the Qwen architectures add
	ds2                    *deepseek2Layer
}

// Model is a loaded llama-architecture model. It is read-only once loaded and
// safe for concurrent use; each generation keeps its own State.
type Model struct {
	Config Config
	Vocab  *Vocab

	embed      *matrix
	layers     []layer
	outputNorm []float32
	output     *matrix
	size       int64

	closeMu sync.Mutex
	mapped  []byte // the file's mapping, which the tensors alias (Load); nil when read into the heap
}

// ErrUnsupported is wrapped by load errors for architectures, tensor types and
// features the engine does not run.
var ErrUnsupported = errors.New("unsupported")

// Load maps a GGUF file into memory (see LoadFile). The caller closes the
// model.
func Load(path string) (*Model, error) { return LoadWith(path, ReadOptions{}) }

// LoadWith maps a GGUF file into memory as opts say (see LoadFile). The
// caller closes the model.
func LoadWith(path string, opts ReadOptions) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := LoadFile(f, opts)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return m, nil
}

// LoadFile maps the GGUF file f read-only and builds a model whose tensors
// are views of the mapping, not copies: loading costs address space and
// page cache, not heap, and the pages are read from disk as the forward
// pass first touches them. f may be closed once LoadFile returns; the
// model holds the mapping until its Close.
//
// Every tensor is checked to lie within the file's size as it is when
// mapped, so a file shorter than its header claims is an error here. The
// file must not be truncated or rewritten in place while the model is
// open: a page beyond a shrunk file's end faults (SIGBUS, which kills the
// process), and rewritten bytes change the weights under the model. Write
// a new file and rename it over the old one instead (as experts/shard's
// store does): the mapping keeps the old file's data.
func LoadFile(f *os.File, opts ReadOptions) (*Model, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size < 8 {
		// Too short for a GGUF header: let the decoder say so.
		return ReadWith(f, opts)
	}
	data, err := mapFile(f, size)
	if err != nil {
		return nil, err
	}
	// A file truncated between Stat and mmap would fault later; one
	// truncated after this check breaks the rule above.
	if fi, err = f.Stat(); err != nil || fi.Size() < size {
		unmapFile(data)
		if err == nil {
			err = fmt.Errorf("file shrank from %d to %d bytes while being mapped", size, fi.Size())
		}
		return nil, err
	}
	m, err := read(bytes.NewReader(data), data, opts)
	if err != nil {
		unmapFile(data)
		return nil, err
	}
	m.mapped = data
	return m, nil
}

// Read reads a GGUF model from r into the heap.
func Read(r io.ReadSeeker) (*Model, error) { return ReadWith(r, ReadOptions{}) }

// ReadOptions change what ReadWith requires of a file.
type ReadOptions struct {
	// WithoutExperts reads a MoE model's dense part only (a dense shard):
	// the per-expert FFN tensors may be absent and are not loaded. Such a
	// model runs only with an Experts that holds the experts elsewhere.
	WithoutExperts bool
}

// ReadWith reads a GGUF model from r into the heap as opts say: every
// tensor is copied, and the model owns no resource (Close does nothing).
func ReadWith(r io.ReadSeeker, opts ReadOptions) (*Model, error) { return read(r, nil, opts) }

// read reads a GGUF model from r. Its tensors are views of mapped, r's
// content in memory, when that is not nil, else copies read from r.
func read(r io.ReadSeeker, mapped []byte, opts ReadOptions) (*Model, error) {
	// A header only claims sizes; the file's own size bounds what is read.
	size, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	ra, ok := r.(io.ReaderAt)
	if !ok {
		ra = seekReaderAt{r}
	}
	if err := shard.CheckGGUF(ra, size); err != nil {
		return nil, fmt.Errorf("decode gguf: %w", err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	g, err := decode(r)
	if err != nil {
		return nil, fmt.Errorf("decode gguf: %w", err)
	}
	kv := g.KV()
	a, err := lookupArch(kv.Architecture())
	if err != nil {
		return nil, err
	}
	c := Config{
		Arch:          kv.Architecture(),
		Name:          kv.String("general.name", "llama"),
		Embedding:     int(kv.Uint("embedding_length")),
		Layers:        int(kv.Uint("block_count")),
		FeedForward:   int(kv.Uint("feed_forward_length")),
		Heads:         int(kv.Uint("attention.head_count")),
		RopeBase:      kv.Float("rope.freq_base", 10000),
		NormEpsilon:   kv.Float("attention.layer_norm_rms_epsilon", 1e-5),
		ContextLength: int(kv.Uint("context_length", 2048)),
		Experts:       int(kv.Uint("expert_count")),
		ExpertsUsed:   int(kv.Uint("expert_used_count")),
	}
	c.KVHeads = int(kv.Uint("attention.head_count_kv", uint32(c.Heads)))
	if c.Embedding <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 ||
		c.Embedding%c.Heads != 0 || c.Heads%c.KVHeads != 0 {
		return nil, fmt.Errorf("bad shape: embedding %d, %d layers, %d heads, %d kv heads",
			c.Embedding, c.Layers, c.Heads, c.KVHeads)
	}
	if c.Embedding > MaxEmbedding || c.FeedForward < 0 || c.FeedForward > MaxFeedForward || c.Experts < 0 || c.Experts > MaxExperts ||
		c.Layers > MaxLayers || c.Layers > len(g.Tensors().Items()) {
		return nil, fmt.Errorf("shape out of range: embedding %d, feed-forward %d, %d experts, %d layers in %d tensors",
			c.Embedding, c.FeedForward, c.Experts, c.Layers, len(g.Tensors().Items()))
	}
	c.HeadDim = int(kv.Uint("attention.key_length", uint32(c.Embedding/c.Heads)))
	c.RopeDim = int(kv.Uint("rope.dimension_count", uint32(c.HeadDim)))
	if c.RopeDim > c.HeadDim || c.RopeDim%2 != 0 {
		return nil, fmt.Errorf("rope dimension %d does not fit head size %d", c.RopeDim, c.HeadDim)
	}
	if c.Experts > 0 && (c.ExpertsUsed <= 0 || c.ExpertsUsed > c.Experts) {
		return nil, fmt.Errorf("%d of %d experts used per token", c.ExpertsUsed, c.Experts)
	}
	if s := kv.String("rope.scaling.type"); s != "" && s != "none" && !a.mla { // deepseek2 checks its own
		return nil, fmt.Errorf("rope scaling %q: %w", s, ErrUnsupported)
	}
	if err := a.configure(kv, &c); err != nil {
		return nil, err
	}
	vocab, err := newVocab(kv)
	if err != nil {
		return nil, err
	}
	c.Vocab = len(vocab.tokens)

	tensors := make(map[string]*ggml.Tensor)
	for _, t := range g.Tensors().Items() {
		tensors[t.Name] = t
	}
	base := int64(g.Tensors().Offset)
	m := &Model{Config: c, Vocab: vocab}
	ld := loader{r: r, mapped: mapped, base: base, fileSize: size, tensors: tensors}
	kvDim := c.KVHeads * c.HeadDim
	m.embed = ld.matrix("token_embd.weight", c.Vocab, c.Embedding)
	m.outputNorm = ld.vector("output_norm.weight", c.Embedding)
	if _, ok := tensors["output.weight"]; ok {
		m.output = ld.matrix("output.weight", c.Vocab, c.Embedding)
	} else {
		m.output = m.embed // tied embeddings
	}
	m.layers = make([]layer, c.Layers)
	for i := range m.layers {
		l := &m.layers[i]
		if a.mla {
			ld.loadDeepSeek2(c, i, l, opts.WithoutExperts)
			continue
		}
		n := func(s string) string { return fmt.Sprintf("blk.%d.%s.weight", i, s) }
		l.attnNorm = ld.vector(n("attn_norm"), c.Embedding)
		l.ffnNorm = ld.vector(n("ffn_norm"), c.Embedding)
		l.wq = ld.matrix(n("attn_q"), c.Heads*c.HeadDim, c.Embedding)
		l.wk = ld.matrix(n("attn_k"), kvDim, c.Embedding)
		l.wv = ld.matrix(n("attn_v"), kvDim, c.Embedding)
		l.wo = ld.matrix(n("attn_output"), c.Embedding, c.Heads*c.HeadDim)
		ld.loadQwen(a, c, i, l)
		if c.Experts == 0 {
			l.gate = ld.matrix(n("ffn_gate"), c.FeedForward, c.Embedding)
			l.up = ld.matrix(n("ffn_up"), c.FeedForward, c.Embedding)
			l.down = ld.matrix(n("ffn_down"), c.Embedding, c.FeedForward)
			continue
		}
		l.gateInp = ld.matrix(n("ffn_gate_inp"), c.Experts, c.Embedding)
		if opts.WithoutExperts {
			continue
		}
		l.gateExp = ld.experts(n("ffn_gate_exps"), c.Experts, c.FeedForward, c.Embedding)
		l.upExp = ld.experts(n("ffn_up_exps"), c.Experts, c.FeedForward, c.Embedding)
		l.downEx = ld.experts(n("ffn_down_exps"), c.Experts, c.Embedding, c.FeedForward)
	}
	if ld.err != nil {
		return nil, ld.err
	}
	m.size = ld.size
	return m, nil
}

// Bounds of a model's shape. They are far above any model the engine can
// run on one machine, and keep every tensor's size within an int64.
const (
	MaxEmbedding   = 1 << 20
	MaxFeedForward = 1 << 22
	MaxExperts     = 1 << 10
	MaxLayers      = 1 << 12
)

// maxArray bounds the metadata arrays read from a file (a vocabulary is far
// smaller); longer ones are skipped, so a file cannot make the decoder
// allocate what its header merely claims.
const maxArray = 1 << 21

// decode reads a GGUF header. The decoder trusts the lengths a file states;
// a length no slice can have makes it panic, which is turned into an error
// here: a bad file is an error, never a crash.
func decode(r io.ReadSeeker) (g *ggml.GGML, err error) {
	defer func() {
		if p := recover(); p != nil {
			g, err = nil, fmt.Errorf("malformed GGUF header: %v", p)
		}
	}()
	return ggml.Decode(r, maxArray)
}

// seekReaderAt reads at an offset by seeking.
type seekReaderAt struct{ r io.ReadSeeker }

func (s seekReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if _, err := s.r.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	return io.ReadFull(s.r, p)
}

// loader reads tensors, remembering the first error.
type loader struct {
	r        io.ReadSeeker
	mapped   []byte // r's content, when in memory: tensors are views of it
	base     int64
	fileSize int64
	tensors  map[string]*ggml.Tensor
	err      error
	size     int64
}

// data returns the bytes of the tensor name after checking its shape (GGUF order).
func (ld *loader) data(name string, shape ...uint64) (*ggml.Tensor, []byte) {
	if ld.err != nil {
		return nil, nil
	}
	t, ok := ld.tensors[name]
	if !ok {
		ld.err = fmt.Errorf("missing tensor %s", name)
		return nil, nil
	}
	if fmt.Sprint(t.Shape) != fmt.Sprint(shape) {
		ld.err = fmt.Errorf("tensor %s has shape %v, want %v", name, t.Shape, shape)
		return nil, nil
	}
	if _, _, ok := blockLayout(t.Kind); !ok {
		ld.err = fmt.Errorf("tensor %s: type %s: %w", name, typeName(t.Kind), ErrUnsupported)
		return nil, nil
	}
	if n := t.Size(); t.Offset > uint64(ld.fileSize) || n > uint64(ld.fileSize) || ld.base+int64(t.Offset)+int64(n) > ld.fileSize {
		ld.err = fmt.Errorf("tensor %s (%d bytes at %d) lies beyond the end of the %d-byte file", name, n, ld.base+int64(t.Offset), ld.fileSize)
		return nil, nil
	}
	if ld.mapped != nil {
		off := ld.base + int64(t.Offset)
		buf := ld.mapped[off : off+int64(t.Size()) : off+int64(t.Size())]
		ld.size += int64(len(buf))
		return t, buf
	}
	buf := make([]byte, t.Size())
	if _, err := ld.r.Seek(ld.base+int64(t.Offset), io.SeekStart); err != nil {
		ld.err = fmt.Errorf("tensor %s: %w", name, err)
		return nil, nil
	}
	if _, err := io.ReadFull(ld.r, buf); err != nil {
		ld.err = fmt.Errorf("tensor %s: %w", name, err)
		return nil, nil
	}
	ld.size += int64(len(buf))
	return t, buf
}

func (ld *loader) matrix(name string, rows, cols int) *matrix {
	t, buf := ld.data(name, uint64(cols), uint64(rows))
	if t == nil {
		return nil
	}
	m, err := newMatrix(t.Kind, rows, cols, buf)
	if err != nil {
		ld.err = fmt.Errorf("tensor %s: %w", name, err)
	}
	return m
}

func (ld *loader) experts(name string, n, rows, cols int) []*matrix {
	t, buf := ld.data(name, uint64(cols), uint64(rows), uint64(n))
	if t == nil {
		return nil
	}
	ms := make([]*matrix, n)
	per := len(buf) / n
	for e := range ms {
		m, err := newMatrix(t.Kind, rows, cols, buf[e*per:(e+1)*per])
		if err != nil {
			ld.err = fmt.Errorf("tensor %s: %w", name, err)
			return nil
		}
		ms[e] = m
	}
	return ms
}

func (ld *loader) vector(name string, n int) []float32 {
	t, buf := ld.data(name, uint64(n))
	if t == nil {
		return nil
	}
	m, err := newMatrix(t.Kind, 1, n, buf)
	if err != nil {
		ld.err = fmt.Errorf("tensor %s: %w", name, err)
		return nil
	}
	v := make([]float32, n)
	m.row(0, v)
	return v
}
