package llama

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/ollama/ollama/fs/ggml"
)

// bpeVocab is the byte-level BPE part of a Vocab (tokenizer.ggml.model
// "gpt2"), as llama.cpp tokenizes it: special tokens written in the text are
// cut out first (longest first); the rest is split into words by the
// pre-tokenizer that tokenizer.ggml.pre names; each word's UTF-8 bytes are
// spelled in GPT-2's byte-to-unicode alphabet and merged pairwise, lowest
// merge rank first (tokenizer.ggml.merges).
type bpeVocab struct {
	pre     preTokenizer
	ids     map[string]int      // token text to id (the last of duplicates, as llama.cpp)
	merges  map[uint64]bpeMerge // by left and right token id
	byteID  [256]int32          // token of each byte's spelling, -1 if none
	special []int               // control, user-defined and unknown tokens, longest first
	eog     map[int]bool
	pieces  []string // the bytes each token decodes to
	// encoders keeps bpeEncoders between calls: their buffers, grown to
	// the words seen, are most of what a tokenization would allocate.
	encoders sync.Pool
}

// byteRune is GPT-2's byte-to-unicode mapping: printable Latin-1 bytes stand
// for themselves, the others for the code points from U+0100 on, in order.
var byteRune, runeByte = func() (b [256]rune, r map[rune]byte) {
	r = make(map[rune]byte, 256)
	n := rune(0)
	for i := range 256 {
		if i >= '!' && i <= '~' || i >= 0xA1 && i <= 0xAC || i >= 0xAE {
			b[i] = rune(i)
		} else {
			b[i] = 256 + n
			n++
		}
		r[b[i]] = byte(i)
	}
	return b, r
}()

// eogTexts are the token texts llama.cpp treats as end of generation (and
// as control tokens) whatever their type says.
var eogTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>",
	"<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>"}

