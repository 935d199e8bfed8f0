package sharding

import "testing"

func TestParseHostSpecs(t *testing.T) {
	specs, err := ParseHostSpecs("abc12345@0-2,5:2,5; def45678@dense ;ghi;jkl@*:1")
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 4 {
		t.Fatalf("%d specs", len(specs))
	}
	a := specs[0]
	if a.Model != "abc12345" || a.Dense || !a.Wants(1, 5) || !a.Wants(5, 2) || a.Wants(3, 2) || a.Wants(0, 3) {
		t.Fatalf("first spec %+v", a)
	}
	if !specs[1].Dense || specs[1].Wants(0, 0) {
		t.Fatalf("dense spec %+v", specs[1])
	}
	if !specs[2].Dense || !specs[2].Wants(100, 7) || specs[2].String() != "ghi" {
		t.Fatalf("whole-model spec %+v", specs[2])
	}
	if !specs[3].Wants(40, 1) || specs[3].Wants(40, 2) || specs[3].String() != "jkl@*:1" {
		t.Fatalf("all-layers spec %+v %s", specs[3], specs[3])
	}
	for _, bad := range []string{"@0:1", "m@0", "m@x:1", "m@3-1:1", "m@0:-1", "m@0:99999", "a b@0:1", "m@:1"} {
		if _, err := ParseHostSpecs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
