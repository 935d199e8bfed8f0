package mwpeer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// BuiltinModel is the model a peer serves with --engine embedded and no
// --model-file: a 1 MB Mixtral-style MoE (64 wide, 2 layers, 4 experts, byte
// vocabulary) with seeded random weights. It answers printable gibberish. It
// is there so a fresh machine can take part in the swarm, run the whole path
// (routing, dispatch, the engine, experts) and be measured, with nothing to
// download; real answers need a real model file or Ollama.
const BuiltinModel = "mwpeer-tiny-random"

// writeBuiltinModel writes the built-in model into the data dir (once).
func writeBuiltinModel(dataDir string) (string, error) {
	path := filepath.Join(dataDir, BuiltinModel+".gguf")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	c := randmodel.Tiny()
	c.Name = BuiltinModel
	tmp := path + ".tmp"
	if err := randmodel.WriteFile(tmp, c); err != nil {
		return "", fmt.Errorf("write built-in model: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write built-in model: %w", err)
	}
	return path, nil
}

// newBackend builds the engine cfg names; nil for EngineNone.
func newBackend(cfg Config) (inference.Backend, error) {
	switch cfg.Engine {
	case EngineSynthetic:
		sc := cfg.Synthetic
		if len(sc.Models) == 0 {
			sc.Models = cfg.Models
		}
		if sc.Capacity == 0 {
			sc.Capacity = cfg.Capacity
		}
		if sc.QueueWait == 0 {
			sc.QueueWait = 5 * time.Second
		}
		return inference.NewSynthetic(sc), nil
	case EngineEmbedded:
		path := cfg.ModelFile
		if path == "" {
			var err error
			if path, err = writeBuiltinModel(cfg.DataDir); err != nil {
				return nil, err
			}
		}
		// One generation at a time: each already uses every core.
		return llama.NewBackend(path, llama.BackendOptions{Capacity: 1, QueueWait: 5 * time.Second})
	case EngineOllama:
		oc := inference.DefaultOllamaConfig()
		oc.URL = cfg.Ollama
		oc.Concurrency = cfg.Capacity
		return inference.NewOllama(oc)
	}
	return nil, nil
}

// listModels asks the backend what it serves, in the catalog's terms.
func listModels(ctx context.Context, b inference.Backend, engine string) ([]experts.Model, error) {
	if b == nil {
		return nil, fmt.Errorf("engine %q serves no models", engine)
	}
	if m, ok := b.(*inference.Multi); ok {
		var out []experts.Model
		var errs []error
		for _, sub := range m.Backends() {
			ms, err := listModels(ctx, sub, engine)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, x := range ms {
				if !slices.ContainsFunc(out, func(y experts.Model) bool { return y.Name == x.Name }) {
					out = append(out, x)
				}
			}
		}
		if len(out) == 0 && len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return out, nil
	}
	ms, err := b.Models(ctx)
	if err != nil {
		if engine == EngineOllama {
			return nil, fmt.Errorf("no Ollama answering (%v)", err)
		}
		return nil, err
	}
	out := make([]experts.Model, 0, len(ms))
	for _, m := range ms {
		out = append(out, experts.Model{Name: m.Name, Digest: m.Digest, Size: m.Size, Family: m.Family, Engine: b.Name()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// counted wraps a backend to count requests in progress (the load this
// peer announces), whether they came from its own API or from the swarm.
type counted struct {
	inference.Backend
	load *atomic.Int64
}

func (c counted) Generate(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	c.load.Add(1)
	defer c.load.Add(-1)
	return c.Backend.Generate(ctx, req, emit)
}
