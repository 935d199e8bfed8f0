package inference

import (
	"context"
	"fmt"
	"sync"
)

// Multi serves the models of several backends as one backend: a request goes
// to the backend that listed its model. Backends can be added while it
// serves (a sharded model appears once its shards are fetched).
type Multi struct {
	mu       sync.RWMutex
	backends []Backend
	byModel  map[string]Backend
}

var _ Backend = (*Multi)(nil)

// NewMulti returns a Multi over bs (nil entries are skipped).
func NewMulti(bs ...Backend) *Multi {
	m := &Multi{byModel: make(map[string]Backend)}
	for _, b := range bs {
		if b != nil {
			m.backends = append(m.backends, b)
		}
	}
	return m
}

// Add serves b's models too.
func (m *Multi) Add(b Backend) {
	m.mu.Lock()
	m.backends = append(m.backends, b)
	m.mu.Unlock()
}

// Backends returns the backends in the order they were added.
func (m *Multi) Backends() []Backend {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]Backend(nil), m.backends...)
}

// Name returns "multi".
func (m *Multi) Name() string { return "multi" }

// Models lists every backend's models; a model listed by two backends is
// served by the first. A backend that fails to list is skipped unless all do.
func (m *Multi) Models(ctx context.Context) ([]ModelInfo, error) {
	var out []ModelInfo
	by := make(map[string]Backend)
	var firstErr error
	bs := m.Backends()
	for _, b := range bs {
		ms, err := b.Models(ctx)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", b.Name(), err)
			}
			continue
		}
		for _, mi := range ms {
			if _, dup := by[mi.Name]; !dup {
				by[mi.Name] = b
				out = append(out, mi)
			}
		}
	}
	m.mu.Lock()
	m.byModel = by
	m.mu.Unlock()
	if len(out) == 0 && firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// Generate runs req on the backend serving req.Model.
func (m *Multi) Generate(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
	m.mu.RLock()
	b := m.byModel[req.Model]
	m.mu.RUnlock()
	if b == nil {
		if _, err := m.Models(ctx); err != nil {
			return Final{}, err
		}
		m.mu.RLock()
		b = m.byModel[req.Model]
		m.mu.RUnlock()
	}
	if b == nil {
		return Final{}, fmt.Errorf("%w: %q", ErrUnknownModel, req.Model)
	}
	return b.Generate(ctx, req, emit)
}
