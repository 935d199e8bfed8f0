package ollamatest

import (
	"context"
	"testing"

	"github.com/ollama/ollama/api"
)

// CreateWithRenderer imports the GGUF file ggufPath as the model name with
// one of Ollama's built-in renderers and parsers (a Modelfile's RENDERER and
// PARSER, such as "qwen3-vl-instruct"), which render tools and read tool
// calls the way the model family's own template does.
func (s *Server) CreateWithRenderer(t testing.TB, name, ggufPath, renderer, parser string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	digest, err := s.upload(ctx, ggufPath)
	if err != nil {
		t.Fatalf("ollamatest: upload %s: %v", ggufPath, err)
	}
	req := &api.CreateRequest{Model: name, Files: map[string]string{"model.gguf": digest}, Renderer: renderer, Parser: parser, Parameters: parameters}
	var last string
	if err := s.client.Create(ctx, req, func(p api.ProgressResponse) error { last = p.Status; return nil }); err != nil {
		t.Fatalf("ollamatest: create %s: %v", name, err)
	}
	if last != "success" {
		t.Fatalf("ollamatest: create %s: ended with status %q", name, last)
	}
}
