package llama

import (
	"container/heap"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/ollama/ollama/fs/ggml"
)

// SentencePiece token types (tokenizer.ggml.token_type).
const (
	tokNormal  = 1
	tokUnknown = 2
	tokControl = 3
	tokUser    = 4
	tokUnused  = 5
	tokByte    = 6
)

// Vocab is a llama (SentencePiece-style) vocabulary with byte fallback, or a
// byte-level BPE one (see tokenizer_bpe.go), read
// from a GGUF file's tokenizer metadata. It tokenizes as llama.cpp does for a
// llama vocabulary: a leading "▁" is added, spaces become "▁", pieces are
// merged by score, and what is left unmatched is spelled in byte tokens.
type Vocab struct {
	tokens  []string
	scores  []float32
	types   []int32
	ids     map[string]int
	bytes   [256]int // byte token of each byte, -1 if none
	control []int    // control tokens recognized in text, longest first

	BOS, EOS, UNK int
	AddBOS        bool
	addSpace      bool

	bpe  *bpeVocab     // set for a byte-level BPE vocabulary (tokenizer_bpe.go)
	chat *chatTemplate // tokenizer.chat_template (template.go)
}

func newVocab(kv ggml.KV) (*Vocab, error) {
	if m := kv.String("tokenizer.ggml.model"); m == "gpt2" {
		return newBPEVocab(kv)
	} else if m != "llama" {
		return nil, fmt.Errorf("tokenizer %q: %w (only llama and gpt2)", m, ErrUnsupported)
	}
	v := &Vocab{
		tokens:   kv.Strings("tokenizer.ggml.tokens"),
		scores:   kv.Floats("tokenizer.ggml.scores"),
		types:    kv.Ints("tokenizer.ggml.token_type"),
		BOS:      int(kv.Uint("tokenizer.ggml.bos_token_id", 1)),
		EOS:      int(kv.Uint("tokenizer.ggml.eos_token_id", 2)),
		UNK:      int(kv.Uint("tokenizer.ggml.unknown_token_id", 0)),
		AddBOS:   kv.Bool("tokenizer.ggml.add_bos_token", true),
		addSpace: kv.Bool("tokenizer.ggml.add_space_prefix", true),
		chat:     &chatTemplate{src: kv.String("tokenizer.chat_template")},
	}
	if len(v.tokens) == 0 {
		return nil, fmt.Errorf("no tokenizer.ggml.tokens")
	}
	if len(v.scores) != len(v.tokens) {
		v.scores = make([]float32, len(v.tokens))
	}
	if len(v.types) != len(v.tokens) {
		v.types = make([]int32, len(v.tokens))
		for i := range v.types {
			v.types[i] = tokNormal
		}
	}
	v.ids = make(map[string]int, len(v.tokens))
	for i := range v.bytes {
		v.bytes[i] = -1
	}
	for i, t := range v.tokens {
		if _, dup := v.ids[t]; !dup {
			v.ids[t] = i
		}
		var b byte
		if v.types[i] == tokByte {
			if _, err := fmt.Sscanf(t, "<0x%02X>", &b); err == nil {
				v.bytes[b] = i
			}
		}
		if (v.types[i] == tokControl || v.types[i] == tokUser) && t != "" {
			v.control = append(v.control, i)
		}
	}
	for _, id := range []int{v.BOS, v.EOS, v.UNK} {
		if id < 0 || id >= len(v.tokens) {
			return nil, fmt.Errorf("special token id %d outside the vocabulary of %d", id, len(v.tokens))
		}
	}
	return v, nil
}

// ReadVocab reads only the tokenizer of a GGUF file. It loads the
// vocabulary-only files llama.cpp checks its tokenizers with (models/ggml-vocab-*.gguf),
// which hold no tensors and no shape a Model could be built from.
func ReadVocab(r io.ReadSeeker) (*Vocab, error) {
	size, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	ra, ok := r.(io.ReaderAt)
	if !ok {
		ra = seekReaderAt{r}
	}
	// The same bounds as a model's header: a file's claimed lengths are checked against its size.
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
	return newVocab(g.KV())
}

