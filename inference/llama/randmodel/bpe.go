package randmodel

import (
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// BPE describes a byte-level BPE vocabulary (tokenizer.ggml.model "gpt2", as
// Llama 3, Qwen and SmolLM have): the 256 byte tokens spelled in GPT-2's
// byte-to-unicode alphabet, in byte order, then one token per distinct merge
// result, in merge order, then the Special tokens (control tokens).
type BPE struct {
	// Pre is tokenizer.ggml.pre, which picks llama.cpp's pre-tokenizer:
	// "default", "gpt-2", "llama-bpe", "qwen2", "smollm", ...
	Pre string
	// Merges are the merge rules in rank order, as pairs of plain text (not
	// the byte-to-unicode spelling). Each side must be a single byte or the
	// result of an earlier merge.
	Merges [][2]string
	// Special tokens follow the merges, typed as control tokens.
	Special []string
	// BOS and EOS name tokens of Special ("" for none); EOT also marks an
	// end-of-turn token (tokenizer.ggml.eot_token_id).
	BOS, EOS, EOT string
	// AddBOS is tokenizer.ggml.add_bos_token.
	AddBOS bool
	// ChatTemplate is tokenizer.chat_template ("" for none).
	ChatTemplate string
}

// ByteRune is GPT-2's byte-to-unicode mapping: printable Latin-1 bytes stand
// for themselves, the others for the code points from U+0100 on, in order.
var ByteRune = func() (b [256]rune) {
	n := rune(0)
	for i := range 256 {
		if i >= '!' && i <= '~' || i >= 0xA1 && i <= 0xAC || i >= 0xAE {
			b[i] = rune(i)
		} else {
			b[i] = 256 + n
			n++
		}
	}
	return b
}()

// Spell returns s in the byte-to-unicode alphabet, as BPE tokens are stored.
func Spell(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		sb.WriteRune(ByteRune[s[i]])
	}
	return sb.String()
}

// tokens returns the vocabulary's tokens (spelled), their types, and the
// merges as stored in tokenizer.ggml.merges.
func (b *BPE) tokens() (toks []string, types []int32, merges []string, err error) {
	seen := make(map[string]bool)
	for i := range 256 {
		toks = append(toks, Spell(string([]byte{byte(i)})))
		seen[string([]byte{byte(i)})] = true
	}
	for _, m := range b.Merges {
		if !seen[m[0]] || !seen[m[1]] {
			return nil, nil, nil, fmt.Errorf("randmodel: merge %q + %q: a side is neither a byte nor an earlier merge", m[0], m[1])
		}
		merges = append(merges, Spell(m[0])+" "+Spell(m[1]))
		if w := m[0] + m[1]; !seen[w] {
			seen[w] = true
			toks = append(toks, Spell(w))
		}
	}
	types = make([]int32, len(toks))
	for i := range types {
		types[i] = tokenNormal
	}
	for _, s := range b.Special {
		if s == "" || seen[s] {
			return nil, nil, nil, fmt.Errorf("randmodel: special token %q is empty or already in the vocabulary", s)
		}
		seen[s] = true
		toks = append(toks, s)
		types = append(types, tokenControl)
	}
	return toks, types, merges, nil
}

// specialID returns the id of the special token s in a vocabulary of n tokens.
func (b *BPE) specialID(n int, s string) (uint32, bool) {
	for i, t := range b.Special {
		if t == s && s != "" {
			return uint32(n - len(b.Special) + i), true
		}
	}
	return 0, false
}

