package ollamatest

import (
	"context"
	"testing"

	"github.com/ollama/ollama/api"
)

// CreateWithTemplate imports the GGUF file ggufPath as the model name with
// a chat template of its own (a Modelfile's TEMPLATE), such as one that
// renders .Tools: Ollama then reports the model as able to call tools.
func (s *Server) CreateWithTemplate(t testing.TB, name, ggufPath, template string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	digest, err := s.upload(ctx, ggufPath)
	if err != nil {
		t.Fatalf("ollamatest: upload %s: %v", ggufPath, err)
	}
	req := &api.CreateRequest{Model: name, Files: map[string]string{"model.gguf": digest}, Template: template, Parameters: parameters}
	var last string
	if err := s.client.Create(ctx, req, func(p api.ProgressResponse) error { last = p.Status; return nil }); err != nil {
		t.Fatalf("ollamatest: create %s: %v", name, err)
	}
	if last != "success" {
		t.Fatalf("ollamatest: create %s: ended with status %q", name, last)
	}
}
