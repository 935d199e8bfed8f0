package llama

import (
	"fmt"
	"unicode"
)

// A pre-tokenizer cuts text into words before byte-level BPE merges the bytes
// of each word; no merge crosses a word boundary. llama.cpp picks a list of
// regular expressions by tokenizer.ggml.pre and applies them one after the
// other, each cutting the pieces the previous one left. Its two most used
// expressions (GPT-2's and Llama 3's) are hand-written there, the others run
// through std::regex on a text where every non-ASCII code point is replaced
// by a byte standing for its Unicode category. The splitters here are
// written by hand after both: Go's regexp lacks the lookahead the patterns
// use, and a hand-written splitter is an order of magnitude faster than a
// backtracking engine. Each is commented with the expression it implements.
//
// They work on code points: invalid UTF-8 has already become U+FFFD, one per
// bad byte, as llama.cpp decodes it.

// splitter cuts the code points cps[start:end) into pieces, appending the
// end offset of each piece (relative to cps) to ends.
type splitter func(cps []rune, start, end int, ends []int) []int

// preTokenizer is the chain of splitters of one tokenizer.ggml.pre.
type preTokenizer struct {
	name   string
	steps  []splitter
	ignore bool // ignore_merges: a word that is a token is taken whole
	addBOS bool // the default of tokenizer.ggml.add_bos_token
}

// preTokenizers lists the supported values of tokenizer.ggml.pre, with the
// steps llama.cpp (as vendored by Ollama v0.17.4, llama-vocab.cpp) runs for them.
var preTokenizers = map[string]preTokenizer{
	// "[\p{P}\$\+<=>\^~\|]+", then GPT-2's, then "\p{N}+", then "[0-9][0-9][0-9]".
	"default": {steps: []splitter{splitDefaultPunct, splitGPT2, splitNumberRuns, splitDigitTriples}},
	// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
	"gpt-2": {steps: []splitter{splitGPT2}},
	// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
	"llama-bpe": {steps: []splitter{splitLlama3(3)}, ignore: true, addBOS: true},
	// Llama 3's with single digits: ...|\p{N}|...
	"qwen2": {steps: []splitter{splitLlama3(1)}},
	// "\p{N}", then GPT-2's.
	"smollm": {steps: []splitter{splitEachNumber, splitGPT2}},
}

func init() {
	// Other names llama.cpp gives the same pre-tokenizers.
	for alias, name := range map[string]string{
		"llama3": "llama-bpe", "llama-v3": "llama-bpe",
		"deepseek-r1-qwen": "qwen2", "stablelm2": "qwen2",
		"phi-2": "gpt-2", "olmo": "gpt-2",
		"starcoder": "smollm", "refact": "smollm", "codeshell": "smollm",
	} {
		p := preTokenizers[name]
		preTokenizers[alias] = p
	}
	for name, p := range preTokenizers {
		p.name = name
		preTokenizers[name] = p
	}
}

// lookupPreTokenizer returns the pre-tokenizer named by tokenizer.ggml.pre.
// llama.cpp takes a missing value for "default"; an unknown one is an error
// here, not a silent fallback that would tokenize differently.
func lookupPreTokenizer(name string) (preTokenizer, error) {
	if name == "" {
		name = "default"
	}
	p, ok := preTokenizers[name]
	if !ok {
		return p, fmt.Errorf("pre-tokenizer %q: %w (known: default, gpt-2, llama-bpe, qwen2, smollm, tekken, deepseek-llm, deepseek-coder, deepseek-v3 and aliases)", name, ErrUnsupported)
	}
	return p, nil
}

// split returns the end offsets of the words of cps.
func (p preTokenizer) split(cps []rune, ends []int) []int {
	ends = append(ends[:0], len(cps))
	var next []int
	for _, step := range p.steps {
		next = next[:0]
		start := 0
		for _, end := range ends {
			next = step(cps, start, end, next)
			start = end
		}
		ends, next = next, ends
	}
	return ends
}

