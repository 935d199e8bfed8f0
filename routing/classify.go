package routing

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// DomainScore is how strongly a prompt belongs to a domain, in [0, 1].
type DomainScore struct {
	Domain string  `json:"domain"`
	Score  float64 `json:"score"`
}

// MaxClassifyBytes is how much of a prompt Classify reads. The beginning of
// a prompt says what it is about; reading further only costs time.
const MaxClassifyBytes = 32 << 10

// Baselines of the general domain (see Classify).
const (
	generalFloor = 0.1  // general's score when another domain is certain
	minReported  = 0.01 // domains scoring less are left out
)

// Classify returns the domains of a prompt, best first, each scored in
// [0, 1]. It is multi-label: a prompt may be both code and math.
//
// Evidence for a domain is summed from the lexicon (whole words and phrases,
// case-insensitive, plurals folded) and from the prompt's shape:
//
//   - code: ``` fences, `inline code`, calls such as foo() or parse(x), file
//     names such as main.go, snake_case and camelCase identifiers, operators
//     such as == != && || := => ::, braces, and the names C++ and C#;
//   - math: arithmetic such as "2x + 3 = 7", "12*7" or "3/4" (an operator
//     with a number on one side and a number or one-letter variable on the
//     other; not dates like 2024-01-02), sin(x) or f(x), and symbols such as
//     √ ∫ ∑ ².
//
// A term repeated counts half the second time and not after that, and
// inside a ``` fence only code evidence counts. Each domain's evidence x
// becomes the score 1-e^-x. General is the fallback: it scores the most of
// its own evidence, 1 minus the best other score, and 0.1, so it is 1 when
// nothing else fires and a low baseline otherwise. Domains scoring under
// 0.01 are left out; general is always present. Ties keep the order code,
// math, science, reasoning, creative, general. Scores are rounded to three
// decimals.
//
// Only the first MaxClassifyBytes of the prompt are read. Classify is
// deterministic and safe for concurrent use.
func Classify(prompt string) []DomainScore {
	if len(prompt) > MaxClassifyBytes {
		prompt = prompt[:MaxClassifyBytes]
	}
	sc := scratchPool.Get().(*scratch)
	defer sc.release()
	sc = lex(prompt, sc)
	raw := evidence(prompt, sc)

	out := make([]DomainScore, 0, numDomains)
	best := 0.0
	for d := range dGeneral {
		s := 1 - math.Exp(-raw[d])
		best = max(best, s)
		if s >= minReported {
			out = append(out, DomainScore{Domain: domainNames[d], Score: round3(s)})
		}
	}
	general := max(1-math.Exp(-raw[dGeneral]), 1-best, generalFloor)
	out = append(out, DomainScore{Domain: General, Score: round3(general)})
	slices.SortStableFunc(out, func(a, b DomainScore) int { return cmp.Compare(b.Score, a.Score) })
	return out
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

type tokKind uint8

const (
	tokWord tokKind = iota
	tokSym
)

// Word shapes.
const (
	shapeDigit    = 1 << iota // has a digit
	shapeNumeric              // a number or a number with one letter: 7, 3.14, 2x
	shapeVariable             // a single letter
	shapeSnake                // snake_case
	shapeCamel                // camelCase
	shapeLetter               // has a letter
)

// token is a word (letters, digits, underscores; "3.14" is one word) or one
// symbol character.
type token struct {
	start, end int   // byte offsets in the prompt
	id         int32 // vocabulary entry; -1 for an unknown word or a symbol
	sym        rune  // symbols only, with × ÷ − ≤ ≥ ≠ mapped to * / - < > =
	kind       tokKind
	shape      uint8
	space      bool // whitespace (or the start of the prompt) precedes it
}

// scratch holds one call's buffers; a pool keeps Classify free of
// steady-state allocations beyond its result.
type scratch struct {
	toks  []token
	buf   []byte
	count []uint8 // per entry: times seen in this prompt
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// release returns sc to the pool, unless a huge prompt grew it: that memory
// is better given back than kept for the next huge prompt.
func (sc *scratch) release() {
	if cap(sc.toks) > 4096 {
		sc.toks = nil
	}
	scratchPool.Put(sc)
}

func isWordByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
}

func isSpaceByte(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// lex splits s into tokens. sc may be nil (then a new one is made).
func lex(s string, sc *scratch) *scratch {
	if sc == nil {
		sc = new(scratch)
	}
	sc.toks = sc.toks[:0]
	space := true
	for i := 0; i < len(s); {
		c := s[i]
		var r rune = rune(c)
		n := 1
		if c >= utf8.RuneSelf {
			r, n = utf8.DecodeRuneInString(s[i:])
		}
		switch {
		case c < utf8.RuneSelf && isSpaceByte(c), c >= utf8.RuneSelf && unicode.IsSpace(r):
			space = true
			i += n
			continue
		case c < utf8.RuneSelf && isWordByte(c), c >= utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			end := sc.word(s, i)
			sc.toks[len(sc.toks)-1].space = space
			i = end
		default:
			switch r {
			case '×':
				r = '*'
			case '÷':
				r = '/'
			case '−', '–':
				r = '-'
			case '≤':
				r = '<'
			case '≥':
				r = '>'
			case '≠':
				r = '='
			}
			sc.toks = append(sc.toks, token{start: i, end: i + n, id: -1, sym: r, kind: tokSym, space: space})
			i += n
		}
		space = false
	}
	return sc
}

// word reads the word starting at s[i], appends its token and returns the
// offset after it.
func (sc *scratch) word(s string, i int) int {
	sc.buf = sc.buf[:0]
	var shape uint8
	letters, lowerRun := 0, 0
	underscore, camel := false, false
	start := i
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case 'a' <= c && c <= 'z':
				letters++
				lowerRun++
			case 'A' <= c && c <= 'Z':
				letters++
				if lowerRun >= 2 {
					camel = true
				}
				lowerRun = 0
				c += 'a' - 'A'
			case '0' <= c && c <= '9':
				shape |= shapeDigit
				lowerRun = 0
			case c == '_':
				underscore = underscore || i > start && i+1 < len(s) && isWordByte(s[i+1])
				lowerRun = 0
			case c == '.' && shape&shapeDigit != 0 && i > start && '0' <= s[i-1] && s[i-1] <= '9' &&
				i+1 < len(s) && '0' <= s[i+1] && s[i+1] <= '9':
				// decimal point inside a number
			default:
				goto done
			}
			sc.buf = append(sc.buf, c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case unicode.IsLetter(r):
			letters++
			lowerRun = 0
		case unicode.IsDigit(r):
			shape |= shapeDigit
		default:
			goto done
		}
		sc.buf = utf8.AppendRune(sc.buf, unicode.ToLower(r))
		i += n
	}
done:
	if shape&shapeDigit != 0 && letters <= 1 && '0' <= s[start] && s[start] <= '9' {
		shape |= shapeNumeric
	}
	if letters == 1 && i-start == 1 {
		shape |= shapeVariable
	}
	if letters > 0 {
		shape |= shapeLetter
	}
	if underscore && letters >= 2 {
		shape |= shapeSnake
	}
	if camel {
		shape |= shapeCamel
	}
	sc.toks = append(sc.toks, token{start: start, end: i, id: lookup(sc.buf), kind: tokWord, shape: shape})
	return i
}

