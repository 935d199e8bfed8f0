package randmodel

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ollama/ollama/fs/ggml"
)

func gqa() Config {
	c := TinyDense()
	c.Name, c.Embedding, c.Heads, c.KVHeads, c.RopeDim, c.Layers = "gqa", 96, 6, 2, 0, 3
	return c
}

func f16MoE() Config {
	c := Tiny()
	c.Type, c.Experts = F16, 8
	return c
}

func withWords() Config {
	c := Tiny()
	c.Words = []string{"▁the", "▁of", "▁and", "▁Hello", "ing"}
	return c
}

func notPrintable() Config {
	c := Tiny()
	c.Printable = false
	return c
}

var readBackCases = []struct {
	name string
	c    Config
}{
	{"tiny moe", Tiny()},
	{"not printable", notPrintable()},
	{"tiny dense", TinyDense()},
	{"grouped-query attention", gqa()},
	{"f16 with 8 experts", f16MoE()},
	{"extra words", withWords()},
	{"defaults", Config{Embedding: 32, Layers: 1, FeedForward: 16, Heads: 2}},
}

func TestWriteReadsBackWithOllama(t *testing.T) {
	for _, tc := range readBackCases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "model.gguf")
			if err := WriteFile(path, tc.c); err != nil {
				t.Fatal(err)
			}
			c, err := tc.c.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := ggml.Decode(bytes.NewReader(data), -1)
			if err != nil {
				t.Fatalf("ollama cannot decode the file: %v", err)
			}
			checkKV(t, f.KV(), c)
			checkTensors(t, f, data, c)
		})
	}
}

func checkKV(t *testing.T, kv ggml.KV, c Config) {
	t.Helper()
	wantFileType := uint32(0)
	if c.Type == F16 {
		wantFileType = 1
	}
	for key, want := range map[string]any{
		"general.architecture":                   "llama",
		"general.name":                           c.Name,
		"general.file_type":                      wantFileType,
		"llama.context_length":                   uint32(c.ContextLength),
		"llama.embedding_length":                 uint32(c.Embedding),
		"llama.block_count":                      uint32(c.Layers),
		"llama.feed_forward_length":              uint32(c.FeedForward),
		"llama.attention.head_count":             uint32(c.Heads),
		"llama.attention.head_count_kv":          uint32(c.KVHeads),
		"llama.rope.dimension_count":             uint32(c.RopeDim),
		"llama.attention.layer_norm_rms_epsilon": float32(1e-5),
		"tokenizer.ggml.model":                   "llama",
		"tokenizer.ggml.bos_token_id":            uint32(1),
		"tokenizer.ggml.eos_token_id":            uint32(2),
		"tokenizer.ggml.unknown_token_id":        uint32(0),
	} {
		if got := kv.Value(key); got != want {
			t.Errorf("%s = %v (%T), want %v (%T)", key, got, got, want, want)
		}
	}
	if c.Experts > 0 {
		if got := kv.Value("llama.expert_count"); got != uint32(c.Experts) {
			t.Errorf("llama.expert_count = %v, want %d", got, c.Experts)
		}
		if got := kv.Value("llama.expert_used_count"); got != uint32(c.ExpertsUsed) {
			t.Errorf("llama.expert_used_count = %v, want %d", got, c.ExpertsUsed)
		}
	} else {
		for _, key := range []string{"llama.expert_count", "llama.expert_used_count"} {
			if got := kv.Value(key); got != nil {
				t.Errorf("dense model has %s = %v", key, got)
			}
		}
	}
	if got := kv.FileType(); c.Type == F16 && got.String() != "F16" {
		t.Errorf("file type reads as %v, want F16", got)
	}

	tokens := kv.Strings("tokenizer.ggml.tokens")
	types := kv.Ints("tokenizer.ggml.token_type")
	scores := kv.Floats("tokenizer.ggml.scores")
	vocab := c.VocabSize()
	if len(tokens) != vocab || len(types) != vocab || len(scores) != vocab {
		t.Fatalf("vocabulary has %d tokens, %d types, %d scores; want %d", len(tokens), len(types), len(scores), vocab)
	}
	if !slices.Equal(tokens[:3], []string{"<unk>", "<s>", "</s>"}) || !slices.Equal(types[:3], []int32{2, 3, 3}) {
		t.Errorf("special tokens %q with types %v", tokens[:3], types[:3])
	}
	if tokens[3] != "<0x00>" || tokens[3+0x0A] != "<0x0A>" || tokens[258] != "<0xFF>" {
		t.Errorf("byte tokens %q, %q, %q", tokens[3], tokens[3+0x0A], tokens[258])
	}
	for i := 3; i < 259; i++ {
		if types[i] != 6 {
			t.Fatalf("token %q has type %d, want 6", tokens[i], types[i])
		}
	}
	if !slices.Equal(tokens[259:], c.Words) {
		t.Errorf("words %q, want %q", tokens[259:], c.Words)
	}
	for i := 259; i < vocab; i++ {
		if types[i] != 1 {
			t.Errorf("word %q has type %d, want 1", tokens[i], types[i])
		}
	}
}