func newBPEVocab(kv ggml.KV) (*Vocab, error) {
	pre, err := lookupPreTokenizer(kv.String("tokenizer.ggml.pre"))
	if err != nil {
		return nil, err
	}
	v := &Vocab{
		tokens: kv.Strings("tokenizer.ggml.tokens"),
		types:  kv.Ints("tokenizer.ggml.token_type"),
		BOS:    int(kv.Uint("tokenizer.ggml.bos_token_id", 11)),
		EOS:    int(kv.Uint("tokenizer.ggml.eos_token_id", 11)),
		UNK:    -1,
		AddBOS: pre.addBOS,
		chat:   &chatTemplate{src: kv.String("tokenizer.chat_template")},
	}
	if _, ok := kv["tokenizer.ggml.add_bos_token"]; ok {
		v.AddBOS = kv.Bool("tokenizer.ggml.add_bos_token")
	}
	n := len(v.tokens)
	if n == 0 {
		return nil, fmt.Errorf("no tokenizer.ggml.tokens")
	}
	if len(v.types) != n {
		v.types = make([]int32, n)
		for i := range v.types {
			v.types[i] = tokNormal
		}
	}
	v.scores = make([]float32, n)
	for i := range v.bytes {
		v.bytes[i] = -1 // byte-level BPE has no <0xNN> byte tokens
	}
	b := &bpeVocab{pre: pre, ids: make(map[string]int, n), eog: make(map[int]bool), pieces: make([]string, n)}
	v.bpe = b
	v.ids = b.ids
	for i, t := range v.tokens {
		b.ids[t] = i
	}
	for _, t := range eogTexts {
		if id, ok := b.ids[t]; ok {
			b.eog[id] = true
			v.types[id] = tokControl
		}
	}
	for _, key := range []string{"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"} {
		if _, ok := kv[key]; ok {
			id := int(kv.Uint(key))
			if id < 0 || id >= n {
				return nil, fmt.Errorf("%s %d outside the vocabulary of %d", key, id, n)
			}
			b.eog[id] = true
		}
	}
	if _, ok := kv["tokenizer.ggml.eos_token_id"]; !ok {
		v.EOS = -1
	}
	if v.AddBOS && (v.BOS < 0 || v.BOS >= n) {
		return nil, fmt.Errorf("bos token %d outside the vocabulary of %d", v.BOS, n)
	}
	if id, ok := kv["tokenizer.ggml.unknown_token_id"]; ok && id != nil {
		v.UNK = int(kv.Uint("tokenizer.ggml.unknown_token_id"))
	}
	for i, t := range v.tokens {
		switch v.types[i] {
		case tokControl, tokUser, tokUnknown:
			if t != "" {
				b.special = append(b.special, i)
			}
		}
		switch v.types[i] {
		case tokControl, tokUser:
			b.pieces[i] = t
		case tokUnknown, tokUnused:
		default:
			b.pieces[i] = decodeBytes(t)
		}
	}
	sort.SliceStable(b.special, func(i, j int) bool { return len(v.tokens[b.special[i]]) > len(v.tokens[b.special[j]]) })

	merges := kv.Strings("tokenizer.ggml.merges")
	if len(merges) == 0 {
		return nil, fmt.Errorf("no tokenizer.ggml.merges in a BPE vocabulary")
	}
	b.merges = make(map[uint64]bpeMerge, len(merges))
	for c, r := range byteRune {
		b.byteID[c] = -1
		if id, ok := b.ids[string(r)]; ok {
			b.byteID[c] = int32(id)
		}
	}
	for rank, m := range merges {
		// llama.cpp splits at the first space after the first byte.
		sp := strings.IndexByte(m[min(1, len(m)):], ' ')
		if sp < 0 {
			continue
		}
		sp += min(1, len(m))
		l, lok := b.ids[m[:sp]]
		r, rok := b.ids[m[sp+1:]]
		if !lok || !rok {
			continue // a merge of pieces that are not tokens can never apply
		}
		key := pairKey(int32(l), int32(r))
		if _, dup := b.merges[key]; !dup {
			id, ok := b.ids[m[:sp]+m[sp+1:]]
			if !ok {
				id = -1
			}
			b.merges[key] = bpeMerge{rank: int32(rank), id: int32(id)}
		}
	}
	return v, nil
}

// bpeMerge is a merge rule: its rank and the token it makes (-1 if none).
type bpeMerge struct{ rank, id int32 }

func pairKey(l, r int32) uint64 { return uint64(uint32(l))<<32 | uint64(uint32(r)) }

// decodeBytes maps a token spelled in the byte-to-unicode alphabet back to
// its bytes; code points outside the alphabet are kept as they are.
func decodeBytes(t string) string {
	out := make([]byte, 0, len(t))
	for _, r := range t {
		if c, ok := runeByte[r]; ok {
			out = append(out, c)
		} else {
			out = utf8.AppendRune(out, r)
		}
	}
	return string(out)
}

// fragment is a piece of the text being tokenized: raw text, or a special token.
type fragment struct {
	text string
	id   int // -1 for raw text
}

// encode tokenizes text as llama.cpp's llama_tokenize does with add_special
// and parse_special set (as Ollama calls it).
func (b *bpeVocab) encode(v *Vocab, text string) []int {
	var ids []int
	if v.AddBOS {
		ids = append(ids, v.BOS)
	}
	frags := []fragment{{text: text, id: -1}}
	for _, sid := range b.special {
		tok := v.tokens[sid]
		if !strings.Contains(text, tok) {
			continue
		}
		var next []fragment
		for _, f := range frags {
			if f.id >= 0 {
				next = append(next, f)
				continue
			}
			s := f.text
			for {
				i := strings.Index(s, tok)
				if i < 0 {
					break
				}
				if i > 0 {
					next = append(next, fragment{text: s[:i], id: -1})
				}
				next = append(next, fragment{id: sid})
				s = s[i+len(tok):]
			}
			if s != "" {
				next = append(next, fragment{text: s, id: -1})
			}
		}
		frags = next
	}
	e, _ := b.encoders.Get().(*bpeEncoder)
	if e == nil {
		e = new(bpeEncoder)
	}
	for _, f := range frags {
		if f.id >= 0 {
			ids = append(ids, f.id)
			continue
		}
		ids = e.encode(b, f.text, ids)
	}
	b.encoders.Put(e)
	return ids
}

