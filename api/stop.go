package api

import "strings"

// stopper enforces stop sequences on streamed text, whatever the engine
// did with them: text that could be the start of a stop sequence is held
// back until the next chunk says whether it is, so no part of a stop
// sequence is ever sent; once one appears, the answer ends before it.
type stopper struct {
	stops []string
	held  string // text received and not sent: it may begin a stop sequence
	hit   bool   // a stop sequence appeared: nothing more is sent
}

func newStopper(stops []string) *stopper { return &stopper{stops: stops} }

// push takes the next text of the answer and returns what may be sent now,
// and whether a stop sequence ended the answer.
func (s *stopper) push(text string) (string, bool) {
	if s.hit {
		return "", true
	}
	if len(s.stops) == 0 {
		return text, false
	}
	buf := s.held + text
	at := -1
	for _, st := range s.stops {
		if i := strings.Index(buf, st); i >= 0 && (at < 0 || i < at) {
			at = i
		}
	}
	if at >= 0 {
		s.hit, s.held = true, ""
		return buf[:at], true
	}
	keep := 0 // the longest end of buf that begins a stop sequence
	for _, st := range s.stops {
		for k := min(len(st)-1, len(buf)); k > keep; k-- {
			if strings.HasSuffix(buf, st[:k]) {
				keep = k
				break
			}
		}
	}
	s.held = buf[len(buf)-keep:]
	return buf[:len(buf)-keep], false
}

// flush returns the text still held at the end of the answer (none when a
// stop sequence ended it).
func (s *stopper) flush() string {
	h := s.held
	s.held = ""
	if s.hit {
		return ""
	}
	return h
}

// cut is the text of a whole answer up to its first stop sequence, and
// whether there was one.
func cut(text string, stops []string) (string, bool) {
	s := newStopper(stops)
	out, hit := s.push(text)
	return out + s.flush(), hit
}
