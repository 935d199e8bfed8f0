package llama

import "unicode"

// The pre-tokenizers of Mistral's Tekken vocabulary and of DeepSeek's
// (deepseek-llm, deepseek-coder, deepseek-v3). llama.cpp has no custom code
// for their expressions: it runs them through std::regex (ECMAScript:
// alternatives tried in order, greedy quantifiers that backtrack). An
// expression that names a Unicode category (\p{L}, \p{N}, \p{P}, \p{S},
// \p{M}) runs on the collapsed text, where an ASCII character stands for
// itself and any notSpaceLetterNumber code point for one byte per category (whitespace
// for \s); one without (the CJK ranges, DeepSeek LLM's letter and
// punctuation lists) runs on the code points, non-ASCII whitespace
// replaced by \v. Each matcher here returns the length of the match of its
// expression at one position, as std::regex would find it; splitMatches
// turns it into words (each match, and each stretch of text between
// matches).

// matcher returns the end of the match of an expression at cps[i], or -1.
type matcher func(cps []rune, i, end int) int

// splitMatches splits as llama.cpp's unicode_regex_split_stl does: the
// leftmost match, then the next from its end, and so on; the text before,
// between and after the matches is a word of its own.
func splitMatches(match matcher) splitter {
	return func(cps []rune, start, end int, ends []int) []int {
		gap := start
		for pos := start; pos < end; {
			m := match(cps, pos, end)
			if m <= pos {
				pos++
				continue
			}
			if pos > gap {
				ends = append(ends, pos)
			}
			ends = append(ends, m)
			pos, gap = m, m
		}
		if gap < end {
			ends = append(ends, end)
		}
		return ends
	}
}

// Classes of the collapsed text. For ASCII, llama.cpp's k_ucat_map: \p{L}
// is A-Za-z, \p{N} 0-9, \p{P} !-#%-*,-/:-;?-@[-]_{} and \p{S} $+<=>^`|
// (so ~ is in neither), \p{M} nothing. Other code points count by their
// category; whitespace (llama.cpp's list) is \s and nothing else.

func cSpace(r rune) bool {
	if r < 0x80 {
		return r == ' ' || r >= '\t' && r <= '\r'
	}
	return isSpace(r)
}

func cLetter(r rune) bool {
	if r < 0x80 {
		return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
	}
	return !isSpace(r) && unicode.IsLetter(r)
}

func cNumber(r rune) bool {
	if r < 0x80 {
		return '0' <= r && r <= '9'
	}
	return !isSpace(r) && unicode.IsNumber(r)
}

func cPunct(r rune) bool {
	if r < 0x80 {
		return r >= '!' && r <= '#' || r >= '%' && r <= '*' || r >= ',' && r <= '/' || r == ':' || r == ';' ||
			r == '?' || r == '@' || r >= '[' && r <= ']' || r == '_' || r == '{' || r == '}'
	}
	return !isSpace(r) && unicode.IsPunct(r)
}

func cSymbol(r rune) bool {
	if r < 0x80 {
		return r == '$' || r == '+' || r >= '<' && r <= '>' || r == '^' || r == '`' || r == '|'
	}
	return !isSpace(r) && unicode.IsSymbol(r)
}

func cMark(r rune) bool { return r >= 0x80 && !isSpace(r) && unicode.IsMark(r) }

// inClass tests a class on a possibly out-of-range position.
func inClass(class func(rune) bool, cps []rune, i, end int) bool {
	r := cpAt(cps, i, end)
	return r >= 0 && class(r)
}

// runOf returns the end of the run of class from i.
func runOf(class func(rune) bool, cps []rune, i, end int) int {
	for inClass(class, cps, i, end) {
		i++
	}
	return i
}

// matchSpaces matches the three whitespace alternatives that close the
// GPT-4-style expressions: \s*[\r\n]+|\s+(?!\S)|\s+.
func matchSpaces(cps []rune, i, end int) int {
	e := runOf(cSpace, cps, i, end)
	if e == i {
		return -1
	}
	// \s*[\r\n]+: \s* gives back until a line break follows; the last
	// line break of the run ends the match (what follows it is not one).
	for p := e - 1; p >= i; p-- {
		if cps[p] == '\r' || cps[p] == '\n' {
			return p + 1
		}
	}
	if e < end && e-i > 1 { // \s+(?!\S): leave the last space to the word after it
		return e - 1
	}
	return e // \s+
}

