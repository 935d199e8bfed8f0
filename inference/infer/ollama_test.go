package infer

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
)

// startOllama runs a private Ollama server (skipping the test unless
// MWPEER_OLLAMA names an ollama binary) with the tiny generated model "tiny",
// and returns a backend for it.
func startOllama(t *testing.T) *inference.Ollama {
	t.Helper()
	srv := ollamatest.Start(t)
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := randmodel.WriteFile(path, randmodel.Tiny()); err != nil {
		t.Fatal(err)
	}
	srv.CreateModel(t, "tiny", path)
	o, err := inference.NewOllama(inference.OllamaConfig{URL: srv.URL, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestOllamaOverTheWire: an Ollama backend served to another peer gives the
// same answer as locally, its errors keep their sentinels, and a serving peer
// that dies mid-answer is failed over without a seam in the text.
func TestOllamaOverTheWire(t *testing.T) {
	o := startOllama(t)
	ctx := context.Background()
	zero := 0.0
	req := inference.Request{Model: "tiny", Prompt: "hello", Raw: true, MaxTokens: 16, Temperature: &zero, Logprobs: true, TopLogprobs: 2}
	var full strings.Builder
	if _, err := o.Generate(ctx, req, collect(&full)); err != nil {
		t.Fatal(err)
	}

	t.Run("over the wire", func(t *testing.T) {
		client := newHost(t)
		h := newHost(t)
		svc := NewService(h, o, ServiceConfig{})
		defer svc.Close()
		connect(t, client, h)
		var sb strings.Builder
		if _, err := Call(ctx, client, h.ID(), req, collect(&sb)); err != nil || sb.String() != full.String() {
			t.Fatalf("err %v, text %q, want %q", err, sb.String(), full.String())
		}
		_, err := Call(ctx, client, h.ID(), inference.Request{Model: "nope", Prompt: "x"}, func(inference.Chunk) error { return nil })
		if !errors.Is(err, inference.ErrUnknownModel) {
			t.Fatalf("unknown model over the wire: %v", err)
		}
	})

	t.Run("failover", func(t *testing.T) {
		client := newHost(t)
		var peers []inference.Target
		var hosts []*serving
		// Each peer has its own inference.Ollama, as real peers do: one server
		// finishing a cancelled request must not hold up the other.
		backends := []*inference.Ollama{o, startOllama(t)}
		for i := range 2 {
			h := newHost(t)
			svc := NewService(h, backends[i], ServiceConfig{})
			defer svc.Close()
			connect(t, client, h)
			peers = append(peers, Target(client, h.ID()))
			hosts = append(hosts, &serving{h: h})
		}
		// A long answer, so that the serving host is gone well before
		// inference.Ollama finishes: a short one can arrive whole before the close.
		long := req
		long.MaxTokens = 200
		long.Logprobs, long.TopLogprobs = false, 0
		var want strings.Builder
		if _, err := o.Generate(ctx, long, collect(&want)); err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		sent := 0
		res, err := inference.Dispatch(ctx, peers[:1], peers[1:], inference.Fastest, long, func(expert string, c inference.Chunk) error {
			sb.WriteString(c.Text)
			if sent++; sent == 2 {
				hosts[0].h.Close()
			}
			return nil
		})
		if err != nil || res.Failovers != 1 || sb.String() != want.String() {
			t.Fatalf("err %v, failovers %d, text %q, want %q", err, res.Failovers, sb.String(), want.String())
		}
	})
}