// lookup finds a lowercase word in the vocabulary, folding a plural to its
// singular ("equations" -> "equation", "stories" -> "story") when the
// plural itself is unknown.
func lookup(w []byte) int32 {
	if id, ok := vocab[string(w)]; ok {
		return id
	}
	n := len(w)
	if n < 4 || w[n-1] != 's' || w[n-2] == 's' {
		return -1
	}
	if w[n-2] == 'e' && w[n-3] == 'i' { // stories -> story
		var b [64]byte
		if n-2 <= len(b) {
			x := append(b[:0], w[:n-3]...)
			x = append(x, 'y')
			if id, ok := vocab[string(x)]; ok {
				return id
			}
		}
	}
	if id, ok := vocab[string(w[:n-1])]; ok && !entries[id].stop {
		return id
	}
	return -1
}

// Caps on shape evidence, so a long paste cannot run up one domain alone.
const (
	maxCallEvidence  = 1.5
	maxIdentEvidence = 1.0
	maxOpEvidence    = 1.2
	maxMathEvidence  = 2.0
	maxFileEvidence  = 1.5
)

// evidence sums each domain's raw evidence over the tokens of p.
func evidence(p string, sc *scratch) [numDomains]float64 {
	var raw [numDomains]float64
	if cap(sc.count) < len(entries) {
		sc.count = make([]uint8, len(entries))
	}
	count := sc.count[:len(entries)]
	clear(count)
	credit := func(id int32, fenced bool) {
		n := count[id]
		if n >= 2 {
			return
		}
		count[id] = n + 1
		f := 1.0
		if n == 1 {
			f = 0.5
		}
		for _, h := range entries[id].hits {
			if !fenced || h.domain == dCode {
				raw[h.domain] += f * h.weight
			}
		}
	}

	toks := sc.toks
	adjacent := func(i int) bool { return i+1 < len(toks) && toks[i+1].start == toks[i].end }
	symAt := func(i int, r rune) bool { return i >= 0 && i < len(toks) && toks[i].kind == tokSym && toks[i].sym == r }
	var fences, ticks, call, ident, op, mathEv, file float64
	fenced := false
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if t.kind == tokSym {
			switch {
			case t.sym == '`' && symAt(i+1, '`') && symAt(i+2, '`') && adjacent(i) && adjacent(i+1):
				fences++
				fenced = !fenced
				i += 2
				continue
			case t.sym == '`':
				ticks++
			case (t.sym == '+' || t.sym == '#') && i > 0 && isC(p, toks[i-1]) && toks[i-1].end == t.start &&
				(t.sym == '#' || symAt(i+1, '+') && adjacent(i)):
				raw[dCode] += strong // C++, C#
				if t.sym == '+' {
					i++
				}
				continue
			case codeOperator(toks, i):
				op += 0.3
				i++
				continue
			case t.sym == '{' || t.sym == '}':
				op += 0.15
			case t.sym == ';' && (i+1 == len(toks) || strings.HasPrefix(p[t.end:], "\n")):
				op += 0.15
			}
			if fenced {
				continue
			}
			switch t.sym {
			case '√', '∫', '∑', '∏', '∞', '≈', '∂', '∆', '∇', '²', '³', '±':
				mathEv += 0.5
			case '%':
				if i > 0 && toks[i-1].shape&shapeNumeric != 0 && toks[i-1].end == t.start {
					mathEv += weak
				}
			default:
				mathEv += arithmetic(toks, i)
			}
			continue
		}

		// A word: the lexicon, then the phrases starting here.
		if t.id >= 0 {
			credit(t.id, fenced)
			for _, ph := range phrasesByFirst[t.id] {
				if matchPhrase(toks, i, ph.words) {
					credit(ph.entry, fenced)
				}
			}
		}
		switch {
		case t.shape&shapeSnake != 0:
			ident += 0.5
		case t.shape&shapeCamel != 0: // also brand names like PowerPoint
			ident += weak
		}
		if !adjacent(i) || toks[i+1].kind != tokSym {
			continue
		}
		switch toks[i+1].sym {
		case '(':
			isMath := t.shape&shapeVariable != 0 || t.id >= 0 && entries[t.id].mathFunc
			switch {
			case isMath:
				if !fenced {
					mathEv += 0.4
				}
			case symAt(i+2, ')') && adjacent(i+1): // foo()
				call += 0.8
			case i+3 < len(toks) && wordIs(p, toks[i+2], "s") && symAt(i+3, ')'):
				// file(s): prose, not a call
			case t.shape&shapeNumeric == 0:
				call += 0.5
			}
		case '.':
			// name.ext, where ext is a source file extension ending the name.
			if i+2 < len(toks) && adjacent(i+1) && t.shape&shapeNumeric == 0 {
				ext := toks[i+2]
				if ext.kind == tokWord && ext.id >= 0 && entries[ext.id].ext && !continues(toks, i+2) {
					file += strong
				}
			}
		}
	}
	raw[dCode] += min(fences, 2)*strong + min(ticks/2, 3)*weak + min(call, maxCallEvidence) +
		min(ident, maxIdentEvidence) + min(op, maxOpEvidence) + min(file, maxFileEvidence)
	raw[dMath] += min(mathEv, maxMathEvidence)
	return raw
}