// Tekken:
// [^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
// A letter that is not a-z is "upper", one that is not A-Z "lower"; a
// non-ASCII letter (collapsed) is both.

func tekkenUpper(r rune) bool { return cLetter(r) && !('a' <= r && r <= 'z') }
func tekkenLower(r rune) bool { return cLetter(r) && !('A' <= r && r <= 'Z') }

// tekkenLead is [^\r\n\p{L}\p{N}].
func tekkenLead(r rune) bool { return r != '\r' && r != '\n' && !cLetter(r) && !cNumber(r) }

// notSpaceLetterNumber is [^\s\p{L}\p{N}].
func notSpaceLetterNumber(r rune) bool { return !cSpace(r) && !cLetter(r) && !cNumber(r) }

// optionalStarts returns the starts an optional leading class gives at i,
// in the order std::regex tries them: with it first (greedy), then without.
// They are starts[:n] (an array, so that no call allocates).
func optionalStarts(class func(rune) bool, cps []rune, i, end int) (starts [2]int, n int) {
	if inClass(class, cps, i, end) {
		return [2]int{i + 1, i}, 2
	}
	return [2]int{i}, 1
}

func matchTekken(cps []rune, i, end int) int {
	starts, n := optionalStarts(tekkenLead, cps, i, end)
	// upper* lower+: upper* takes what it can and gives back until a lower follows.
	for _, s := range starts[:n] {
		for k := runOf(tekkenUpper, cps, s, end); k >= s; k-- {
			if inClass(tekkenLower, cps, k, end) {
				return runOf(tekkenLower, cps, k, end)
			}
		}
	}
	// upper+ lower*
	for _, s := range starts[:n] {
		if inClass(tekkenUpper, cps, s, end) {
			return runOf(tekkenLower, cps, runOf(tekkenUpper, cps, s, end), end)
		}
	}
	if inClass(cNumber, cps, i, end) { // \p{N}
		return i + 1
	}
	if m := matchPunctRun(notSpaceLetterNumber, func(r rune) bool { return r == '\r' || r == '\n' || r == '/' }, cps, i, end); m > 0 {
		return m
	}
	return matchSpaces(cps, i, end)
}

// matchPunctRun matches " ?[class]+[tail]*".
func matchPunctRun(class, tail func(rune) bool, cps []rune, i, end int) int {
	starts, n := optionalStarts(func(r rune) bool { return r == ' ' }, cps, i, end)
	for _, s := range starts[:n] {
		if inClass(class, cps, s, end) {
			return runOf(tail, cps, runOf(class, cps, s, end), end)
		}
	}
	return -1
}

// DeepSeek V3, three expressions: "\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+", then
// [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+

func matchNumbers3(cps []rune, i, end int) int {
	e := i
	for e < i+3 && inClass(cNumber, cps, e, end) {
		e++
	}
	if e == i {
		return -1
	}
	return e
}

func deepseek3CJK(r rune) bool {
	return r >= 0x4E00 && r <= 0x9FA5 || r >= 0x3040 && r <= 0x309F || r >= 0x30A0 && r <= 0x30FF
}

func asciiPunct(r rune) bool {
	return r >= '!' && r <= '/' || r >= ':' && r <= '@' || r >= '[' && r <= '`' || r >= '{' && r <= '~'
}