func checkTensors(t *testing.T, f *ggml.GGML, data []byte, c Config) {
	t.Helper()
	want, err := c.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	got := f.Tensors().Items()
	if len(got) != len(want) {
		t.Fatalf("%d tensors, want %d", len(got), len(want))
	}
	base := f.Tensors().Offset
	if base%32 != 0 {
		t.Errorf("tensor data starts at %d, not aligned to 32", base)
	}
	var next uint64
	for i, g := range got {
		w := want[i]
		if g.Name != w.Name || !slices.Equal(g.Shape, w.Shape) || g.Kind != uint32(w.Type) {
			t.Errorf("tensor %d is %s %v kind %d, want %s %v %v", i, g.Name, g.Shape, g.Kind, w.Name, w.Shape, w.Type)
			continue
		}
		if g.Offset != next || g.Offset%32 != 0 {
			t.Errorf("%s at offset %d, want %d (aligned to 32)", g.Name, g.Offset, next)
		}
		if g.Size() != w.Size() {
			t.Errorf("%s: ollama sizes it %d bytes, want %d", g.Name, g.Size(), w.Size())
		}
		next = align(g.Offset + g.Size())

		values := decodeValues(data[base+g.Offset:base+g.Offset+g.Size()], w.Type)
		if c.Printable { // leave out the channel, which TestPrintableChannel checks
			const untouched = 12345
			role := printableRole(w.Name)
			var drawn []float64
			for j, v := range values {
				if printableChannel(role, w.Shape, uint64(j), untouched, c) == untouched {
					drawn = append(drawn, v)
				}
			}
			values = drawn
		}
		mean, std := stats(values)
		wantMean, wantStd := 0.0, float64(c.Scale)
		if w.isNorm() {
			wantMean, wantStd = 1, 0.1
		}
		tol := 4 * wantStd / math.Sqrt(float64(len(values))) // four standard errors
		if math.Abs(mean-wantMean) > tol+1e-3 || math.Abs(std-wantStd) > wantStd*0.5 {
			t.Errorf("%s: mean %.4f std %.4f, want about %.2f and %.2f", g.Name, mean, std, wantMean, wantStd)
		}
	}
	last := got[len(got)-1]
	if end := base + last.Offset + last.Size(); end != uint64(len(data)) {
		t.Errorf("file is %d bytes, data ends at %d", len(data), end)
	}
	if f.Length != int64(len(data)) {
		t.Errorf("ollama read %d bytes of a %d-byte file", f.Length, len(data))
	}
}

func decodeValues(b []byte, typ TensorType) []float64 {
	var out []float64
	switch typ {
	case F32:
		for i := 0; i < len(b); i += 4 {
			out = append(out, float64(math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))))
		}
	case F16:
		for i := 0; i < len(b); i += 2 {
			out = append(out, float64(float16value(binary.LittleEndian.Uint16(b[i:]))))
		}
	}
	return out
}

func stats(v []float64) (mean, std float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	for _, x := range v {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(v)))
}

