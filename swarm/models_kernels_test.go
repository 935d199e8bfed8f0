package swarm

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// TestEmbeddedModelsAnnounceKernels: the models a peer lists for its
// announcement carry the embedded engine's kernel set, and none for the
// synthetic engine, also when both are served together.
func TestEmbeddedModelsAnnounceKernels(t *testing.T) {
	c := randmodel.Tiny()
	c.Name = "kernels-test"
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := randmodel.WriteFile(path, c); err != nil {
		t.Fatal(err)
	}
	emb, err := llama.NewBackend(path, llama.BackendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emb.Close() })
	syn := inference.NewSynthetic(inference.SyntheticConfig{Models: []string{"syn"}})
	models, err := ListModels(context.Background(), inference.NewMulti(emb, syn), "embedded")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"kernels-test": llama.Kernels(), "syn": ""}
	if len(models) != len(want) {
		t.Fatalf("models %+v", models)
	}
	for _, m := range models {
		if k, ok := want[m.Name]; !ok || m.Kernels != k {
			t.Errorf("model %s (engine %s): kernels %q, want %q", m.Name, m.Engine, m.Kernels, k)
		}
	}
}
