package llama

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ollama/ollama/fs/ggml"
)

// Real vocabularies. testdata/vocab holds llama.cpp's vocabulary-only GGUF
// files of real models with the tokenizations llama.cpp expects of them
// (see testdata/vocab/README.md), and Qwen2's Hugging Face tokenizer
// files; Llama 3's vocabulary comes from the Ollama module's own tokenizer
// test data. A random 300-token vocabulary cannot show a merge-order bug
// that a 100k-token one does.

// vocabCase is one text of a .inp file and the token ids of its .out line.
type vocabCase struct {
	text string
	want []int
}

// readVocabCases parses llama.cpp's test-tokenizer-0 files: the texts of
// inp are separated by "\n__ggml_vocab_test__\n" (one after the last too),
// and out has one line of space-separated token ids per text.
func readVocabCases(inp, out []byte) ([]vocabCase, error) {
	const sep = "\n__ggml_vocab_test__\n"
	var texts []string
	for s := string(inp); s != ""; {
		i := strings.Index(s, sep)
		if i < 0 {
			texts = append(texts, s)
			break
		}
		texts = append(texts, s[:i])
		s = s[i+len(sep):]
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != len(texts) {
		return nil, fmt.Errorf("%d texts but %d lines of tokens", len(texts), len(lines))
	}
	cases := make([]vocabCase, len(texts))
	for i, line := range lines {
		cases[i].text = texts[i]
		for _, f := range strings.Fields(line) {
			id, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", i+1, err)
			}
			cases[i].want = append(cases[i].want, id)
		}
	}
	return cases, nil
}

// loadVocabCases reads testdata/vocab/ggml-vocab-<name>.gguf.{inp,out}.
func loadVocabCases(t testing.TB, name string) []vocabCase {
	t.Helper()
	base := filepath.Join("testdata", "vocab", "ggml-vocab-"+name+".gguf")
	inp, err := os.ReadFile(base + ".inp")
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(base + ".out")
	if err != nil {
		t.Fatal(err)
	}
	cases, err := readVocabCases(inp, out)
	if err != nil {
		t.Fatalf("%s: %v", base, err)
	}
	return cases
}

