package moe

import (
	"fmt"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference/llama"
)

// LoadDense builds the model of the dense shard of model id in store: every
// tensor but the experts', which Experts then supplies. The store verifies the
// file; LoadDense checks that the engine reads it with the shape its manifest
// states, or fails with shard.ErrCorrupt. The model maps the file (the store
// never rewrites a shard in place); the caller closes it.
func LoadDense(store *shard.Store, id string) (*llama.Model, error) {
	m, ok := store.Manifest(id)
	if !ok {
		return nil, fmt.Errorf("model %s: %w", id, shard.ErrNotFound)
	}
	f, _, err := store.OpenDense(id)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	md, err := llama.LoadFile(f, llama.ReadOptions{WithoutExperts: true})
	if err != nil {
		return nil, fmt.Errorf("load dense shard of %s: %w", id, err)
	}
	c, want := md.Config, m.Shape
	if c.Embedding != want.Embedding || c.Layers != want.Layers || c.FeedForward != want.FeedForward ||
		c.Experts != want.Experts || c.ExpertsUsed != want.ExpertsUsed {
		md.Close()
		return nil, fmt.Errorf("dense shard of %s: shape %d/%d/%d/%d/%d disagrees with its manifest: %w",
			id, c.Embedding, c.Layers, c.FeedForward, c.Experts, c.ExpertsUsed, shard.ErrCorrupt)
	}
	return md, nil
}

// LoadExpert builds expert e of layer l of model id from its shard in store,
// which the store verifies.
func LoadExpert(store *shard.Store, id string, layer, expert int) (*llama.Expert, error) {
	ts, shape, err := store.ReadExpert(id, layer, expert)
	if err != nil {
		return nil, err
	}
	var xs [3]llama.ExpertTensor
	for i, t := range ts {
		xs[i] = llama.ExpertTensor{Type: t.TypeID, Data: t.Data}
	}
	cfg := llama.Config{Embedding: shape.Embedding, FeedForward: shape.FeedForward}
	x, err := llama.NewExpert(cfg, xs[0], xs[1], xs[2])
	if err != nil {
		return nil, fmt.Errorf("load layer %d expert %d of %s: %w", layer, expert, id, err)
	}
	return x, nil
}
