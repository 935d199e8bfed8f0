package receipt

import "testing"

func TestRecentIDsAreBounded(t *testing.T) {
	s := NewRecent(3)
	id := func(b byte) ID { return ID{b} }
	for _, b := range []byte{1, 2, 3} {
		if !s.Add(id(b)) {
			t.Fatalf("%d: present before it was added", b)
		}
	}
	if s.Add(id(1)) {
		t.Fatal("1 added twice")
	}
	s.Add(id(4)) // evicts 1
	if s.Contains(id(1)) || !s.Contains(id(4)) || !s.Add(id(1)) {
		t.Fatal("the oldest ID was not evicted")
	}
	s.Forget(id(1))
	if s.Contains(id(1)) || !s.Add(id(1)) {
		t.Fatal("a forgotten ID is still there")
	}
	// Forgetting cleared 1's old slot: evicting it does not drop the 1
	// added again.
	s.Add(id(5))
	s.Add(id(6))
	if !s.Contains(id(1)) {
		t.Fatal("re-added ID lost to the eviction of its old slot")
	}
	if len(s.ids) > 3 || len(s.ring) > 3 {
		t.Fatalf("%d IDs, %d slots", len(s.ids), len(s.ring))
	}
}