// Code point classes as llama.cpp's unicode_cpt_flags define them.

func isSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200A
}

func isLetter(r rune) bool {
	if r < 0x80 {
		return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
	}
	return unicode.IsLetter(r)
}

func isNumber(r rune) bool {
	if r < 0x80 {
		return '0' <= r && r <= '9'
	}
	return unicode.IsNumber(r)
}

// cpAt returns cps[i] when i < end, else -1 (llama.cpp's OUT_OF_RANGE,
// whose flags are all unset).
func cpAt(cps []rune, i, end int) rune {
	if i < end {
		return cps[i]
	}
	return -1
}

// flag tests on a possibly out-of-range code point.
func letterAt(cps []rune, i, end int) bool { r := cpAt(cps, i, end); return r >= 0 && isLetter(r) }
func numberAt(cps []rune, i, end int) bool { r := cpAt(cps, i, end); return r >= 0 && isNumber(r) }
func spaceAt(cps []rune, i, end int) bool  { r := cpAt(cps, i, end); return r >= 0 && isSpace(r) }

// otherAt: a code point that is neither space, letter nor number
// ([^\s\p{L}\p{N}]), and is in range.
func otherAt(cps []rune, i, end int) bool {
	r := cpAt(cps, i, end)
	return r >= 0 && !isSpace(r) && !isLetter(r) && !isNumber(r)
}

// contraction returns the length of 's, 't, 're, 've, 'm, 'll or 'd at i
// (any case when fold), or 0.
func contraction(cps []rune, i, end int, fold bool) int {
	if cps[i] != '\'' || i+1 >= end {
		return 0
	}
	lower := func(r rune) rune {
		if fold {
			return unicode.ToLower(r)
		}
		return r
	}
	c := lower(cps[i+1])
	if c == 's' || c == 't' || c == 'm' || c == 'd' {
		return 2
	}
	if i+2 < end {
		c2 := lower(cps[i+2])
		if c == 'r' && c2 == 'e' || c == 'v' && c2 == 'e' || c == 'l' && c2 == 'l' {
			return 3
		}
	}
	return 0
}

// splitGPT2 implements 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
// as llama.cpp's unicode_regex_split_custom_gpt2.
func splitGPT2(cps []rune, start, end int, ends []int) []int {
	for pos := start; pos < end; {
		if n := contraction(cps, pos, end, false); n > 0 {
			pos += n
			ends = append(ends, pos)
			continue
		}
		// The class of the code point after an optional leading space.
		q := pos
		if cps[pos] == ' ' {
			q = pos + 1
		}
		switch {
		case letterAt(cps, q, end):
			for q++; letterAt(cps, q, end); q++ {
			}
			pos = q
			ends = append(ends, pos)
			continue
		case numberAt(cps, q, end):
			for q++; numberAt(cps, q, end); q++ {
			}
			pos = q
			ends = append(ends, pos)
			continue
		case otherAt(cps, q, end):
			for q++; otherAt(cps, q, end); q++ {
			}
			pos = q
			ends = append(ends, pos)
			continue
		}
		n := 0
		for spaceAt(cps, pos+n, end) {
			n++
		}
		switch {
		case n > 1 && pos+n < end: // \s+(?!\S): leave the last space to the next word
			pos += n - 1
		case n > 0:
			pos += n
		default:
			pos++
		}
		ends = append(ends, pos)
	}
	return ends
}