// bpeEncoder holds the buffers of one tokenization.
type bpeEncoder struct {
	cps  []rune
	ends []int
	word []byte
	syms []bpeSymbol
	q    bpeQueue
	// words remembers the tokens of words already merged: prose repeats
	// its words, and a lookup costs a fraction of the merging (as Hugging
	// Face's tokenizers cache words). It belongs to one vocabulary, as the
	// encoder does, and is emptied when full.
	words map[string][]int32
}

// Bounds of an encoder's word cache: longer words are rare and not kept,
// and a full cache is emptied (a few hundred KB at most).
const (
	maxCachedWords    = 1 << 13
	maxCachedWordSize = 48
)

type bpeSymbol struct {
	start, n   int // bytes of the word
	prev, next int
	id         int32 // token of the symbol's text, -1 if none
}

// encode appends the tokens of raw text (no special tokens in it).
func (e *bpeEncoder) encode(b *bpeVocab, text string, ids []int) []int {
	e.cps = decodeLikeLlamaCpp(text, e.cps[:0])
	e.ends = b.pre.split(e.cps, e.ends)
	start := 0
	for _, end := range e.ends {
		ids = e.encodeWord(b, e.cps[start:end], ids)
		start = end
	}
	return ids
}

// decodeLikeLlamaCpp appends the code points of s as llama.cpp's
// unicode_cpts_from_utf8 reads them: a lead byte and the right number of
// continuation bytes make a code point (overlong forms and surrogates
// included); any other byte is U+FFFD.
func decodeLikeLlamaCpp(s string, cps []rune) []rune {
	for i := 0; i < len(s); {
		c := s[i]
		var n int
		var r rune
		switch {
		case c < 0x80:
			cps = append(cps, rune(c))
			i++
			continue
		case c&0xE0 == 0xC0:
			n, r = 2, rune(c&0x1F)
		case c&0xF0 == 0xE0:
			n, r = 3, rune(c&0x0F)
		case c&0xF8 == 0xF0:
			n, r = 4, rune(c&0x07)
		}
		ok := n > 0 && i+n <= len(s)
		for k := 1; ok && k < n; k++ {
			ok = s[i+k]&0xC0 == 0x80
			r = r<<6 | rune(s[i+k]&0x3F)
		}
		if !ok || r > maxCodePoint {
			cps = append(cps, utf8.RuneError)
			i++
			continue
		}
		cps = append(cps, r)
		i += n
	}
	return cps
}

const maxCodePoint = 0x10FFFF

