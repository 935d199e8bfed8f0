package experts

import (
	"strings"
	"testing"
	"time"
)

// TestAnnouncedCapabilitiesAreBoundedAndKnown: a model's capabilities
// travel in its announcement; unknown ones and too many are refused.
func TestAnnouncedCapabilitiesAreBoundedAndKnown(t *testing.T) {
	key, id := newKey(t)
	now := time.Now()
	a := sample(id, now)
	a.Models[0].Capabilities = []string{"completion", "tools", "vision", "json"}
	data, err := Seal(&a, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(data, now)
	if err != nil {
		t.Fatal(err)
	}
	if c := got.Models[0].Capabilities; strings.Join(c, ",") != "completion,tools,vision,json" {
		t.Fatalf("capabilities after the wire: %v", c)
	}
	for _, caps := range [][]string{{"completion", "telepathy"}, strings.Split(strings.Repeat("tools,", MaxCapabilities+1), ",")} {
		b := sample(id, now)
		b.Models[0].Capabilities = caps
		if err := b.validate(); err == nil {
			t.Errorf("capabilities %v accepted", caps)
		}
	}
}