// splitLlama3 implements
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,digits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// as llama.cpp's unicode_regex_split_custom_llama3 (digits 3). With digits 1
// it is Qwen2's expression, which llama.cpp runs through std::regex with the
// same result.
func splitLlama3(digits int) splitter {
	return func(cps []rune, start, end int, ends []int) []int {
		for pos := start; pos < end; {
			if n := contraction(cps, pos, end, true); n > 0 {
				pos += n
				ends = append(ends, pos)
				continue
			}
			c := cps[pos]
			// [^\r\n\p{L}\p{N}]?\p{L}+
			if c != '\r' && c != '\n' && !isNumber(c) && (isLetter(c) || letterAt(cps, pos+1, end)) {
				for pos++; letterAt(cps, pos, end); pos++ {
				}
				ends = append(ends, pos)
				continue
			}
			// \p{N}{1,digits}
			if isNumber(c) {
				ini := pos
				for numberAt(cps, pos, end) {
					if pos++; pos-ini >= digits {
						ends = append(ends, pos)
						ini = pos
					}
				}
				if pos > ini {
					ends = append(ends, pos)
				}
				continue
			}
			// ?[^\s\p{L}\p{N}]+[\r\n]*
			q := pos
			if c == ' ' {
				q++
			}
			if otherAt(cps, q, end) {
				for q++; otherAt(cps, q, end); q++ {
				}
				for r := cpAt(cps, q, end); r == '\r' || r == '\n'; r = cpAt(cps, q, end) {
					q++
				}
				pos = q
				ends = append(ends, pos)
				continue
			}
			n, lastNewline := 0, 0
			for spaceAt(cps, pos+n, end) {
				if r := cps[pos+n]; r == '\r' || r == '\n' {
					lastNewline = pos + n + 1
				}
				n++
			}
			switch {
			case lastNewline > 0: // \s*[\r\n]+
				pos = lastNewline
			case n > 1 && pos+n < end: // \s+(?!\S)
				pos += n - 1
			case n > 0: // \s+
				pos += n
			default:
				pos++
			}
			ends = append(ends, pos)
		}
		return ends
	}
}

// splitRuns cuts cps[start:end) into maximal runs of code points in the
// class and the gaps between them, as a regular expression "[class]+" splits
// in llama.cpp (a match and the unmatched text before it are both words).
func splitRuns(in func(rune) bool) splitter {
	return func(cps []rune, start, end int, ends []int) []int {
		for pos := start; pos < end; {
			class := in(cps[pos])
			for pos++; pos < end && in(cps[pos]) == class; pos++ {
			}
			ends = append(ends, pos)
		}
		return ends
	}
}

// splitEachNumber implements "\p{N}": every number is a word of its own, and
// the text between numbers is one word.
func splitEachNumber(cps []rune, start, end int, ends []int) []int {
	for pos := start; pos < end; {
		if isNumber(cps[pos]) {
			pos++
		} else {
			for pos++; pos < end && !isNumber(cps[pos]); pos++ {
			}
		}
		ends = append(ends, pos)
	}
	return ends
}

// splitNumberRuns implements "\p{N}+".
var splitNumberRuns = splitRuns(isNumber)

// splitDefaultPunct implements "[\p{P}\$\+<=>\^~\|]+" as llama.cpp's
// collapsed std::regex does: ASCII punctuation is its fixed list
// (!-#%-*,-/:-;?-@[-]_{}), which with the symbols listed leaves out only the
// backquote; non-ASCII code points count by their Unicode category.
var splitDefaultPunct = splitRuns(func(r rune) bool {
	if r < 0x80 {
		return r >= '!' && r <= '/' || r >= ':' && r <= '@' || r >= '[' && r <= '^' || r == '_' || r >= '{' && r <= '~'
	}
	return !isSpace(r) && unicode.IsPunct(r)
})

// splitDigitTriples implements "[0-9][0-9][0-9]": runs of three ASCII digits,
// leftmost first, and the text between them.
func splitDigitTriples(cps []rune, start, end int, ends []int) []int {
	digit := func(i int) bool { return i < end && cps[i] >= '0' && cps[i] <= '9' }
	gap := start
	for pos := start; pos < end; {
		if digit(pos) && digit(pos+1) && digit(pos+2) {
			if pos > gap {
				ends = append(ends, pos)
			}
			pos += 3
			ends = append(ends, pos)
			gap = pos
			continue
		}
		pos++
	}
	if gap < end {
		ends = append(ends, end)
	}
	return ends
}