// TrainMerges learns n merges from text the way BPE is trained: words are
// cut at the boundaries of letters, digits and other characters, a space
// staying with the word after it; the most frequent adjacent pair of pieces
// (ties: the first in byte order) becomes the next merge, until n merges or
// every word is one piece.
func TrainMerges(text string, n int) [][2]string {
	counts := make(map[string]int)
	for _, w := range trainingWords(text) {
		counts[w]++
	}
	type word struct {
		parts []string
		count int
	}
	var words []word
	keys := make([]string, 0, len(counts))
	for w := range counts {
		keys = append(keys, w)
	}
	sort.Strings(keys)
	for _, w := range keys {
		parts := make([]string, len(w))
		for i := 0; i < len(w); i++ {
			parts[i] = w[i : i+1]
		}
		words = append(words, word{parts, counts[w]})
	}
	var merges [][2]string
	for len(merges) < n {
		pairs := make(map[[2]string]int)
		for _, w := range words {
			for i := 1; i < len(w.parts); i++ {
				pairs[[2]string{w.parts[i-1], w.parts[i]}] += w.count
			}
		}
		var best [2]string
		bestN := 0
		for p, c := range pairs {
			if c > bestN || c == bestN && p[0]+"\x00"+p[1] < best[0]+"\x00"+best[1] {
				best, bestN = p, c
			}
		}
		if bestN == 0 {
			break
		}
		merges = append(merges, best)
		for i := range words {
			parts := words[i].parts
			out := parts[:0]
			for j := 0; j < len(parts); j++ {
				if j+1 < len(parts) && parts[j] == best[0] && parts[j+1] == best[1] {
					out = append(out, best[0]+best[1])
					j++
					continue
				}
				out = append(out, parts[j])
			}
			words[i].parts = out
		}
	}
	return merges
}

// trainingWords cuts text into words for TrainMerges.
func trainingWords(text string) []string {
	class := func(r rune) int {
		switch {
		case unicode.IsLetter(r):
			return 1
		case unicode.IsNumber(r):
			return 2
		case unicode.IsSpace(r):
			return 3
		}
		return 4
	}
	var words []string
	start := 0
	for i, r := range text {
		if i == start {
			continue
		}
		prev, _ := utf8.DecodeLastRuneInString(text[:i])
		if class(r) != class(prev) && !(prev == ' ' && i-1 == start) {
			words = append(words, text[start:i])
			start = i
		}
	}
	if start < len(text) {
		words = append(words, text[start:])
	}
	return words
}

// MergeCorpus is the text the built-in vocabularies learn their merges from:
// English, code, numbers, Chinese, Japanese and emoji, so that tests see
// multi-byte merges too.
const MergeCorpus = `The quick brown fox jumps over the lazy dog. The dog was not amused, and the fox ran into the forest.
There is a theory that the thing they thought of was there, then they went there together with the others.
func main() { for i := 0; i < 10; i++ { fmt.Println("hello, world", i) } } // the main function returns
def forward(self, x): return self.linear(x) + self.bias  # the forward pass of the model
Numbers: 1234567890, 3.14159, 2024-11-30, 100000 and 42. Call 555-0100 at 10:30.
我们的模型在中文文本上也能工作。中文文本的分词需要字节级的合并。我们喜欢中文。
日本語のテキストもあります。これは日本語の文です。
Emoji: 😀😀 🎉🎉 👍👍 ❤️ 🚀 the end.`

// chatml is the Jinja chat template of the ChatML family (Qwen's without
// tools), which Ollama maps to its own chatml template.
const chatml = "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

// llama3Template is Llama 3 Instruct's Jinja chat template.
const llama3Template = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"

// QwenBPE returns a Qwen-style vocabulary: pre-tokenizer qwen2, merges
// learned from MergeCorpus, the special tokens <|endoftext|>, <|im_start|>
// and <|im_end|> (EOS, as Qwen's instruct models set it), no BOS, and the
// ChatML template.
func QwenBPE() *BPE {
	return &BPE{
		Pre:          "qwen2",
		Merges:       TrainMerges(MergeCorpus, 300),
		Special:      []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"},
		BOS:          "<|endoftext|>",
		EOS:          "<|im_end|>",
		ChatTemplate: chatml,
	}
}

