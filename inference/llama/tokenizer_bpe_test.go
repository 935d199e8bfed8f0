package llama

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
	"github.com/ollama/ollama/api"
)

// bpeCorpus is what tokenizers are compared on: English, code, CJK, emoji,
// numbers, long runs of whitespace, special tokens written in the text, and
// invalid UTF-8.
var bpeCorpus = []string{
	"The quick brown fox jumps over the lazy dog's back. Isn't it? THEY'LL say We'RE fine, I'd think.",
	"func main() {\n\tfor i := 0; i < 10; i++ {\n\t\tfmt.Println(\"hello, world\", i)\n\t}\n}\n",
	"def forward(self, x):\n    return self.linear(x) + self.bias  # the forward pass\n\n\n",
	"我们的模型在中文文本上也能工作。日本語のテキストもあります、한국어 텍스트도。",
	"Emoji: 😀😀 🎉🎉 👍🏽 ❤️ 🚀🚀🚀 family 👨‍👩‍👧 the end.",
	"Numbers: 1234567890, 3.14159, -42, 1,000,000, 2024-11-30 ١٢٣٤ ½ Ⅻ 100000 and 42.",
	"a" + strings.Repeat(" ", 40) + "b\n\n\n   \t\t  \r\n  end   \n \n",
	"spaces\u00a0and\u3000wide\u2003ones  \u2003 ",
	"café naïve cafe\u0301 Ångström ﬁne",
	"<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
	"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>",
	"bad \xff\xfe bytes \xe4\xb8 cut \x80 stray \xf0\x9f\x98 end",
	"$100 + 5% = <tag attr='x'> `code` ~~strike~~ a|b ^caret @user #hash",
}

// bpePres are the pre-tokenizers compared with llama.cpp.
var bpePres = []string{"default", "gpt-2", "llama-bpe", "qwen2", "smollm", "tekken", "deepseek-llm", "deepseek-coder", "deepseek-v3"}

func bpeConfig(pre string) randmodel.Config {
	c := randmodel.TinyDense()
	c.Name = "mwpeer-tiny-bpe-" + pre
	c.BPE = randmodel.QwenBPE()
	c.BPE.Pre = pre
	c.BPE.Special = append(c.BPE.Special, "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
	c.BPE.AddBOS = pre == "llama-bpe"
	if c.BPE.AddBOS {
		c.BPE.BOS = "<|begin_of_text|>"
	}
	return c
}

func TestPreTokenizers(t *testing.T) {
	for _, tc := range []struct {
		pre, text string
		want      []string
	}{
		{"gpt-2", "Hello world's 12345  x", []string{"Hello", " world", "'s", " 12345", " ", " x"}},
		{"gpt-2", "a   \n", []string{"a", "   \n"}},
		{"llama-bpe", "Hello world's 12345  x", []string{"Hello", " world", "'s", " ", "123", "45", " ", " x"}},
		{"llama-bpe", "x\n\n  y\n", []string{"x", "\n\n", " ", " y", "\n"}},
		{"llama-bpe", "IT'S (ok)!!\n\nz", []string{"IT", "'S", " (", "ok", ")!!\n\n", "z"}},
		{"qwen2", "abc 123 我们", []string{"abc", " ", "1", "2", "3", " 我们"}},
		{"smollm", "abc 123x", []string{"abc", " ", "1", "2", "3", "x"}},
		{"default", "a, b=1234!", []string{"a", ",", " b", "=", "123", "4", "!"}},
	} {
		p, err := lookupPreTokenizer(tc.pre)
		if err != nil {
			t.Fatal(err)
		}
		cps := decodeLikeLlamaCpp(tc.text, nil)
		var got []string
		start := 0
		for _, end := range p.split(cps, nil) {
			got = append(got, string(cps[start:end]))
			start = end
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s %q: %q, want %q", tc.pre, tc.text, got, tc.want)
		}
	}
}

func TestUnknownPreTokenizerIsAnError(t *testing.T) {
	c := bpeConfig("qwen2")
	c.BPE.Pre = "no-such-pre"
	_, err := Load(fixture(t, c))
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "no-such-pre") {
		t.Fatalf("Load: %v, want an unsupported pre-tokenizer error that names it", err)
	}
}

