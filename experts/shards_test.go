package experts

import (
	"strings"
	"testing"
	"time"
)

// TestShardSummaries: a summary says exactly which experts are held, the
// largest allowed set fits in an announcement, and malformed ones are
// rejected with a reason.
func TestShardSummaries(t *testing.T) {
	key, id := newKey(t)
	now := time.Now()
	model := strings.Repeat("ab", 32)
	s := NewShardSummary(model, "moe", 32, 8)
	s.Set(0, 2)
	s.Set(31, 7)
	s.Set(32, 0) // outside: ignored
	if !s.Has(0, 2) || !s.Has(31, 7) || s.Has(0, 3) || s.Has(32, 0) || s.Count() != 2 {
		t.Fatalf("summary %v: count %d", s.Held, s.Count())
	}
	a := sample(id, now)
	for range MaxShardModels {
		full := NewShardSummary(model, "moe", 32, 8)
		for l := range 32 {
			for e := range 8 {
				full.Set(l, e)
			}
		}
		a.Shards = append(a.Shards, full)
	}
	data, err := Seal(&a, key)
	if err != nil {
		t.Fatalf("largest shard summaries do not fit: %v", err)
	}
	got, err := Open(data, now)
	if err != nil {
		t.Fatal(err)
	}
	e := Entry{Announcement: *got}
	if !e.HostsExpert(model, 31, 7) || e.HostsExpert(model, 32, 0) || e.HostsExpert(strings.Repeat("cd", 32), 0, 0) {
		t.Fatal("HostsExpert disagrees with the summary")
	}
	for name, bad := range map[string]func(*ShardSummary){
		"model ID":    func(s *ShardSummary) { s.Model = "xyz" },
		"bitmap size": func(s *ShardSummary) { s.Held = s.Held[:1] },
		"no layers":   func(s *ShardSummary) { s.Layers = 0 },
		"too many":    func(s *ShardSummary) { s.Layers, s.Experts = 1024, 1024; s.Held = make([]byte, 1024*1024/8) },
	} {
		b := sample(id, now)
		sm := NewShardSummary(model, "moe", 4, 4)
		bad(&sm)
		b.Shards = []ShardSummary{sm}
		data, err := Seal(&b, key)
		if err != nil {
			continue // too big to seal is a rejection too
		}
		if _, err := Open(data, now); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	b := sample(id, now)
	b.Shards = make([]ShardSummary, MaxShardModels+1)
	for i := range b.Shards {
		b.Shards[i] = NewShardSummary(model, "m", 2, 2)
	}
	if data, err := Seal(&b, key); err == nil {
		if _, err := Open(data, now); err == nil {
			t.Error("too many shard models accepted")
		}
	}
}