// TestTinyIsStable pins the bytes of Tiny: fixtures, manifests and golden outputs
// built from it elsewhere stay valid only while this hash holds.
func TestTinyIsStable(t *testing.T) {
	var a, b bytes.Buffer
	if err := Write(&a, Tiny()); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, Tiny()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two writes of the same Config differ")
	}
	sum := sha256.Sum256(a.Bytes())
	const want = "7b3f95f09bc01258a1e8745a37ea9f652bd6258c88c3ec7b55cc484890ee9d53"
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Errorf("Tiny() is %d bytes with sha256 %s, want %s", a.Len(), got, want)
	}

	other := Tiny()
	other.Seed++
	var c bytes.Buffer
	if err := Write(&c, other); err != nil {
		t.Fatal(err)
	}
	if a.Len() != c.Len() || bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Error("another seed should give other weights in the same layout")
	}
}

// TestLayersDrawIndependently checks that a tensor's weights depend on its name and
// the seed only, so growing a model keeps the weights it had.
func TestLayersDrawIndependently(t *testing.T) {
	small, big := Tiny(), Tiny()
	big.Layers = 3
	tensorBytes := func(c Config, name string) []byte {
		var buf bytes.Buffer
		if err := Write(&buf, c); err != nil {
			t.Fatal(err)
		}
		f, err := ggml.Decode(bytes.NewReader(buf.Bytes()), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range f.Tensors().Items() {
			if tt.Name == name {
				start := f.Tensors().Offset + tt.Offset
				return buf.Bytes()[start : start+tt.Size()]
			}
		}
		t.Fatalf("no tensor %s", name)
		return nil
	}
	for _, name := range []string{"blk.1.ffn_up_exps.weight", "output.weight"} {
		if !bytes.Equal(tensorBytes(small, name), tensorBytes(big, name)) {
			t.Errorf("%s changed when a layer was added", name)
		}
	}
}

func TestF16RoundsF32Weights(t *testing.T) {
	c32, c16 := Tiny(), Tiny()
	c16.Type = F16
	var b32, b16 bytes.Buffer
	if err := Write(&b32, c32); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b16, c16); err != nil {
		t.Fatal(err)
	}
	f32, err := ggml.Decode(bytes.NewReader(b32.Bytes()), 0)
	if err != nil {
		t.Fatal(err)
	}
	f16, err := ggml.Decode(bytes.NewReader(b16.Bytes()), 0)
	if err != nil {
		t.Fatal(err)
	}
	t32, t16 := f32.Tensors().Items(), f16.Tensors().Items()
	for i := range t32 {
		want := decodeValues(b32.Bytes()[f32.Tensors().Offset+t32[i].Offset:][:t32[i].Size()], F32)
		typ := F16
		if len(t16[i].Shape) == 1 {
			typ = F32
		}
		if t16[i].Kind != uint32(typ) {
			t.Fatalf("%s has kind %d, want %v", t16[i].Name, t16[i].Kind, typ)
		}
		got := decodeValues(b16.Bytes()[f16.Tensors().Offset+t16[i].Offset:][:t16[i].Size()], typ)
		for j := range want {
			if typ == F16 {
				want[j] = float64(float16value(float16bits(float32(want[j]))))
			}
			if got[j] != want[j] {
				t.Fatalf("%s[%d] = %g, want %g", t16[i].Name, j, got[j], want[j])
			}
		}
	}
}

func TestFloat16(t *testing.T) {
	for h := range 1 << 16 {
		v := float16value(uint16(h))
		if v != v { // NaN
			continue
		}
		if got := float16bits(v); got != uint16(h) {
			t.Fatalf("%#04x -> %g -> %#04x", h, v, got)
		}
	}
	for _, tc := range []struct {
		f    float32
		want uint16
	}{
		{1, 0x3c00},
		{-2, 0xc000},
		{65504, 0x7bff},
		{65520, 0x7c00},                 // halfway to the next, rounds to even: infinity
		{1 + 1.0/2048, 0x3c00},          // halfway, rounds to even
		{1 + 3.0/2048, 0x3c02},          // halfway, rounds to even (up)
		{0x1p-24, 0x0001},               // smallest subnormal
		{0x1p-25, 0x0000},               // halfway to it, rounds to even: zero
		{0x1.8p-25, 0x0001},             // above halfway
		{0x1.ffcp-15, 0x0400},           // largest subnormal rounds up to the smallest normal
		{float32(math.Inf(-1)), 0xfc00}, // infinity stays
		{float32(math.Copysign(0, -1)), 0x8000},
	} {
		if got := float16bits(tc.f); got != tc.want {
			t.Errorf("float16bits(%g) = %#04x, want %#04x", tc.f, got, tc.want)
		}
	}
	if h := float16bits(float32(math.NaN())); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Errorf("NaN encodes as %#04x", h)
	}
}

