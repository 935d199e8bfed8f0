package cli

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Strings the commands print come from other peers (regions, model names,
// addresses, error messages, answers), and a terminal obeys control
// characters in what it prints: a region of "\x1b]0;…\a" retitles the
// window, "\x1b[2J" clears it, a bidi override reorders a line so it reads
// other than it is. The functions here remove them before printing.

// clean makes s safe to print as one field of one line: it drops every
// control character, tab and newline included.
func clean(s string) string { return sanitize(s, false) }

// cleanText makes s safe to print as running text, such as an answer: like
// clean, but it keeps newlines and tabs.
func cleanText(s string) string { return sanitize(s, true) }

// sanitize drops from s: escape sequences (ESC and the sequence it starts:
// CSI up to its final byte, OSC, DCS, SOS, PM and APC up to their
// terminator, otherwise the one character after ESC), other C0 controls
// (but \t and \n when text), DEL, C1 controls (the sequence of a C1 CSI or
// string control too), and the Unicode bidi controls. Bytes that are not
// UTF-8 become U+FFFD.
func sanitize(s string, text bool) string {
	if isClean(s, text) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteRune(utf8.RuneError)
		case r == 0x1b: // ESC
			if i >= len(s) {
				break
			}
			switch c := s[i]; {
			case c == '[':
				i = skipCSI(s, i+1)
			case strings.IndexByte("]PX^_", c) >= 0:
				i = skipString(s, i+1)
			case c >= 0x20 && c < 0x7f:
				i++ // a two-character sequence such as ESC c (reset)
			}
		case r == 0x9b: // C1 CSI
			i = skipCSI(s, i)
		case r == 0x90 || r == 0x98 || r == 0x9d || r == 0x9e || r == 0x9f: // C1 DCS, SOS, OSC, PM, APC
			i = skipString(s, i)
		case text && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case unsafeRune(r):
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// isClean reports whether sanitize would return s unchanged.
func isClean(s string, text bool) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || unsafeRune(r) && !(text && (r == '\n' || r == '\t')) {
			return false
		}
		i += size
	}
	return true
}

// unsafeRune says whether r is a control character or a bidi control.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r < 0xa0: // C0, DEL, C1
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, // ALM, LRM, RLM
		r >= 0x202a && r <= 0x202e, // LRE, RLE, PDF, LRO, RLO
		r >= 0x2066 && r <= 0x2069: // LRI, RLI, FSI, PDI
		return true
	}
	return false
}

// skipCSI returns the index after the control sequence whose parameters
// start at s[i]: parameter and intermediate bytes (0x20–0x3f), then one
// final byte (0x40–0x7e). A sequence broken by any other byte ends there.
func skipCSI(s string, i int) int {
	for i < len(s) && s[i] >= 0x20 && s[i] <= 0x3f {
		i++
	}
	if i < len(s) && s[i] >= 0x40 && s[i] <= 0x7e {
		i++
	}
	return i
}

// skipString returns the index after a control string starting at s[i]
// (the payload of OSC, DCS and their kind): up to BEL, ESC \ or C1 ST, or
// the end of s.
func skipString(s string, i int) int {
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == 0x07 || r == 0x9c:
			return i + size
		case r == 0x1b:
			if i+1 < len(s) && s[i+1] == '\\' {
				return i + 2
			}
			return i // a new sequence starts: let sanitize see it
		}
		i += size
	}
	return i
}

// cleanJSON makes raw JSON from a peer safe to print as it is: it writes
// control characters but newlines and tabs (Go's encoder escapes C0 ones
// already, not DEL or C1 ones) and bidi controls as \u escapes, which mean
// the same inside a JSON string and are no valid JSON outside one, and
// bytes that are not UTF-8 as U+FFFD.
func cleanJSON(raw []byte) []byte {
	s := string(raw)
	if isClean(s, true) {
		return raw
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for _, r := range s {
		if unsafeRune(r) && r != '\n' && r != '\t' || r == utf8.RuneError {
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return []byte(b.String())
}