// isC reports whether t is the word "c" (as in C++ and C#).
func isC(p string, t token) bool {
	return t.kind == tokWord && t.end-t.start == 1 && p[t.start]|0x20 == 'c'
}

// wordIs reports whether t is the word w (lowercase ASCII), ignoring case.
func wordIs(p string, t token, w string) bool {
	return t.kind == tokWord && strings.EqualFold(p[t.start:t.end], w)
}

// continues reports whether the name toks[i] goes on right after it, as in
// example.go.dev or site.com.au: then toks[i] is no file extension.
func continues(toks []token, i int) bool {
	if i+1 >= len(toks) || toks[i+1].start != toks[i].end {
		return false
	}
	n := toks[i+1]
	if n.kind == tokWord {
		return true
	}
	return (n.sym == '.' || n.sym == '-' || n.sym == '_') && i+2 < len(toks) && toks[i+2].start == n.end &&
		toks[i+2].kind == tokWord
}

// matchPhrase reports whether the words of a phrase start at toks[i],
// consecutive apart from symbols that do not end a clause (hyphens,
// apostrophes, slashes).
func matchPhrase(toks []token, i int, words []int32) bool {
	k := 0
	for j := i; j < len(toks); j++ {
		t := toks[j]
		if t.kind == tokSym {
			switch t.sym {
			case '-', '\'', '’', '/', '*', '_', '~':
				continue
			}
			return false
		}
		if t.id != words[k] {
			return false
		}
		k++
		if k == len(words) {
			return true
		}
	}
	return false
}

