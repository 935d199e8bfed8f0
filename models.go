package mwpeer

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// BuiltinModel is the model a peer serves with --engine embedded and no
// --model-file (see randmodel.BuiltinName).
const BuiltinModel = randmodel.BuiltinName

// newBackend builds the engine cfg names; nil for EngineNone.
func newBackend(cfg Config) (inference.Backend, error) {
	if cfg.Backend != nil {
		return cfg.Backend, nil
	}
	switch cfg.Engine {
	case EngineSynthetic:
		sc := cfg.Synthetic
		if len(sc.Models) == 0 {
			sc.Models = cfg.Models
		}
		return inference.NewSynthetic(sc), nil
	case EngineEmbedded:
		path := cfg.ModelFile
		if path == "" {
			var err error
			if path, err = randmodel.WriteBuiltin(cfg.DataDir); err != nil {
				return nil, err
			}
		}
		// One generation at a time: each already uses every core.
		return llama.NewBackend(path, llama.BackendOptions{Capacity: 1, QueueWait: 5 * time.Second})
	case EngineOllama:
		oc := inference.DefaultOllamaConfig()
		oc.URL = cfg.Ollama
		oc.Concurrency = 0 // the peer's priority queue bounds calls
		return inference.NewOllama(oc)
	}
	return nil, nil
}

// counted wraps a backend to count requests in progress (the load this
// peer announces), whether they came from its own API or from the swarm.
type counted struct {
	inference.Backend
	load *atomic.Int64
	// done counts the requests finished and tokens generated (prompt and
	// completion) since start: /api/status reports them.
	done *generated
}

type generated struct{ requests, tokens atomic.Int64 }

func (c counted) Generate(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	c.load.Add(1)
	defer c.load.Add(-1)
	f, err := c.Backend.Generate(ctx, req, emit)
	if c.done != nil {
		c.done.requests.Add(1)
		c.done.tokens.Add(int64(f.PromptTokens + f.CompletionTokens))
	}
	return f, err
}
