package experts

import (
	"strings"
	"testing"
	"time"
)

// TestKernelsTravelAndAreBounded: a model's and a shard summary's kernel
// set cross the wire as announced, a set longer than MaxString is refused,
// and a model whose set changed is not Equal to its old self (so the
// change is announced).
func TestKernelsTravelAndAreBounded(t *testing.T) {
	key, id := newKey(t)
	now := time.Now()
	a := sample(id, now)
	a.Models[0].Engine, a.Models[0].Kernels = "embedded", "neon"
	sum := NewShardSummary(strings.Repeat("ab", 32), "moe", 2, 4)
	sum.Set(1, 3)
	sum.Kernels = "generic"
	a.Shards = []ShardSummary{sum}
	data, err := Seal(&a, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(data, now)
	if err != nil {
		t.Fatal(err)
	}
	if k := got.Models[0].Kernels; k != "neon" {
		t.Fatalf("model kernels after the wire: %q", k)
	}
	if k := got.Shards[0].Kernels; k != "generic" || !got.Shards[0].Has(1, 3) {
		t.Fatalf("shard summary after the wire: %+v", got.Shards[0])
	}
	if !got.Models[0].Equal(a.Models[0]) {
		t.Fatal("the same model is not Equal after the wire")
	}
	other := a.Models[0]
	other.Kernels = "avx2"
	if other.Equal(a.Models[0]) {
		t.Fatal("models of different kernel sets are Equal: a change would not be announced")
	}
	// A name this peer does not know is a newer peer's set: accepted.
	b := sample(id, now)
	b.Models[0].Kernels = "sve2"
	if err := b.validate(); err != nil {
		t.Fatalf("unknown kernel set refused: %v", err)
	}
	long := strings.Repeat("k", MaxString+1)
	b.Models[0].Kernels = long
	if err := b.validate(); err == nil {
		t.Fatal("a model's kernel set of MaxString+1 bytes accepted")
	}
	c := sample(id, now)
	sum.Kernels = long
	c.Shards = []ShardSummary{sum}
	if err := c.validate(); err == nil {
		t.Fatal("a shard summary's kernel set of MaxString+1 bytes accepted")
	}
}