// TestInvalidUTF8ReadsAsReplacement: each byte that does not start a whole
// UTF-8 sequence reads as U+FFFD, as llama.cpp reads it; a whole sequence
// reads as its code point even when Go calls it invalid (overlong forms,
// surrogates).
func TestInvalidUTF8ReadsAsReplacement(t *testing.T) {
	m := load(t, bpeConfig("qwen2"))
	for _, tc := range []struct{ raw, same string }{
		{"a\xffb", "a\ufffdb"},
		{"x\xe4\xb8", "x\ufffd\ufffd"},
		{"\x80\x80z", "\ufffd\ufffdz"},
		{"\xc1\x81", "A"}, // overlong "A"
	} {
		if got, want := m.Vocab.Encode(tc.raw), m.Vocab.Encode(tc.same); !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, want %v as for %q", tc.raw, got, want, tc.same)
		}
	}
	if got := decodeLikeLlamaCpp("\xed\xa0\x80", nil); !slices.Equal(got, []rune{0xD800}) {
		t.Errorf("a surrogate reads as %U", got)
	}
}

// TestBPERoundTrip: the pieces of a text's tokens spell the text (with
// U+FFFD for invalid bytes), and merges make it shorter than its bytes.
func TestBPERoundTrip(t *testing.T) {
	for _, pre := range bpePres {
		m := load(t, bpeConfig(pre))
		for _, text := range bpeCorpus {
			ids := m.Vocab.Encode(text)
			var sb strings.Builder
			if m.Vocab.AddBOS {
				ids = ids[1:]
			}
			for _, id := range ids {
				sb.WriteString(m.Vocab.Piece(id))
			}
			want := string(decodeLikeLlamaCpp(text, nil))
			if sb.String() != want {
				t.Errorf("%s: %q decodes to %q", pre, text, sb.String())
			}
			if !utf8.ValidString(text) {
				continue
			}
			if len(ids) > len(text) {
				t.Errorf("%s: %q: %d tokens for %d bytes", pre, text, len(ids), len(text))
			}
		}
	}
}

// TestBPEStopsAtEndOfTurn: <|im_end|> ends a generation like EOS.
func TestBPEEndOfTurnTokens(t *testing.T) {
	m := load(t, bpeConfig("qwen2"))
	for _, tok := range []string{"<|im_end|>", "<|endoftext|>", "<|eot_id|>"} {
		id, ok := m.Vocab.TokenID(tok)
		if !ok || !m.Vocab.IsEOG(id) {
			t.Errorf("%s (%d, %v) does not end a generation", tok, id, ok)
		}
	}
	if id, _ := m.Vocab.TokenID("<|im_start|>"); m.Vocab.IsEOG(id) {
		t.Error("<|im_start|> ends a generation")
	}
}

