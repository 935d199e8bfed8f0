package llama

import (
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/dlclark/regexp2"
)

// llamaCppSteps are llama.cpp's expressions for the pre-tokenizers of
// pretokenize_more.go, copied from llama-vocab.cpp (as vendored by Ollama
// v0.17.4).
var llamaCppSteps = map[string][]string{
	"tekken": {
		`[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
	},
	"deepseek-v3": {
		`\p{N}{1,3}`,
		"[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+",
		"[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
	},
	"deepseek-llm": {
		"[\r\n]",
		"\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044f\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2\U000118A0-\U000118DF\U0001E900-\U0001E943]+",
		"\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+",
		"\\s+$",
		"[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+",
		"\\p{N}+",
	},
	"deepseek-coder": {
		"[\r\n]",
		"\\s?\\p{L}+",
		"\\s?\\p{P}+",
		"[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+",
		"\\p{N}",
	},
}

// Categories as llama.cpp collapses them: the byte that stands for a
// non-ASCII code point of the category, and the ASCII characters of it.
var collapsedCategory = map[string]string{
	`\p{N}`: "\u00D10-9",
	`\p{L}`: "\u00D2A-Za-z",
	`\p{P}`: "\u00D3!-#%-*,-/:-;?-@\\[-\\]_\\{\\}",
	`\p{M}`: "\u00D4",
	`\p{S}`: "\u00D5\\$\\+<->\\^`\\|",
}

// collapseExpr rewrites an expression for the collapsed text as
// llama.cpp's unicode_regex_split does; ok is false when the expression
// names no category (it then runs on the code points).
func collapseExpr(expr string) (string, bool) {
	ok := false
	var sb strings.Builder
	inside := false
	for i := 0; i < len(expr); i++ {
		switch {
		case expr[i] == '[' && (i == 0 || expr[i-1] != '\\'):
			inside = true
		case inside && expr[i] == ']' && expr[i-1] != '\\':
			inside = false
		case expr[i] == '\\' && i+4 < len(expr) && expr[i+1] == 'p' && expr[i+2] == '{' && expr[i+4] == '}':
			if c, known := collapsedCategory[expr[i:i+5]]; known {
				ok = true
				if !inside {
					c = "[" + c + "]"
				}
				sb.WriteString(c)
				i += 4
				continue
			}
		}
		sb.WriteByte(expr[i])
	}
	return sb.String(), ok
}

// collapseText is the text a collapsed expression runs on.
func collapseText(cps []rune) []rune {
	out := make([]rune, len(cps))
	for i, r := range cps {
		switch {
		case r < 0x80:
			out[i] = r
		case isSpace(r):
			out[i] = '\v'
		case isNumber(r):
			out[i] = 0xD1
		case isLetter(r):
			out[i] = 0xD2
		case unicode.IsPunct(r):
			out[i] = 0xD3
		case unicode.IsMark(r):
			out[i] = 0xD4
		case unicode.IsSymbol(r):
			out[i] = 0xD5
		default:
			out[i] = 0xD0
		}
	}
	return out
}

// referenceSplit splits cps with llama.cpp's expressions run by a
// backtracking engine in ECMAScript mode, as unicode_regex_split_stl runs
// them with std::regex.
func referenceSplit(t *testing.T, exprs []string, cps []rune) []string {
	t.Helper()
	collapsed := collapseText(cps)
	wide := make([]rune, len(cps))
	for i, r := range cps {
		wide[i] = r
		if r > 0x7F && isSpace(r) {
			wide[i] = '\v'
		}
	}
	ends := []int{len(cps)}
	for _, e := range exprs {
		expr, useCollapsed := collapseExpr(e)
		text := wide
		if useCollapsed {
			text = collapsed
		}
		re, err := regexp2.Compile(expr, regexp2.ECMAScript)
		if err != nil {
			t.Fatalf("compile %q: %v", expr, err)
		}
		var next []int
		start := 0
		for _, end := range ends {
			piece := string(text[start:end])
			gap := 0 // in code points, relative to start
			m, err := re.FindStringMatch(piece)
			for ; err == nil && m != nil; m, err = re.FindNextMatch(m) {
				if m.Index > gap {
					next = append(next, start+m.Index)
				}
				next = append(next, start+m.Index+m.Length)
				gap = m.Index + m.Length
			}
			if err != nil {
				t.Fatal(err)
			}
			if start+gap < end {
				next = append(next, end)
			}
			start = end
		}
		ends = next
	}
	var words []string
	start := 0
	for _, end := range ends {
		words = append(words, string(cps[start:end]))
		start = end
	}
	return words
}

// preTokenizerTexts are texts that tell the expressions apart: camel case,
// capitals, punctuation before words, paths, digits of every length, CJK,
// marks, and whitespace runs.
var preTokenizerTexts = []string{
	"HelloWorld getHTTPResponse XMLHttpRequest iPhone ABCdef aBC",
	"(ok) [x]y {z} 'quote' \"dq\" a.b,c;d:e !bang ?q @at #h $d %p ^c &a *s -m +p =e ~t `b| <lt> /path/to/file\n/x\r\n",
	"1 12 123 1234 12345 123456 1234567 3.14159 -42 1,000,000 ١٢٣٤ ½ Ⅻ x2y3",
	"我们的模型在中文文本上也能工作。日本語のテキスト、カタカナ。한국어 텍스트도。ࠀ test",
	"café naïve cafe\u0301 Ångström ﬁne Ωmega ΣΊΣΥΦΟΣ Привет мир \U00010400\U00010428",
	"a  b   c\t\td \n\n  e\r\n\r\n   \u00a0x\u3000y\u2003 z   ",
	"full！width（parens）：colon～tilde ‘single’ “double” 。end",
	"emoji 😀😀 🎉 👍🏽 ❤️ 👨‍👩‍👧 ™ © ° ± → ∑ ∞ end",
	"a~b ~~s~~ x^y a|b a`b´c",
}

// TestMorePreTokenizersMatchLlamaCppExpressions: the hand-written
// splitters cut every text of the corpora into the words llama.cpp's own
// expressions give, run by a backtracking regular expression engine over
// the text as llama.cpp prepares it (collapsed or not).
func TestMorePreTokenizersMatchLlamaCppExpressions(t *testing.T) {
	texts := append(slices.Clone(bpeCorpus), preTokenizerTexts...)
	for pre, exprs := range llamaCppSteps {
		p, err := lookupPreTokenizer(pre)
		if err != nil {
			t.Fatal(err)
		}
		for _, text := range texts {
			cps := decodeLikeLlamaCpp(text, nil)
			var got []string
			start := 0
			for _, end := range p.split(cps, nil) {
				got = append(got, string(cps[start:end]))
				start = end
			}
			if want := referenceSplit(t, exprs, cps); !slices.Equal(got, want) {
				t.Errorf("%s %q:\n got %q\nwant %q", pre, text, got, want)
			}
		}
	}
}

// FuzzMorePreTokenizers: on any text, the hand-written splitters agree
// with llama.cpp's expressions run by the reference engine.
func FuzzMorePreTokenizers(f *testing.F) {
	for _, s := range append(slices.Clone(bpeCorpus), preTokenizerTexts...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		cps := decodeLikeLlamaCpp(text, nil)
		for pre, exprs := range llamaCppSteps {
			p, err := lookupPreTokenizer(pre)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			start := 0
			for _, end := range p.split(cps, nil) {
				got = append(got, string(cps[start:end]))
				start = end
			}
			if want := referenceSplit(t, exprs, cps); !slices.Equal(got, want) {
				t.Fatalf("%s %q:\n got %q\nwant %q", pre, text, got, want)
			}
		}
	})
}
