package inference

import "testing"

func TestParseParams(t *testing.T) {
	cases := map[string]int64{"270M": 270_000_000, "3.2B": 3_200_000_000, " 8b ": 8_000_000_000, "1.5T": 1_500_000_000_000, "": 0, "lots": 0, "-1B": 0, "123": 123}
	for in, want := range cases {
		if got := ParseParams(in); got != want {
			t.Errorf("ParseParams(%q) = %d, want %d", in, got, want)
		}
	}
}