func TestInvalidConfigs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no layers", func(c *Config) { c.Layers = 0 }, "must be positive"},
		{"heads do not divide embedding", func(c *Config) { c.Heads = 5 }, "must divide Embedding"},
		{"kv heads do not divide heads", func(c *Config) { c.KVHeads = 3 }, "must divide Heads"},
		{"odd rope", func(c *Config) { c.RopeDim = 7 }, "RopeDim"},
		{"rope beyond head", func(c *Config) { c.RopeDim = 32 }, "RopeDim"},
		{"more used than experts", func(c *Config) { c.ExpertsUsed = 5 }, "ExpertsUsed"},
		{"used on dense", func(c *Config) { c.Experts = 0 }, "dense"},
		{"quantized type", func(c *Config) { c.Type = 8 }, "unsupported tensor type"},
		{"duplicate word", func(c *Config) { c.Words = []string{"a", "a"} }, "already in the vocabulary"},
		{"word shadows byte token", func(c *Config) { c.Words = []string{"<0x41>"} }, "already in the vocabulary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Tiny()
			tc.change(&c)
			err := Write(&bytes.Buffer{}, c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Write = %v, want an error about %q", err, tc.want)
			}
		})
	}
}

// tensorValues decodes the file c and returns the values of each tensor by name.
func tensorValues(t *testing.T, c Config) (map[string][]float64, map[string][]uint64) {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, c); err != nil {
		t.Fatal(err)
	}
	f, err := ggml.Decode(bytes.NewReader(buf.Bytes()), 0)
	if err != nil {
		t.Fatal(err)
	}
	values, shapes := make(map[string][]float64), make(map[string][]uint64)
	for _, tt := range f.Tensors().Items() {
		start := f.Tensors().Offset + tt.Offset
		values[tt.Name] = decodeValues(buf.Bytes()[start:start+tt.Size()], TensorType(tt.Kind))
		shapes[tt.Name] = tt.Shape
	}
	return values, shapes
}

func TestPrintableChannel(t *testing.T) {
	for _, c := range []Config{Tiny(), TinyDense(), f16MoE(), withWords()} {
		values, shapes := tensorValues(t, c)
		emb, vocab := c.Embedding, c.VocabSize()
		for tok := range vocab {
			if got := values["token_embd.weight"][tok*emb]; got != channelValue {
				t.Fatalf("%s: embedding of token %d holds %v in the channel, want %v", c.Name, tok, got, channelValue)
			}
			wantRead := 0.0
			if tok < 3 || tok < 259 && (tok-3 < 0x20 || tok-3 > 0x7e) {
				wantRead = channelSuppress
			}
			if got := values["output.weight"][tok*emb]; got != wantRead {
				t.Fatalf("%s: output head reads the channel for token %d with %v, want %v", c.Name, tok, got, wantRead)
			}
		}
		writers := 0
		for name, v := range values {
			if printableRole(name) != roleWriter {
				continue
			}
			writers++
			in, out := int(shapes[name][0]), int(shapes[name][1])
			for j := range v {
				if j/in%out == 0 && v[j] != 0 {
					t.Fatalf("%s: %s writes %v into the channel at element %d", c.Name, name, v[j], j)
				}
			}
		}
		if writers != 2*c.Layers {
			t.Errorf("%s: %d tensors write the residual stream, want %d", c.Name, writers, 2*c.Layers)
		}
	}

	values, _ := tensorValues(t, notPrintable())
	if values["token_embd.weight"][0] == channelValue || values["output.weight"][0] == channelSuppress {
		t.Error("a model that is not Printable has the channel")
	}
}