// encodeWord appends the tokens of one pre-tokenized word.
func (e *bpeEncoder) encodeWord(b *bpeVocab, word []rune, ids []int) []int {
	w := e.word[:0]
	syms := e.syms[:0]
	var tmp [4]byte
	for _, r := range word {
		// llama.cpp re-encodes each code point, so that surrogates and
		// overlong forms come out as their canonical 3- or 1-byte forms.
		for _, c := range appendCodePoint(tmp[:0], r) {
			start := len(w)
			w = utf8.AppendRune(w, byteRune[c])
			syms = append(syms, bpeSymbol{start: start, n: len(w) - start, prev: len(syms) - 1, next: len(syms) + 1, id: b.byteID[c]})
		}
	}
	e.word = w
	if b.pre.ignore && len(syms) > 1 {
		if id, ok := b.ids[string(w)]; ok {
			return append(ids, id)
		}
	}
	if len(syms) == 0 {
		return ids
	}
	cache := len(w) <= maxCachedWordSize
	if cache {
		if toks, ok := e.words[string(w)]; ok {
			for _, id := range toks {
				ids = append(ids, int(id))
			}
			return ids
		}
	}
	first := len(ids)
	syms[len(syms)-1].next = -1
	e.syms = syms
	q := &e.q
	*q = (*q)[:0]
	try := func(l, r int) {
		if l < 0 || r < 0 || syms[l].id < 0 || syms[r].id < 0 {
			return
		}
		if m, ok := b.merges[pairKey(syms[l].id, syms[r].id)]; ok {
			q.push(bpeBigram{left: l, right: r, rank: m.rank, id: m.id, size: syms[l].n + syms[r].n})
		}
	}
	for i := 1; i < len(syms); i++ {
		try(i-1, i)
	}
	for len(*q) > 0 {
		bg := q.pop()
		l, r := &syms[bg.left], &syms[bg.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != bg.size || l.next != bg.right {
			continue // outdated
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = bg.left
		}
		l.id = bg.id
		try(l.prev, bg.left)
		try(bg.left, l.next)
	}
	for i := 0; i >= 0; i = syms[i].next {
		s := syms[i]
		if s.id >= 0 {
			ids = append(ids, int(s.id))
			continue
		}
		// Not a token: llama.cpp looks up each byte of the spelling alone.
		for _, c := range w[s.start : s.start+s.n] {
			if id, ok := b.ids[string([]byte{c})]; ok {
				ids = append(ids, id)
			}
		}
	}
	if cache {
		e.remember(w, ids[first:])
	}
	return ids
}

// remember caches the tokens of word.
func (e *bpeEncoder) remember(word []byte, ids []int) {
	if e.words == nil || len(e.words) >= maxCachedWords {
		e.words = make(map[string][]int32, maxCachedWords/4)
	}
	toks := make([]int32, len(ids))
	for i, id := range ids {
		toks[i] = int32(id)
	}
	e.words[string(word)] = toks
}

// appendCodePoint appends the UTF-8 encoding of r, surrogates included (as
// llama.cpp's unicode_cpt_to_utf8, where Go's would write U+FFFD).
func appendCodePoint(p []byte, r rune) []byte {
	if r >= 0xD800 && r <= 0xDFFF {
		return append(p, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
	}
	return utf8.AppendRune(p, r)
}

type bpeBigram struct {
	left, right int
	rank, id    int32 // the merge's rank and the token it makes
	size        int
}

// bpeQueue is a min-heap by rank, then by leftmost position (as llama.cpp),
// written out rather than through container/heap so that it does not box.
type bpeQueue []bpeBigram

func (a bpeBigram) before(b bpeBigram) bool {
	return a.rank < b.rank || a.rank == b.rank && a.left < b.left
}

func (h *bpeQueue) push(x bpeBigram) {
	*h = append(*h, x)
	q := *h
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if !q[i].before(q[p]) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
}

func (h *bpeQueue) pop() bpeBigram {
	q := *h
	top := q[0]
	n := len(q) - 1
	q[0] = q[n]
	q = q[:n]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < n && q[l].before(q[m]) {
			m = l
		}
		if r := l + 1; r < n && q[r].before(q[m]) {
			m = r
		}
		if m == i {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	*h = q
	return top
}

// IsEOG reports whether generation ends at token id: the EOS token, and for
// a BPE vocabulary also the end-of-turn tokens llama.cpp knows (EOT, EOM,
// "<|im_end|>", "<|eot_id|>", "<|endoftext|>" and the like).
func (v *Vocab) IsEOG(id int) bool {
	if v.bpe != nil {
		return v.bpe.eog[id]
	}
	return id == v.EOS
}

// IsBPE reports whether the vocabulary is byte-level BPE.
func (v *Vocab) IsBPE() bool { return v.bpe != nil }

// TokenID returns the id of the token with the given text.
func (v *Vocab) TokenID(text string) (int, bool) {
	id, ok := v.ids[text]
	return id, ok
}
