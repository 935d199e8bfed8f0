package mwpeer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ollama "github.com/ollama/ollama/api"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// ollamaSwarm starts peer A serving the Ollama at url and peer B serving
// nothing, and waits until B knows of A's model. Clients talk to B.
func ollamaSwarm(t *testing.T, url, model string) (a, b *Peer) {
	t.Helper()
	peers := startSwarm(t, 2, func(i int, c *Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.Models = nil
		if i == 0 {
			c.Engine, c.Ollama = EngineOllama, url
		} else {
			c.Engine = EngineNone
		}
	})
	wait.For(t, slow(15*time.Second), "peer B learns that A serves "+model, func() error {
		for _, m := range peers[1].Router().Models() {
			if m.ID == model {
				return nil
			}
		}
		return context.DeadlineExceeded
	})
	return peers[0], peers[1]
}

// ollamaClient is Ollama's own Go client pointed at p.
func ollamaClient(t *testing.T, p *Peer) *ollama.Client {
	u, err := url.Parse("http://" + p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	return ollama.NewClient(u, http.DefaultClient)
}

// TestOllamaAPIWithOllamasClient: the Ollama API of a peer, through
// Ollama's Go client, answered by the swarm (the model is served by another
// peer, in front of an Ollama-compatible fake).
func TestOllamaAPIWithOllamasClient(t *testing.T) {
	fake := ollamatest.StartFake(t)
	fake.Tokens = 3
	a, b := ollamaSwarm(t, fake.URL, ollamatest.FakeModel)
	c := ollamaClient(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if v, err := c.Version(ctx); err != nil || v != api.OllamaVersion {
		t.Fatalf("version %q, %v", v, err)
	}
	list, err := c.List(ctx)
	if err != nil || len(list.Models) != 2 || list.Models[1].Name != ollamatest.FakeModel || len(list.Models[1].Digest) != 64 {
		t.Fatalf("list %+v, %v", list, err)
	}
	show, err := c.Show(ctx, &ollama.ShowRequest{Model: "fake"}) // no tag: :latest, as Ollama does
	if err != nil || fmt.Sprint(show.Capabilities) != "[completion tools]" {
		t.Fatalf("show %+v, %v", show, err)
	}
	var se ollama.StatusError
	if _, err := c.Show(ctx, &ollama.ShowRequest{Model: "nowhere"}); !errors.As(err, &se) || se.StatusCode != 404 || !strings.Contains(se.ErrorMessage, "served now: fake-embed:latest, fake:latest") && !strings.Contains(se.ErrorMessage, "served now: fake:latest, fake-embed:latest") {
		t.Fatalf("show of an unknown model: %v", err)
	}

	// Chat, streamed (the client's default): one line per token, then done.
	var parts []string
	var last ollama.ChatResponse
	err = c.Chat(ctx, &ollama.ChatRequest{Model: "fake", Messages: []ollama.Message{{Role: "user", Content: "hi"}}}, func(r ollama.ChatResponse) error {
		if !r.Done {
			parts = append(parts, r.Message.Content)
		}
		last = r
		return nil
	})
	if err != nil || strings.Join(parts, "") != "tok tok tok " || !last.Done || last.DoneReason != "stop" || last.EvalCount != 3 {
		t.Fatalf("chat: parts %q, last %+v, %v", parts, last, err)
	}
	// Generate, whole.
	stream := false
	var gen []ollama.GenerateResponse
	err = c.Generate(ctx, &ollama.GenerateRequest{Model: "fake:latest", Prompt: "hi", Stream: &stream, Options: map[string]any{"num_predict": 3, "temperature": 0}},
		func(r ollama.GenerateResponse) error { gen = append(gen, r); return nil })
	if err != nil || len(gen) != 1 || gen[0].Response != "tok tok tok " || !gen[0].Done {
		t.Fatalf("generate: %+v, %v", gen, err)
	}
	// Loading a model (an empty chat) answers at once.
	var loaded ollama.ChatResponse
	if err := c.Chat(ctx, &ollama.ChatRequest{Model: "fake"}, func(r ollama.ChatResponse) error { loaded = r; return nil }); err != nil || loaded.DoneReason != "load" {
		t.Fatalf("load: %+v, %v", loaded, err)
	}
	// Tools go to the model and its call comes back in Ollama's shape.
	var tools ollama.Tools
	if err := json.Unmarshal([]byte(`[{"type":"function","function":{"name":"get_weather","description":"weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]`), &tools); err != nil {
		t.Fatal(err)
	}
	var calls []ollama.ToolCall
	err = c.Chat(ctx, &ollama.ChatRequest{Model: "fake", Tools: tools, Messages: []ollama.Message{{Role: "user", Content: "weather in Paris?"}}},
		func(r ollama.ChatResponse) error { calls = append(calls, r.Message.ToolCalls...); return nil })
	if err != nil || len(calls) != 1 || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments.String() != `{"x":1}` {
		t.Fatalf("tool calls %+v, %v", calls, err)
	}
	// Embeddings, from the peer serving the embedding model.
	emb, err := c.Embed(ctx, &ollama.EmbedRequest{Model: "fake-embed", Input: []string{"a", "abc"}})
	if err != nil || fmt.Sprint(emb.Embeddings) != "[[1 1 0] [3 1 0]]" {
		t.Fatalf("embed: %+v, %v", emb, err)
	}
	if _, err := c.Embed(ctx, &ollama.EmbedRequest{Model: "fake", Input: "a"}); !errors.As(err, &se) || se.StatusCode != 400 {
		t.Fatalf("embed with a chat model: %v", err)
	}
	// A model nobody serves is a 404 that says what is served.
	err = c.Chat(ctx, &ollama.ChatRequest{Model: "nowhere", Messages: []ollama.Message{{Role: "user", Content: "hi"}}}, func(ollama.ChatResponse) error { return nil })
	if !errors.As(err, &se) || se.StatusCode != 404 {
		t.Fatalf("chat with an unknown model: %v", err)
	}
	// ps: A runs the model, B runs nothing.
	if ps, err := ollamaClient(t, a).ListRunning(ctx); err != nil || len(ps.Models) != 2 || ps.Models[1].Name != ollamatest.FakeModel {
		t.Fatalf("ps on A: %+v, %v", ps, err)
	}
	if ps, err := c.ListRunning(ctx); err != nil || len(ps.Models) != 0 {
		t.Fatalf("ps on B: %+v, %v", ps, err)
	}
	// What a peer cannot do says where to do it.
	err = c.Pull(ctx, &ollama.PullRequest{Model: "llama3"}, func(ollama.ProgressResponse) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "ollama pull") {
		t.Fatalf("pull: %v", err)
	}
	// mwpeer's own /api is still there.
	resp, err := http.Get("http://" + b.HTTPAddr() + "/api/status")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/api/status: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestOllamaCLIThroughTheSwarm runs the real ollama CLI against peer B
// (OLLAMA_HOST=B), while the model is served by a real Ollama behind peer
// A: list, show, run (streamed), and a chat whose greedy answer is exactly
// Ollama's own.
func TestOllamaCLIThroughTheSwarm(t *testing.T) {
	srv := ollamatest.Start(t) // skips without MWPEER_OLLAMA
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := randmodel.WriteFile(path, randmodel.Tiny()); err != nil {
		t.Fatal(err)
	}
	srv.CreateModel(t, "tiny", path)
	const model = "tiny:latest"
	a, b := ollamaSwarm(t, srv.URL, model)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	home := t.TempDir()
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, srv.Binary, args...)
		cmd.Env = append(os.Environ(), "OLLAMA_HOST="+b.HTTPAddr(), "HOME="+home, "NO_COLOR=1", "TERM=dumb")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ollama %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := cli("list"); !strings.Contains(out, model) {
		t.Fatalf("ollama list:\n%s", out)
	}
	if out := cli("show", "tiny"); !strings.Contains(out, "completion") || !strings.Contains(out, "context length") {
		t.Fatalf("ollama show tiny:\n%s", out)
	}
	before := a.Status().Generated.Requests
	if out := cli("run", "tiny", "Hello"); strings.TrimSpace(out) == "" {
		t.Fatal("ollama run answered nothing")
	}
	if a.Status().Generated.Requests <= before {
		t.Fatal("ollama run was not answered by peer A's Ollama")
	}

	// Chat through the swarm equals Ollama's own greedy answer.
	opts := map[string]any{"temperature": 0, "num_predict": 16}
	msgs := []ollama.Message{{Role: "user", Content: "Hello"}}
	var direct, swarm strings.Builder
	if err := srv.Client().Chat(ctx, &ollama.ChatRequest{Model: model, Messages: msgs, Options: opts},
		func(r ollama.ChatResponse) error { direct.WriteString(r.Message.Content); return nil }); err != nil {
		t.Fatal(err)
	}
	chunks := 0
	if err := ollamaClient(t, b).Chat(ctx, &ollama.ChatRequest{Model: "tiny", Messages: msgs, Options: opts},
		func(r ollama.ChatResponse) error { swarm.WriteString(r.Message.Content); chunks++; return nil }); err != nil {
		t.Fatal(err)
	}
	if direct.Len() == 0 || swarm.String() != direct.String() || chunks < 2 {
		t.Fatalf("through the swarm %q in %d chunks, Ollama itself %q", swarm.String(), chunks, direct.String())
	}
}

// TestOllamaAPIAutoNamesTheModelThatAnswered: "auto" lets routing choose,
// and the answer names the model it chose, as /v1 does.
func TestOllamaAPIAutoNamesTheModelThatAnswered(t *testing.T) {
	fake := ollamatest.StartFake(t)
	_, b := ollamaSwarm(t, fake.URL, ollamatest.FakeModel)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var names []string
	err := ollamaClient(t, b).Chat(ctx, &ollama.ChatRequest{Model: "auto", Messages: []ollama.Message{{Role: "user", Content: "hi"}}},
		func(r ollama.ChatResponse) error { names = append(names, r.Model); return nil })
	if err != nil || len(names) < 2 || names[0] != ollamatest.FakeModel || names[len(names)-1] != ollamatest.FakeModel {
		t.Fatalf("models named %q, %v; want %s throughout", names, err, ollamatest.FakeModel)
	}
}
