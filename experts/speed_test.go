package experts

import (
	"testing"
	"time"
)

// TestModelSpeedIsBounded: a model's announced speed opens within bounds,
// is refused outside them, and does not make a model a different one.
func TestModelSpeedIsBounded(t *testing.T) {
	key, id := newKey(t)
	now := time.Now()
	open := func(a Announcement) (*Announcement, error) {
		data, err := Seal(&a, key)
		if err != nil {
			return nil, err
		}
		return Open(data, now)
	}
	ok := sample(id, now)
	ok.Models[0].TTFTMs, ok.Models[0].TPS = 120.5, 42
	got, err := open(ok)
	if err != nil {
		t.Fatalf("valid: %v", err)
	}
	if m := got.Models[0]; m.TTFTMs != 120.5 || m.TPS != 42 {
		t.Errorf("speed %v ms, %v tokens/s after the wire, want 120.5, 42", m.TTFTMs, m.TPS)
	}
	for name, f := range map[string]func(*Model){
		"slow past bound": func(m *Model) { m.TTFTMs = MaxTTFTMs + 1 },
		"negative ttft":   func(m *Model) { m.TTFTMs = -1 },
		"fast past bound": func(m *Model) { m.TPS = MaxTPS * 2 },
		"negative tps":    func(m *Model) { m.TPS = -3 },
	} {
		a := sample(id, now)
		f(&a.Models[0])
		if _, err := open(a); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	a, b := ok.Models[0], ok.Models[0]
	b.TTFTMs, b.TPS = 900, 8
	if !a.Equal(b) {
		t.Error("a new speed makes a model unequal: every figure would force a full announcement")
	}
}
