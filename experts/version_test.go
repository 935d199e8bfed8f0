package experts

import (
	"strings"
	"testing"
	"time"
)

// TestVersionAndContextAreBounded: a full announcement may say its mwpeer
// version and its models' context lengths, within bounds; a beat carries
// neither.
func TestVersionAndContextAreBounded(t *testing.T) {
	key, id := newKey(t)
	now := time.Now()
	open := func(a Announcement) error {
		data, err := Seal(&a, key)
		if err != nil {
			return err
		}
		_, err = Open(data, now)
		return err
	}
	ok := sample(id, now)
	ok.Version = "0.1.0-dev"
	ok.Models[0].Context = 8192
	if err := open(ok); err != nil {
		t.Fatalf("valid: %v", err)
	}
	for name, a := range map[string]Announcement{
		"long version": func() Announcement { a := sample(id, now); a.Version = strings.Repeat("v", MaxVersion+1); return a }(),
		"huge context": func() Announcement { a := sample(id, now); a.Models[0].Context = MaxContext + 1; return a }(),
		"negative":     func() Announcement { a := sample(id, now); a.Models[0].Context = -1; return a }(),
		"beat version": {Peer: id, Seq: 2, Time: now.UnixMilli(), Interval: 5000, Beat: true, State: 1, Version: "x"},
	} {
		if err := open(a); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
