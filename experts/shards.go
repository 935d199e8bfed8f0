package experts

import (
	"encoding/hex"
	"fmt"
)

// Limits on the shard summaries of one announcement.
const (
	MaxShardModels  = 8
	MaxShardLayers  = 1024
	MaxShardExperts = 1024
	MaxShardBits    = 1 << 16 // layers × experts of one model
)

// ShardSummary says which shards of one sharded Mixture-of-Experts model a
// peer holds: the dense shard (so it can run the model) and, as a bitmap,
// which (layer, expert) shards (so others can send it those experts' rows).
type ShardSummary struct {
	Model   string `json:"model"` // model ID: SHA-256 (hex) of its manifest
	Name    string `json:"name,omitempty"`
	Dense   bool   `json:"dense,omitempty"`
	Layers  int    `json:"layers"`
	Experts int    `json:"experts"`
	// Held has bit layer*Experts+expert set (LSB first) for every expert
	// shard the peer holds and serves.
	Held []byte `json:"held,omitempty"`
	// Kernels is the kernel set the peer computes these experts with, as
	// Model.Kernels ("" for peers that predate the field): spot-checks
	// compare only hosts of one set (moe.Experts.Kernels).
	Kernels string `json:"kernels,omitempty"`
}

// NewShardSummary returns a summary of model with no expert held.
func NewShardSummary(model, name string, layers, experts int) ShardSummary {
	return ShardSummary{Model: model, Name: name, Layers: layers, Experts: experts, Held: make([]byte, (layers*experts+7)/8)}
}

// Set marks (layer, expert) held.
func (s *ShardSummary) Set(layer, expert int) {
	if layer >= 0 && layer < s.Layers && expert >= 0 && expert < s.Experts {
		i := layer*s.Experts + expert
		s.Held[i/8] |= 1 << (i % 8)
	}
}

// Has reports whether (layer, expert) is held.
func (s *ShardSummary) Has(layer, expert int) bool {
	if layer < 0 || layer >= s.Layers || expert < 0 || expert >= s.Experts {
		return false
	}
	i := layer*s.Experts + expert
	return i/8 < len(s.Held) && s.Held[i/8]&(1<<(i%8)) != 0
}

// Count returns the number of expert shards held.
func (s *ShardSummary) Count() int {
	n := 0
	for l := range s.Layers {
		for e := range s.Experts {
			if s.Has(l, e) {
				n++
			}
		}
	}
	return n
}

func (s *ShardSummary) validate() error {
	if b, err := hex.DecodeString(s.Model); err != nil || len(b) != 32 {
		return fmt.Errorf("shard model ID %q is not 64 hex digits", trunc(s.Model))
	}
	if len(s.Name) > MaxString || len(s.Kernels) > MaxString {
		return fmt.Errorf("shard model name or kernels too long")
	}
	if s.Layers <= 0 || s.Layers > MaxShardLayers || s.Experts <= 0 || s.Experts > MaxShardExperts || s.Layers*s.Experts > MaxShardBits {
		return fmt.Errorf("shard model of %d layers × %d experts", s.Layers, s.Experts)
	}
	if len(s.Held) != (s.Layers*s.Experts+7)/8 {
		return fmt.Errorf("shard bitmap of %d bytes for %d layers × %d experts", len(s.Held), s.Layers, s.Experts)
	}
	return nil
}

// HostsExpert reports whether the entry holds expert (layer, expert) of model.
func (e *Entry) HostsExpert(model string, layer, expert int) bool {
	for i := range e.Shards {
		if e.Shards[i].Model == model {
			return e.Shards[i].Has(layer, expert)
		}
	}
	return false
}

// ShardsOf returns the entry's summary of model, if any.
func (e *Entry) ShardsOf(model string) (ShardSummary, bool) {
	for _, s := range e.Shards {
		if s.Model == model {
			return s, true
		}
	}
	return ShardSummary{}, false
}