// ollamaRun returns Ollama's greedy tokens, their log-probabilities and the
// number of prompt tokens it counted.
func ollamaRun(t *testing.T, client *api.Client, model, prompt string, n int) ([]string, []float64, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream := false
	req := &api.GenerateRequest{
		Model: model, Prompt: prompt, Raw: true, Stream: &stream, Logprobs: true,
		Options: map[string]any{"temperature": 0, "repeat_penalty": 1, "num_predict": n, "seed": 1},
	}
	var toks []string
	var lps []float64
	var count int
	err := client.Generate(ctx, req, func(r api.GenerateResponse) error {
		for _, lp := range r.Logprobs {
			toks = append(toks, lp.Token)
			lps = append(lps, lp.Logprob)
		}
		if r.Done {
			count = r.PromptEvalCount
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ollama generate %s: %v", model, err)
	}
	return toks, lps, count
}

// TestBPEMatchesOllama: for every pre-tokenizer and every text of the
// corpus, the engine counts as many prompt tokens as llama.cpp (in Ollama)
// and then generates the same greedy tokens with the same
// log-probabilities: on a random model, a prompt tokenized differently
// gives other logits. Ollama receives invalid UTF-8 as U+FFFD (JSON cannot
// carry it), which is how both read it.
//
// The models are of the llama architecture, which Ollama runs through
// llama.cpp. For qwen3 and qwen3moe Ollama uses its own Go tokenizer, which
// is not llama.cpp's: it merges a run of spaces in another order and does not
// take U+2003 and the like for whitespace. The engine follows llama.cpp.
func TestBPEMatchesOllama(t *testing.T) {
	srv := ollamatest.Start(t)
	dir := t.TempDir()
	const n = 8
	for _, pre := range bpePres {
		t.Run(pre, func(t *testing.T) {
			c := bpeConfig(pre)
			path := filepath.Join(dir, pre+".gguf")
			if err := randmodel.WriteFile(path, c); err != nil {
				t.Fatal(err)
			}
			model := "bpe-" + pre
			srv.CreateModel(t, model, path)
			m, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			var maxDiff float64
			texts := append(slices.Clone(bpeCorpus), preTokenizerTexts...)
			for _, text := range texts {
				wantToks, wantLps, wantCount := ollamaRun(t, srv.Client(), model, text, n)
				ids := m.Vocab.Encode(text)
				if len(ids) != wantCount {
					t.Errorf("%q: %d prompt tokens, ollama %d", text, len(ids), wantCount)
					continue
				}
				var gotToks []string
				var gotLps []float64
				_, _, err := m.GenerateTokens(context.Background(), ids, Options{MaxTokens: n}, nil, func(tok Token) error {
					gotToks = append(gotToks, tok.Text)
					gotLps = append(gotLps, tok.Logprob)
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(gotToks, wantToks) {
					t.Errorf("%q: generated %q, ollama %q", text, gotToks, wantToks)
					continue
				}
				for i := range wantLps {
					maxDiff = max(maxDiff, math.Abs(gotLps[i]-wantLps[i]))
				}
			}
			t.Logf("%s: %d texts; largest log-probability difference %.2e", pre, len(texts), maxDiff)
			// With the pure-Go kernels the largest difference is about 1e-4;
			// the SIMD kernels sum in another order (engineTol).
			if tol := engineTol(1e-3); maxDiff > tol {
				t.Errorf("largest log-probability difference %.2e exceeds %.0e", maxDiff, tol)
			}
		})
	}
}

// BenchmarkBPEEncode measures tokenizer throughput (MB/s) on the corpus.
func BenchmarkBPEEncode(b *testing.B) {
	for _, pre := range []string{"llama-bpe", "qwen2", "gpt-2", "tekken", "deepseek-llm", "deepseek-coder", "deepseek-v3"} {
		b.Run(pre, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "m.gguf")
			if err := randmodel.WriteFile(path, bpeConfig(pre)); err != nil {
				b.Fatal(err)
			}
			m, err := Load(path)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			text := strings.Join(bpeCorpus, "\n") + randmodel.MergeCorpus
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				m.Vocab.Encode(text)
			}
		})
	}
}

// FuzzBPEEncode: any text tokenizes without a panic, and its tokens spell
// the text as llama.cpp reads it (invalid bytes as U+FFFD), for every
// pre-tokenizer.
func FuzzBPEEncode(f *testing.F) {
	for _, s := range bpeCorpus {
		f.Add(s)
	}
	var vocabs []*Vocab
	for _, pre := range bpePres {
		path := filepath.Join(f.TempDir(), pre+".gguf")
		if err := randmodel.WriteFile(path, bpeConfig(pre)); err != nil {
			f.Fatal(err)
		}
		m, err := Load(path)
		if err != nil {
			f.Fatal(err)
		}
		m.Close() // only its vocabulary is kept
		vocabs = append(vocabs, m.Vocab)
	}
	f.Fuzz(func(t *testing.T, text string) {
		want := string(decodeLikeLlamaCpp(text, nil))
		for i, v := range vocabs {
			ids := v.Encode(text)
			if v.AddBOS {
				ids = ids[1:]
			}
			var sb strings.Builder
			for _, id := range ids {
				sb.WriteString(v.Piece(id))
			}
			if !strings.ContainsRune(want, utf8.RuneError) && utf8.ValidString(want) && sb.String() != want {
				t.Fatalf("%s: %q spells %q", bpePres[i], text, sb.String())
			}
		}
	})
}

// TestBPEVocabHasNoByteTokens: a byte-level vocabulary has no <0xNN> byte
// tokens, so the table of them is empty; it once held token 0 for every
// byte, and the JSON grammar, which closes a cut answer with byte tokens
// from it, wrote NUL bytes instead of quotes and brackets.
func TestBPEVocabHasNoByteTokens(t *testing.T) {
	m := load(t, qwenConfig())
	for b, id := range m.Vocab.bytes {
		if id != -1 {
			t.Fatalf("byte %#x has the byte token %d", b, id)
		}
	}
	if id := vocabBytes(m.Vocab).byByte['"']; m.Vocab.Piece(id) != `"` {
		t.Errorf("the JSON grammar writes a quote as token %d (%q)", id, m.Vocab.Piece(id))
	}
}