func asciiLetter(r rune) bool { return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' }

func matchDeepSeek3(cps []rune, i, end int) int {
	if inClass(asciiPunct, cps, i, end) && inClass(asciiLetter, cps, i+1, end) {
		return runOf(asciiLetter, cps, i+1, end)
	}
	lead := func(r rune) bool { return r != '\r' && r != '\n' && !cLetter(r) && !cPunct(r) && !cSymbol(r) }
	letterOrMark := func(r rune) bool { return cLetter(r) || cMark(r) }
	starts, n := optionalStarts(lead, cps, i, end)
	for _, s := range starts[:n] {
		if inClass(letterOrMark, cps, s, end) {
			return runOf(letterOrMark, cps, s, end)
		}
	}
	punctOrSymbol := func(r rune) bool { return cPunct(r) || cSymbol(r) }
	if m := matchPunctRun(punctOrSymbol, func(r rune) bool { return r == '\r' || r == '\n' }, cps, i, end); m > 0 {
		return m
	}
	return matchSpaces(cps, i, end)
}

// DeepSeek LLM, five expressions on code points and one on the collapsed
// text: "[\r\n]", "\s?[letters]+" (a list of cased letters, deepseekLetters),
// "\s?[!-/:-~！-／：-～‘-‟　-。]+", "\s+$", "[一-龥ࠀ-一가-퟿]+", "\p{N}+".
// DeepSeek Coder: "[\r\n]", "\s?\p{L}+", "\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\p{N}".

// wSpace is \s of std::wregex on the code points, where llama.cpp has
// replaced non-ASCII whitespace by \v; the classes of code points below
// therefore leave whitespace out.
func wSpace(r rune) bool { return cSpace(r) }

func lineBreak(r rune) bool { return r == '\r' || r == '\n' }

// deepseekLetters is the letter list of DeepSeek LLM's second expression
// (A-Za-zµÀ-ÖØ-öø-ƺ... up to U+1E943, cased letters of many scripts), as
// ranges of code points read from llama-vocab.cpp's bytes (some of its
// characters have canonical decompositions, so a copy of the text through
// an editor that normalizes it would change them).
var deepseekLetters = &unicode.RangeTable{
	R16: []unicode.Range16{
		{0x41, 0x5A, 1}, {0x61, 0x7A, 1}, {0xB5, 0xB5, 1}, {0xC0, 0xD6, 1}, {0xD8, 0xF6, 1}, {0xF8, 0x1BA, 1}, {0x1BC, 0x1BF, 1},
		{0x1C4, 0x293, 1}, {0x295, 0x2AF, 1}, {0x370, 0x373, 1}, {0x376, 0x377, 1}, {0x37B, 0x37D, 1}, {0x37F, 0x37F, 1},
		{0x386, 0x386, 1}, {0x388, 0x38A, 1}, {0x38C, 0x38C, 1}, {0x38E, 0x3A1, 1}, {0x3A3, 0x3F5, 1}, {0x3F7, 0x481, 1},
		{0x48A, 0x52F, 1}, {0x531, 0x556, 1}, {0x10A0, 0x10C5, 1}, {0x13A0, 0x13F5, 1}, {0x13F8, 0x13FD, 1}, {0x1C90, 0x1CBA, 1},
		{0x1CBD, 0x1CBF, 1}, {0x1D00, 0x1D2B, 1}, {0x1D6B, 0x1D77, 1}, {0x1D79, 0x1D9A, 1}, {0x1E00, 0x1F15, 1}, {0x1F18, 0x1F1D, 1},
		{0x1F20, 0x1F45, 1}, {0x1F48, 0x1F4D, 1}, {0x1F50, 0x1F57, 1}, {0x1F59, 0x1F5D, 2}, {0x1F5F, 0x1F7D, 1}, {0x1F80, 0x1FB4, 1},
		{0x1FB6, 0x1FBC, 1}, {0x1FBE, 0x1FBE, 1}, {0x1FC2, 0x1FC4, 1}, {0x1FC6, 0x1FCC, 1}, {0x1FD0, 0x1FD3, 1}, {0x1FD6, 0x1FDB, 1},
		{0x1FE0, 0x1FEC, 1}, {0x1FF2, 0x1FF4, 1}, {0x1FF6, 0x1FFC, 1}, {0x2102, 0x2107, 5}, {0x210A, 0x2113, 1}, {0x2115, 0x2115, 1},
		{0x2119, 0x211D, 1}, {0x2124, 0x2128, 2}, {0x212A, 0x212D, 1}, {0x212F, 0x2134, 1}, {0x2139, 0x2139, 1}, {0x213C, 0x213F, 1},
		{0x2145, 0x2149, 1}, {0x214E, 0x214E, 1}, {0x2183, 0x2184, 1}, {0x2C00, 0x2C7B, 1}, {0x2C7E, 0x2CE4, 1}, {0x2CEB, 0x2CEE, 1},
		{0x2CF2, 0x2CF3, 1}, {0xA640, 0xA66D, 1}, {0xA680, 0xA69B, 1}, {0xA722, 0xA76F, 1}, {0xA771, 0xA787, 1}, {0xA78B, 0xA78E, 1},
		{0xAB70, 0xABBF, 1}, {0xFB00, 0xFB06, 1}, {0xFB13, 0xFB17, 1}, {0xFF21, 0xFF3A, 1}, {0xFF41, 0xFF5A, 1},
	},
	R32: []unicode.Range32{
		{0x10400, 0x1044F, 1}, {0x104B0, 0x104D3, 1}, {0x104D8, 0x104FB, 1}, {0x10C80, 0x10CB2, 1}, {0x10CC0, 0x10CF2, 1},
		{0x118A0, 0x118DF, 1}, {0x1E900, 0x1E943, 1},
	},
}

func deepseekLetter(r rune) bool { return !wSpace(r) && unicode.Is(deepseekLetters, r) }

// deepseekPunct is [!-/:-~！-／：-～‘-‟　-。] (U+3000 is whitespace, \v by then).
func deepseekPunct(r rune) bool {
	return !isSpace(r) && (r >= '!' && r <= '/' || r >= ':' && r <= '~' || r >= 0xFF01 && r <= 0xFF0F || r >= 0xFF1A && r <= 0xFF5E ||
		r >= 0x2018 && r <= 0x201F || r >= 0x3000 && r <= 0x3002)
}

// deepseekCJK is [一-龥ࠀ-一가-퟿]; the second range holds whitespace
// (U+2003, U+3000), which is \v by then.
func deepseekCJK(r rune) bool {
	return !isSpace(r) && (r >= 0x4E00 && r <= 0x9FA5 || r >= 0x0800 && r <= 0x4E00 || r >= 0xAC00 && r <= 0xD7FF)
}

// matchSpaced matches "\s?[class]+".
func matchSpaced(class func(rune) bool) matcher {
	return func(cps []rune, i, end int) int {
		starts, n := optionalStarts(wSpace, cps, i, end)
		for _, s := range starts[:n] {
			if inClass(class, cps, s, end) {
				return runOf(class, cps, s, end)
			}
		}
		return -1
	}
}

// matchRun matches "[class]+".
func matchRun(class func(rune) bool) matcher {
	return func(cps []rune, i, end int) int {
		if e := runOf(class, cps, i, end); e > i {
			return e
		}
		return -1
	}
}

// matchOne matches "[class]".
func matchOne(class func(rune) bool) matcher {
	return func(cps []rune, i, end int) int {
		if inClass(class, cps, i, end) {
			return i + 1
		}
		return -1
	}
}

// matchTrailingSpace matches "\s+$": the whitespace that ends the word.
func matchTrailingSpace(cps []rune, i, end int) int {
	if e := runOf(wSpace, cps, i, end); e > i && e == end {
		return e
	}
	return -1
}

func init() {
	for name, p := range map[string]preTokenizer{
		"tekken": {steps: []splitter{splitMatches(matchTekken)}, ignore: true},
		"deepseek-v3": {steps: []splitter{
			splitMatches(matchNumbers3), splitMatches(matchRun(deepseek3CJK)), splitMatches(matchDeepSeek3)}},
		"deepseek-llm": {steps: []splitter{
			splitMatches(matchOne(lineBreak)), splitMatches(matchSpaced(deepseekLetter)), splitMatches(matchSpaced(deepseekPunct)),
			splitMatches(matchTrailingSpace), splitMatches(matchRun(deepseekCJK)), splitMatches(matchRun(cNumber))}},
		"deepseek-coder": {steps: []splitter{
			splitMatches(matchOne(lineBreak)), splitMatches(matchSpaced(cLetter)), splitMatches(matchSpaced(cPunct)),
			splitMatches(matchRun(deepseekCJK)), splitMatches(matchOne(cNumber))}},
	} {
		p.name = name
		preTokenizers[name] = p
	}
}