// readGzipVocab loads a gzipped vocabulary-only GGUF file of testdata/vocab.
func readGzipVocab(t testing.TB, name string) *Vocab {
	t.Helper()
	v, err := ReadVocab(bytes.NewReader(readGzip(t, name)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// checkVocabCases tokenizes every case as llama.cpp's test-tokenizer-0
// does (no BOS) and compares the ids exactly.
func checkVocabCases(t *testing.T, v *Vocab, cases []vocabCase) {
	t.Helper()
	if len(cases) == 0 {
		t.Fatal("no test texts")
	}
	v.AddBOS = false
	for _, c := range cases {
		if got := v.Encode(c.text); !slices.Equal(got, c.want) {
			t.Errorf("%q:\n got %v\nwant %v", c.text, got, c.want)
		}
	}
}

// realVocabs are llama.cpp's vocabulary files kept in testdata/vocab and
// the tokenizer.ggml.pre each one names.
var realVocabs = []struct{ name, pre string }{
	{"gpt-2", "gpt-2"},
	{"deepseek-llm", "deepseek-llm"},
	{"deepseek-coder", "deepseek-coder"},
	{"starcoder", "starcoder"},
	{"refact", "refact"},
}

// TestRealVocabulariesMatchLlamaCpp: on the vocabularies of real models,
// every test text of llama.cpp tokenizes to exactly the ids llama.cpp
// gives.
func TestRealVocabulariesMatchLlamaCpp(t *testing.T) {
	for _, rv := range realVocabs {
		t.Run(rv.name, func(t *testing.T) {
			v := readGzipVocab(t, "ggml-vocab-"+rv.name+".gguf.gz")
			if !v.IsBPE() {
				t.Fatal("not read as a byte-level BPE vocabulary")
			}
			if v.bpe.pre.name != rv.pre {
				t.Fatalf("read pre-tokenizer %q, want %q", v.bpe.pre.name, rv.pre)
			}
			checkVocabCases(t, v, loadVocabCases(t, rv.name))
		})
	}
}

// ollamaModuleDir is where the Go toolchain keeps the Ollama module, or ""
// if it cannot say.
func ollamaModuleDir(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/ollama/ollama").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// hfFiles is a byte-level BPE vocabulary as Hugging Face's files give it:
// vocab.json's tokens by id, then the special tokens after them, and
// merges.txt's merges in rank order.
type hfFiles struct {
	tokens []string
	types  []int32
	merges []string
}

func readHFFiles(t testing.TB, vocabJSON, mergesTxt []byte, special []string) hfFiles {
	t.Helper()
	var ids map[string]int32
	if err := json.Unmarshal(vocabJSON, &ids); err != nil {
		t.Fatal(err)
	}
	f := hfFiles{tokens: make([]string, len(ids)), types: make([]int32, len(ids))}
	for tok, id := range ids {
		if id < 0 || int(id) >= len(f.tokens) || f.types[id] != 0 {
			t.Fatalf("vocab.json: bad or repeated id %d", id)
		}
		f.tokens[id], f.types[id] = tok, tokNormal
	}
	for _, s := range special {
		f.tokens = append(f.tokens, s)
		f.types = append(f.types, tokControl)
	}
	sc := bufio.NewScanner(bytes.NewReader(mergesTxt))
	for sc.Scan() {
		// Only a first "#version" line is a header: "# #" is a merge.
		if len(f.merges) == 0 && strings.HasPrefix(sc.Text(), "#version") {
			continue
		}
		f.merges = append(f.merges, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return f
}

// vocab writes f as a vocabulary-only GGUF, as llama.cpp's converter would
// (tokenizer.ggml.model "gpt2", the pre-tokenizer named pre, the keys of
// kv), and reads it back with ReadVocab.
func (f hfFiles) vocab(t testing.TB, pre string, kv ggml.KV) *Vocab {
	t.Helper()
	kv["general.architecture"] = "llama"
	kv["tokenizer.ggml.model"] = "gpt2"
	kv["tokenizer.ggml.pre"] = pre
	kv["tokenizer.ggml.tokens"] = f.tokens
	kv["tokenizer.ggml.token_type"] = f.types
	kv["tokenizer.ggml.merges"] = f.merges
	path := filepath.Join(t.TempDir(), pre+"-vocab.gguf")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := ggml.WriteGGUF(out, kv, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	v, err := ReadVocab(out)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// llama3Vocab is Llama 3's vocabulary: 128,000 byte-level BPE tokens and
// 280,147 merges, which the Ollama module ships for its own tokenizer tests
// (tokenizer/testdata/llama3.2), then its 256 special tokens.
func llama3Vocab(t testing.TB) *Vocab {
	t.Helper()
	return memo(t, "llama3 vocab", func() *Vocab {
		return llama3Files(t).vocab(t, "llama-bpe", ggml.KV{
			"tokenizer.ggml.bos_token_id":  uint32(128000),
			"tokenizer.ggml.eos_token_id":  uint32(128001),
			"tokenizer.ggml.add_bos_token": true,
		})
	})
}

// llama3Files reads Llama 3's vocabulary from the Ollama module.
func llama3Files(t testing.TB) hfFiles {
	t.Helper()
	return memo(t, "llama3 files", func() hfFiles { return readLlama3Files(t) })
}

func readLlama3Files(t testing.TB) hfFiles {
	t.Helper()
	mod := ollamaModuleDir(t)
	if mod == "" {
		t.Skip("the Go toolchain does not list the Ollama module: no Llama 3 vocabulary")
	}
	dir := filepath.Join(mod, "tokenizer", "testdata", "llama3.2")
	enc, err := os.ReadFile(filepath.Join(dir, "encoder.json"))
	if err != nil {
		t.Skipf("no Llama 3 vocabulary in the Ollama module: %v", err)
	}
	merges, err := os.ReadFile(filepath.Join(dir, "vocab.bpe"))
	if err != nil {
		t.Skipf("no Llama 3 merges in the Ollama module: %v", err)
	}
	// 128000 to 128255, as Llama 3.2's tokenizer_config.json names them.
	named := map[int]string{0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>",
		6: "<|start_header_id|>", 7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>", 10: "<|python_tag|>"}
	var special []string
	reserved := 0
	for i := range 256 {
		s, ok := named[i]
		if !ok {
			s = fmt.Sprintf("<|reserved_special_token_%d|>", reserved)
			reserved++
		}
		special = append(special, s)
	}
	return readHFFiles(t, enc, merges, special)
}

// qwen2Vocab is Qwen2's vocabulary (Qwen1.5, Qwen2 and Qwen2.5 share it):
// 151,643 byte-level BPE tokens and 151,387 merges, kept gzipped in
// testdata/vocab, then the three special tokens of Qwen1.5's tokenizer.
func qwen2Vocab(t testing.TB) *Vocab {
	t.Helper()
	return memo(t, "qwen2 vocab", func() *Vocab {
		return qwen2Files(t).vocab(t, "qwen2", ggml.KV{
			"tokenizer.ggml.bos_token_id":  uint32(151643),
			"tokenizer.ggml.eos_token_id":  uint32(151643),
			"tokenizer.ggml.add_bos_token": false,
		})
	})
}

func qwen2Files(t testing.TB) hfFiles {
	t.Helper()
	return memo(t, "qwen2 files", func() hfFiles {
		return readHFFiles(t, readGzip(t, "qwen2-vocab.json.gz"), readGzip(t, "qwen2-merges.txt.gz"),
			[]string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"})
	})
}

// built keeps the real vocabularies for the life of the test binary:
// building one takes seconds, many more under the race detector.
var built = struct {
	sync.Mutex
	m map[string]any
}{m: make(map[string]any)}

// memo returns what build made under key before, else builds it. A *Vocab
// comes back as a copy, so that a test may set its AddBOS.
func memo[T any](t testing.TB, key string, build func() T) T {
	t.Helper()
	// The lock is not held while building: a vocabulary's build asks for
	// its files through memo too.
	built.Lock()
	v, ok := built.m[key].(T)
	built.Unlock()
	if !ok {
		v = build()
		built.Lock()
		built.m[key] = v
		built.Unlock()
	}
	if p, ok := any(v).(*Vocab); ok {
		c := *p
		return any(&c).(T)
	}
	return v
}

// readGzip returns the content of the gzipped file testdata/vocab/name.
func readGzip(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "vocab", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return data
}

// TestLlama3VocabularyMatchesLlamaCpp: Llama 3's real vocabulary tokenizes
// llama.cpp's llama-bpe test texts to exactly llama.cpp's ids.
func TestLlama3VocabularyMatchesLlamaCpp(t *testing.T) {
	v := llama3Vocab(t)
	if v.Len() != 128256 {
		t.Fatalf("%d tokens, want 128256", v.Len())
	}
	checkVocabCases(t, v, loadVocabCases(t, "llama-bpe"))
}

// TestQwen2VocabularyMatchesLlamaCpp: Qwen2's real vocabulary tokenizes
// llama.cpp's qwen2 test texts to exactly llama.cpp's ids.
func TestQwen2VocabularyMatchesLlamaCpp(t *testing.T) {
	v := qwen2Vocab(t)
	if v.Len() != 151646 {
		t.Fatalf("%d tokens, want 151646", v.Len())
	}
	checkVocabCases(t, v, loadVocabCases(t, "qwen2"))
}

// llama.cpp's expressions for Llama 3's and Qwen2's pre-tokenizers
// (llama-vocab.cpp, as vendored by Ollama v0.17.4).
var llamaCppBPESteps = map[string][]string{
	"llama-bpe": {`(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`},
	"qwen2":     {`(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`},
}

// referenceBPE is byte-level BPE written as plainly as it can be, to check
// the engine's heap-driven merging against: the words are what llama.cpp's
// expression gives (referenceSplit), and in each word the pair of lowest
// merge rank, the leftmost of equals, is merged until none is left.
type referenceBPE struct {
	ids   map[string]int
	ranks map[[2]string]int
}

func newReferenceBPE(f hfFiles) *referenceBPE {
	r := &referenceBPE{ids: make(map[string]int, len(f.tokens)), ranks: make(map[[2]string]int, len(f.merges))}
	for i, t := range f.tokens {
		r.ids[t] = i
	}
	for rank, m := range f.merges {
		if sp := strings.IndexByte(m[min(1, len(m)):], ' '); sp >= 0 {
			sp += min(1, len(m))
			pair := [2]string{m[:sp], m[sp+1:]}
			if _, dup := r.ranks[pair]; !dup {
				r.ranks[pair] = rank
			}
		}
	}
	return r
}

func (r *referenceBPE) encode(t *testing.T, exprs []string, text string) []int {
	var ids []int
	for _, word := range referenceSplit(t, exprs, decodeLikeLlamaCpp(text, nil)) {
		var syms []string
		for _, c := range []byte(word) {
			syms = append(syms, string(byteRune[c]))
		}
		for len(syms) > 1 {
			best, at := -1, -1
			for i := range len(syms) - 1 {
				if rank, ok := r.ranks[[2]string{syms[i], syms[i+1]}]; ok && (best < 0 || rank < best) {
					best, at = rank, i
				}
			}
			if at < 0 {
				break
			}
			syms = slices.Replace(syms, at, at+2, syms[at]+syms[at+1])
		}
		for _, s := range syms {
			id, ok := r.ids[s]
			if !ok {
				t.Fatalf("word %q: %q is no token", word, s)
			}
			ids = append(ids, id)
		}
	}
	return ids
}

// book is War and Peace, which the Ollama module keeps for its tokenizer
// tests: 3.2 MB of English prose.
func book(t testing.TB) string {
	t.Helper()
	mod := ollamaModuleDir(t)
	if mod == "" {
		t.Skip("the Go toolchain does not list the Ollama module: no book to tokenize")
	}
	b, err := os.ReadFile(filepath.Join(mod, "tokenizer", "testdata", "war-and-peace.txt"))
	if err != nil {
		t.Skipf("no book in the Ollama module: %v", err)
	}
	return string(b)
}

// TestRealVocabulariesOnABook: on Llama 3's and Qwen2's real vocabularies,
// a book and the corpus tokenize exactly as the plain reference BPE over
// llama.cpp's expressions does. llama.cpp's 46 test texts are short; a
// book reaches merges they never do.
func TestRealVocabulariesOnABook(t *testing.T) {
	// The first 512 KB (about 120,000 tokens) keep the test under a
	// minute with the race detector; the benchmark reads the whole book.
	text := book(t)[:512<<10]
	if testing.Short() {
		text = text[:128<<10]
	}
	texts := []string{text}
	for _, s := range bpeCorpus {
		if !strings.Contains(s, "<|") { // the reference does not cut out special tokens
			texts = append(texts, s)
		}
	}
	for _, tc := range []struct {
		pre   string
		files func(testing.TB) hfFiles
		vocab func(testing.TB) *Vocab
	}{
		{"llama-bpe", llama3Files, llama3Vocab},
		{"qwen2", qwen2Files, qwen2Vocab},
	} {
		t.Run(tc.pre, func(t *testing.T) {
			v := tc.vocab(t)
			v.AddBOS = false
			ref := newReferenceBPE(tc.files(t))
			for _, s := range texts {
				want := ref.encode(t, llamaCppBPESteps[tc.pre], s)
				got := v.Encode(s)
				if i := firstDifference(got, want); i >= 0 {
					t.Errorf("%q...: token %d of %d differs: got %v, reference %v", s[:min(len(s), 40)], i, len(want),
						got[i:min(len(got), i+8)], want[i:min(len(want), i+8)])
				}
			}
		})
	}
}

// firstDifference is the first index where a and b differ, -1 if none.
func firstDifference(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// BenchmarkRealVocabEncode measures tokenizer throughput (MB/s, one
// goroutine; run it with -cpu 1 for cpu-MB/s, the same per second of CPU
// time) on Llama 3's and Qwen2's real vocabularies: a book of English
// prose, and the corpus of code, CJK, emoji, numbers and whitespace runs.
func BenchmarkRealVocabEncode(b *testing.B) {
	text := book(b)
	corpus := strings.Join(bpeCorpus, "\n")
	for _, tc := range []struct {
		pre   string
		vocab func(testing.TB) *Vocab
	}{
		{"llama-bpe", llama3Vocab},
		{"qwen2", qwen2Vocab},
	} {
		v := tc.vocab(b)
		for _, in := range []struct{ name, text string }{{"book", text}, {"corpus", corpus}} {
			b.Run(tc.pre+"/"+in.name, func(b *testing.B) {
				b.SetBytes(int64(len(in.text)))
				cpu0, ok0 := processCPU()
				for b.Loop() {
					v.Encode(in.text)
				}
				// On a loaded machine the wall clock measures the other
				// processes too; with -cpu 1 the process's CPU time is the
				// tokenizer's (and its garbage collection's).
				if cpu1, ok1 := processCPU(); ok0 && ok1 && cpu1 > cpu0 {
					b.ReportMetric(float64(len(in.text))*float64(b.N)/(cpu1-cpu0).Seconds()/1e6, "cpu-MB/s")
				}
			})
		}
	}
}

// TestQwen2SpecialTokensInText: with Qwen2's real vocabulary, chat markers
// written in the text are cut out as their special tokens, and the text
// between them is tokenized alone (the ids Hugging Face's Qwen2Tokenizer
// gives, as llama.cpp does with parse_special).
func TestQwen2SpecialTokensInText(t *testing.T) {
	v := qwen2Vocab(t)
	if got, want := v.Encode("<|im_start|>hello<|im_end|>"), []int{151644, 14990, 151645}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if !v.IsEOG(151645) || !v.IsEOG(151643) {
		t.Errorf("<|im_end|> and <|endoftext|> do not end generation")
	}
}