// Llama3BPE returns a Llama 3-style vocabulary: pre-tokenizer llama-bpe,
// merges learned from MergeCorpus, BOS <|begin_of_text|> added to every
// prompt, EOS <|end_of_text|>, EOT <|eot_id|>, and Llama 3's template.
func Llama3BPE() *BPE {
	return &BPE{
		Pre:          "llama-bpe",
		Merges:       TrainMerges(MergeCorpus, 300),
		Special:      []string{"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
		BOS:          "<|begin_of_text|>",
		EOS:          "<|end_of_text|>",
		EOT:          "<|eot_id|>",
		AddBOS:       true,
		ChatTemplate: llama3Template,
	}
}

// tokenizer returns the tokenizer metadata of c and, for a BPE vocabulary,
// the tokens a Printable model must not emit: special tokens and those
// whose bytes are not all printable ASCII.
func (c Config) tokenizer() ([]keyValue, []bool, error) {
	if c.BPE == nil {
		tokens := append(baseTokens(), c.Words...)
		types := make([]int32, len(tokens))
		scores := make([]float32, len(tokens))
		types[UnknownToken], types[BOSToken], types[EOSToken] = tokenUnknown, tokenControl, tokenControl
		for i := 3; i < 3+256; i++ {
			types[i] = tokenByte
		}
		for i := range c.Words {
			types[3+256+i] = tokenNormal
			scores[3+256+i] = -float32(i + 1) // earlier words merge first
		}
		return []keyValue{
			{"tokenizer.ggml.model", "llama"},
			{"tokenizer.ggml.tokens", tokens},
			{"tokenizer.ggml.scores", scores},
			{"tokenizer.ggml.token_type", types},
			{"tokenizer.ggml.bos_token_id", uint32(BOSToken)},
			{"tokenizer.ggml.eos_token_id", uint32(EOSToken)},
			{"tokenizer.ggml.unknown_token_id", uint32(UnknownToken)},
		}, nil, nil
	}
	b := c.BPE
	tokens, types, merges, err := b.tokens()
	if err != nil {
		return nil, nil, err
	}
	kvs := []keyValue{
		{"tokenizer.ggml.model", "gpt2"},
		{"tokenizer.ggml.pre", b.Pre},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.merges", merges},
	}
	for _, sp := range []struct{ key, text string }{
		{"tokenizer.ggml.bos_token_id", b.BOS},
		{"tokenizer.ggml.eos_token_id", b.EOS},
		{"tokenizer.ggml.eot_token_id", b.EOT},
	} {
		if sp.text == "" {
			continue
		}
		id, ok := b.specialID(len(tokens), sp.text)
		if !ok {
			return nil, nil, fmt.Errorf("randmodel: %s %q is not a special token", sp.key, sp.text)
		}
		kvs = append(kvs, keyValue{sp.key, id})
	}
	kvs = append(kvs, keyValue{"tokenizer.ggml.add_bos_token", b.AddBOS})
	if b.ChatTemplate != "" {
		kvs = append(kvs, keyValue{"tokenizer.chat_template", b.ChatTemplate})
	}
	rev := make(map[rune]byte, 256)
	for i, r := range ByteRune {
		rev[r] = byte(i)
	}
	suppress := make([]bool, len(tokens))
	for i, t := range tokens {
		if types[i] != tokenNormal {
			suppress[i] = true
			continue
		}
		for _, r := range t {
			if c := rev[r]; c < 0x20 || c > 0x7e {
				suppress[i] = true
			}
		}
	}
	return kvs, suppress, nil
}

// qwen3Template is the chat template of Qwen3's instruct models without a
// thinking trace (Qwen3-*-Instruct-2507): ChatML, with the functions of a
// request's tools listed in the system turn, tool calls written as
// <tool_call>{"name": ..., "arguments": ...}</tool_call> and tool results
// sent back in a user turn inside <tool_response> tags. Ollama renders the
// same with its qwen3-vl-instruct renderer.
const qwen3Template = `{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}`

// Qwen3ToolsBPE returns QwenBPE with Qwen3's instruct template, which takes
// tools. Its <tool_call> tags are plain text, made of byte tokens.
func Qwen3ToolsBPE() *BPE {
	b := QwenBPE()
	b.ChatTemplate = qwen3Template
	return b
}
