package randmodel

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/ollama/ollama/fs/ggml"
)

// TestDeepSeek2File: Ollama's decoder reads TinyDeepSeek2's keys as
// written and finds every tensor Tensors lists, with its shape.
func TestDeepSeek2File(t *testing.T) {
	c := TinyDeepSeek2()
	var buf bytes.Buffer
	if err := Write(&buf, c); err != nil {
		t.Fatal(err)
	}
	f, err := ggml.Decode(bytes.NewReader(buf.Bytes()), -1)
	if err != nil {
		t.Fatal(err)
	}
	kv := f.KV()
	for key, want := range map[string]uint32{
		"attention.key_length": 32, "attention.value_length": 24, "attention.q_lora_rank": 48,
		"attention.kv_lora_rank": 32, "rope.dimension_count": 16, "leading_dense_block_count": 1,
		"feed_forward_length": 96, "expert_feed_forward_length": 48, "expert_shared_count": 2,
		"expert_count": 8, "expert_used_count": 2, "expert_gating_func": 2,
		"rope.scaling.original_context_length": 64,
	} {
		if got := kv.Uint(key); got != want {
			t.Errorf("%s = %d, want %d", key, got, want)
		}
	}
	if kv.Float("expert_weights_scale") != 1.5 || !kv.Bool("expert_weights_norm") || kv.Float("rope.scaling.factor") != 4 ||
		kv.String("rope.scaling.type") != "yarn" || kv.String("tokenizer.ggml.pre") != "deepseek-v3" {
		t.Errorf("routing, RoPE or pre-tokenizer keys wrong: %v", kv)
	}
	want, err := c.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string][]uint64)
	for _, tt := range f.Tensors().Items() {
		got[tt.Name] = tt.Shape
	}
	if len(got) != len(want) {
		t.Errorf("%d tensors in the file, Tensors lists %d", len(got), len(want))
	}
	for _, tt := range want {
		if s, ok := got[tt.Name]; !ok || !slices.Equal(s, tt.Shape) {
			t.Errorf("tensor %s: shape %v in the file, want %v", tt.Name, s, tt.Shape)
		}
	}
	for _, name := range []string{"blk.0.ffn_gate.weight", "blk.1.ffn_gate_exps.weight", "blk.2.exp_probs_b.bias", "blk.1.attn_q_a.weight"} {
		if _, ok := got[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
}

func TestInvalidDeepSeek2Configs(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    func() Config
		want string
	}{
		{"deepseek2 shape on llama", func() Config { c := Tiny(); c.DeepSeek2.KVLoraRank = 8; return c }, "DeepSeek2 set for llama"},
		{"kv heads", func() Config { c := TinyDeepSeek2(); c.KVHeads = 2; return c }, "KVHeads"},
		{"no latent", func() Config { c := TinyDeepSeek2(); c.DeepSeek2.KVLoraRank = 0; return c }, "bad deepseek2 shape"},
		{"dense layers beyond the model", func() Config { c := TinyDeepSeek2(); c.DeepSeek2.LeadingDense = 4; return c }, "bad deepseek2 shape"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(&bytes.Buffer{}, tc.c())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Write = %v, want an error about %q", err, tc.want)
			}
		})
	}
}