// Len returns the number of tokens.
func (v *Vocab) Len() int { return len(v.tokens) }

// Encode tokenizes text, with BOS first if the vocabulary asks for it.
// Control tokens written out in the text (such as "<s>") are recognized.
func (v *Vocab) Encode(text string) []int {
	if v.bpe != nil {
		return v.bpe.encode(v, text)
	}
	var ids []int
	if v.AddBOS {
		ids = append(ids, v.BOS)
	}
	first := true
	for text != "" {
		// Find the earliest control token in the text.
		at, id := len(text), -1
		for _, c := range v.control {
			if i := strings.Index(text, v.tokens[c]); i >= 0 && (i < at || i == at && len(v.tokens[c]) > len(v.tokens[id])) {
				at, id = i, c
			}
		}
		if at > 0 {
			ids = v.encodeSegment(ids, text[:at], first)
			first = false
		}
		if id < 0 {
			break
		}
		ids = append(ids, id)
		text = text[at+len(v.tokens[id]):]
	}
	return ids
}

// encodeSegment appends the pieces of text, which holds no control token.
func (v *Vocab) encodeSegment(ids []int, text string, first bool) []int {
	text = strings.ReplaceAll(text, " ", "▁")
	if first && v.addSpace {
		text = "▁" + text
	}
	// Symbols start as single characters and merge pairwise, best score first.
	type symbol struct {
		text       string
		prev, next int
	}
	syms := make([]symbol, 0, len(text))
	for i, r := 0, 0; i < len(text); i += r {
		_, r = utf8.DecodeRuneInString(text[i:])
		syms = append(syms, symbol{text: text[i : i+r], prev: len(syms) - 1, next: len(syms) + 1})
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	q := &bigrams{}
	try := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		s := syms[l].text + syms[r].text
		if id, ok := v.ids[s]; ok {
			heap.Push(q, bigram{left: l, right: r, score: v.scores[id], size: len(s)})
		}
	}
	for i := 1; i < len(syms); i++ {
		try(i-1, i)
	}
	for q.Len() > 0 {
		b := heap.Pop(q).(bigram)
		l, r := &syms[b.left], &syms[b.right]
		if l.text == "" || r.text == "" || len(l.text)+len(r.text) != b.size {
			continue // outdated
		}
		l.text += r.text
		r.text = ""
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		try(l.prev, b.left)
		try(b.left, l.next)
	}
	for i := 0; i >= 0 && i < len(syms); i = syms[i].next {
		s := syms[i].text
		if id, ok := v.ids[s]; ok && v.types[id] != tokByte {
			ids = append(ids, id)
			continue
		}
		for j := 0; j < len(s); j++ {
			if id := v.bytes[s[j]]; id >= 0 {
				ids = append(ids, id)
			} else {
				ids = append(ids, v.UNK)
			}
		}
	}
	return ids
}

type bigram struct {
	left, right int
	score       float32
	size        int
}

// bigrams is a max-heap by score, then by leftmost position (as llama.cpp).
type bigrams []bigram

func (h bigrams) Len() int { return len(h) }
func (h bigrams) Less(i, j int) bool {
	if h[i].score != h[j].score {
		return h[i].score > h[j].score
	}
	return h[i].left < h[j].left
}
func (h bigrams) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *bigrams) Push(x any)   { *h = append(*h, x.(bigram)) }
func (h *bigrams) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Piece returns the bytes token id stands for in text: a byte token its byte,
// a normal token its text with "▁" as a space, a control token nothing.
func (v *Vocab) Piece(id int) string {
	if id < 0 || id >= len(v.tokens) {
		return ""
	}
	if v.bpe != nil {
		return v.bpe.pieces[id]
	}
	switch v.types[id] {
	case tokByte:
		var b byte
		if _, err := fmt.Sscanf(v.tokens[id], "<0x%02X>", &b); err == nil {
			return string([]byte{b})
		}
		return ""
	case tokControl, tokUnknown, tokUnused:
		return ""
	}
	return strings.ReplaceAll(v.tokens[id], "▁", " ")
}

// Token returns the text of token id as stored in the vocabulary.
func (v *Vocab) Token(id int) string { return v.tokens[id] }
