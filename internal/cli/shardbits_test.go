package cli

import (
	"testing"

	"github.com/mwpeer/mwpeer"
)

// TestShardBitsFlag: --announce-shard-bits takes auto (the default) or a
// number, and shows the default as it is typed.
func TestShardBitsFlag(t *testing.T) {
	for in, want := range map[string]int{"auto": mwpeer.AnnounceShardAuto, " AUTO ": mwpeer.AnnounceShardAuto, "0": 0, "3": 3} {
		if got, err := parseShardBits(in); err != nil || got != want {
			t.Errorf("%q: %d (%v), want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "wide", "1.5"} {
		if _, err := parseShardBits(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	if s := shardBitsString(mwpeer.DefaultConfig().AnnounceShardBits); s != "auto" {
		t.Errorf("default shown as %q", s)
	}
	if s := shardBitsString(2); s != "2" {
		t.Errorf("2 shown as %q", s)
	}
}
