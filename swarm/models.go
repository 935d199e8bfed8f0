package swarm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
)

// ListModels asks the backend what it serves, in the catalog's terms.
func ListModels(ctx context.Context, b inference.Backend, engine string) ([]experts.Model, error) {
	if b == nil {
		return nil, fmt.Errorf("engine %q serves no models", engine)
	}
	if m, ok := b.(*inference.Multi); ok {
		var out []experts.Model
		var errs []error
		for _, sub := range m.Backends() {
			ms, err := ListModels(ctx, sub, engine)
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
		if engine == "ollama" {
			return nil, fmt.Errorf("no Ollama answering (%v)", err)
		}
		return nil, err
	}
	out := make([]experts.Model, 0, len(ms))
	for _, m := range ms {
		out = append(out, experts.Model{Name: m.Name, Digest: m.Digest, Size: m.Size, Family: m.Family, Engine: b.Name(), Kernels: m.Kernels, Params: m.Params, Context: m.Context, Capabilities: m.Capabilities})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
