package mwpeer

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"

	ollama "github.com/ollama/ollama/api"

	"github.com/mwpeer/mwpeer/experts"
)

type modelLister interface {
	list(ctx context.Context) ([]experts.Model, error)
}

func newModelLister(cfg Config) modelLister {
	switch cfg.Engine {
	case EngineSynthetic:
		return syntheticModels(cfg.Models)
	case EngineOllama:
		return ollamaModels{url: cfg.Ollama}
	default:
		return noModels{}
	}
}

type noModels struct{}

func (noModels) list(context.Context) ([]experts.Model, error) {
	return nil, fmt.Errorf("engine none")
}

// syntheticModels are served by the synthetic backend: fake models that
// exist to measure the overlay, never to answer real questions.
type syntheticModels []string

func (s syntheticModels) list(context.Context) ([]experts.Model, error) {
	names := []string(s)
	if len(names) == 0 {
		names = []string{"synthetic"}
	}
	out := make([]experts.Model, len(names))
	for i, n := range names {
		out[i] = experts.Model{Name: n, Engine: EngineSynthetic, Family: "synthetic"}
	}
	return out, nil
}

type ollamaModels struct{ url string }

func (o ollamaModels) list(ctx context.Context) ([]experts.Model, error) {
	u, err := url.Parse(o.url)
	if err != nil {
		return nil, fmt.Errorf("bad Ollama URL %q: %v", o.url, err)
	}
	resp, err := ollama.NewClient(u, http.DefaultClient).List(ctx)
	if err != nil {
		return nil, fmt.Errorf("no Ollama at %s (%v)", o.url, err)
	}
	out := make([]experts.Model, 0, len(resp.Models))
	for _, m := range resp.Models {
		out = append(out, experts.Model{Name: m.Name, Digest: m.Digest, Size: m.Size, Family: m.Details.Family, Engine: EngineOllama})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