// codeOperator reports whether toks[i] and toks[i+1] form one of the
// two-character operators of programming languages: == != && || := => ::
// += -= <- ++ ->.
func codeOperator(toks []token, i int) bool {
	if i+1 >= len(toks) || toks[i+1].kind != tokSym || toks[i+1].start != toks[i].end {
		return false
	}
	switch string([]rune{toks[i].sym, toks[i+1].sym}) {
	case "==", "!=", "&&", "||", ":=", "=>", "::", "+=", "-=", "<-":
		return true
	case "++", "->":
		// i++ and p->next are code; a bare "->" between words is a prose arrow.
		return i > 0 && toks[i-1].kind == tokWord && toks[i-1].end == toks[i].start
	}
	return false
}

// arithmetic scores toks[i] as an arithmetic operator: a number or a
// one-letter variable on each side (whitespace allowed), at least one side a
// number. "-" between two plain numbers with no spaces is a date, a range or
// a phone number, not a subtraction; "/" there is a fraction or a date,
// weaker evidence.
func arithmetic(toks []token, i int) float64 {
	t := toks[i]
	switch t.sym {
	case '+', '-', '*', '/', '^', '=', '<', '>':
	default:
		return 0
	}
	if i == 0 || i+1 >= len(toks) {
		return 0
	}
	l, r := toks[i-1], toks[i+1]
	lok, lnum := operand(l, ')')
	rok, rnum := operand(r, '(')
	if !lok || !rok || !lnum && !rnum {
		return 0
	}
	tight := l.end == t.start && r.start == t.end
	plain := l.shape&shapeLetter == 0 && r.shape&shapeLetter == 0 && l.kind == tokWord && r.kind == tokWord
	switch {
	case t.sym == '-' && tight && plain:
		return 0
	case t.sym == '/' && tight && plain:
		return weak
	case t.sym == '=' || t.sym == '^':
		return strong
	}
	return 0.8
}

// operand reports whether x can stand beside an arithmetic operator (a
// number, a one-letter variable, or the given bracket) and whether it is a
// number.
func operand(x token, bracket rune) (ok, number bool) {
	if x.kind == tokSym {
		return x.sym == bracket, false
	}
	return x.shape&(shapeNumeric|shapeVariable) != 0, x.shape&shapeNumeric != 0
}
