package mwpeer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go"
	"github.com/openai/openai-go/option"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// apiSwarm starts n peers with HTTP APIs; serve[i] lists the synthetic
// models peer i serves (none: engine none).
func apiSwarm(t *testing.T, serve [][]string, mod func(i int, c *Config)) []*Peer {
	t.Helper()
	peers := startSwarm(t, len(serve), func(i int, c *Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.Domains = []string{"general"}
		if len(serve[i]) == 0 {
			c.Engine = EngineNone
			c.Models = nil
		} else {
			c.Models = serve[i]
			c.Synthetic.Tokens = 12
		}
		if mod != nil {
			mod(i, c)
		}
	})
	wait.For(t, slow(10*time.Second), "every peer knows every other", func() error {
		for i, p := range peers {
			if p.Catalog.Len() != len(peers)-1 {
				return fmt.Errorf("peer %d knows %d", i, p.Catalog.Len())
			}
		}
		return nil
	})
	return peers
}

func sdk(p *Peer) openai.Client {
	return openai.NewClient(option.WithBaseURL("http://"+p.HTTPAddr()+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

// syntheticAnswer is what the synthetic backend says to req, computed
// directly, without the swarm.
func syntheticAnswer(t *testing.T, model string, tokens int, req inference.Request) string {
	t.Helper()
	b := inference.NewSynthetic(inference.SyntheticConfig{Models: []string{model}, Tokens: tokens})
	req.Model = model
	var sb strings.Builder
	if _, err := b.Generate(context.Background(), req, func(c inference.Chunk) error { sb.WriteString(c.Text); return nil }); err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

func synthetic(p *Peer) *inference.Synthetic {
	return p.backend.(counted).Backend.(*inference.Prioritized).Unwrap().(*inference.Synthetic)
}

func TestOpenAISDKAgainstSwarm(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}, {"syn-a"}, {"syn-b"}}, nil)
	client := sdk(peers[2]) // peer 2 does not serve syn-a: the swarm must
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := syntheticAnswer(t, "syn-a", 12, inference.Request{Messages: []inference.Message{{Role: "user", Content: "Say hello"}}})

	t.Run("chat", func(t *testing.T) {
		var resp *http.Response
		c, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "syn-a",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")},
		}, option.WithResponseInto(&resp))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Choices[0].Message.Content; got != want {
			t.Fatalf("answer %q, want the synthetic backend's %q", got, want)
		}
		if c.Usage.CompletionTokens != 12 || c.Choices[0].FinishReason != "stop" {
			t.Fatalf("usage %+v finish %q", c.Usage, c.Choices[0].FinishReason)
		}
		ex := resp.Header.Get("X-Mwpeer-Experts")
		if ex != peers[0].ID().String() && ex != peers[1].ID().String() {
			t.Fatalf("X-Mwpeer-Experts = %q, want peer 0 or 1", ex)
		}
	})

	t.Run("streaming chat", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:         "syn-a",
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")},
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for stream.Next() {
			acc.AddChunk(stream.Current())
			chunks++
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if got := acc.Choices[0].Message.Content; got != want {
			t.Fatalf("streamed %q, want %q", got, want)
		}
		if chunks < 12 {
			t.Fatalf("only %d chunks: not streamed token by token", chunks)
		}
		if acc.Usage.CompletionTokens != 12 {
			t.Fatalf("usage %+v", acc.Usage)
		}
	})

	t.Run("models", func(t *testing.T) {
		page, err := client.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, m := range page.Data {
			ids[m.ID] = true
		}
		if !ids["syn-a"] || !ids["syn-b"] || len(ids) != 2 {
			t.Fatalf("models %v", ids)
		}
		var raw struct {
			Data []struct {
				ID     string `json:"id"`
				Mwpeer struct {
					Peers int `json:"peers"`
				} `json:"mwpeer"`
			} `json:"data"`
		}
		getJSON(t, peers[2], "/v1/models", &raw)
		for _, m := range raw.Data {
			if (m.ID == "syn-a" && m.Mwpeer.Peers != 2) || (m.ID == "syn-b" && m.Mwpeer.Peers != 1) {
				t.Fatalf("%s served by %d peers", m.ID, m.Mwpeer.Peers)
			}
		}
	})

	t.Run("dashboard", func(t *testing.T) {
		resp, err := http.Get("http://" + peers[2].HTTPAddr() + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "/static/app.js") {
			t.Fatalf("dashboard: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		// Its script, a static file, talks to the OpenAI API of the same peer.
		js, err := http.Get("http://" + peers[2].HTTPAddr() + "/static/app.js")
		if err != nil {
			t.Fatal(err)
		}
		defer js.Body.Close()
		code, _ := io.ReadAll(js.Body)
		if js.StatusCode != 200 || !strings.Contains(string(code), "/v1/chat/completions") {
			t.Fatalf("dashboard script: %d, %d bytes", js.StatusCode, len(code))
		}
	})

	t.Run("unknown model is a 404", func(t *testing.T) {
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "no-such-model",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("want an API error, got %v", err)
		}
		if apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
			t.Fatalf("status %d code %q", apiErr.StatusCode, apiErr.Code)
		}
	})

	t.Run("text completion", func(t *testing.T) {
		c, err := client.Completions.New(ctx, openai.CompletionNewParams{
			Model:  "syn-b",
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		})
		if err != nil {
			t.Fatal(err)
		}
		wantText := syntheticAnswer(t, "syn-b", 12, inference.Request{Prompt: "Once upon a time", Raw: true})
		if c.Choices[0].Text != wantText {
			t.Fatalf("completion %q, want %q", c.Choices[0].Text, wantText)
		}
	})
}

func getJSON(t *testing.T, p *Peer, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + p.HTTPAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func postRaw(t *testing.T, p *Peer, path, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post("http://"+p.HTTPAddr()+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	data, _ := io.ReadAll(resp.Body)
	json.Unmarshal(data, &v)
	return resp.StatusCode, v
}

func TestAPIBadInput(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}, {}}, func(i int, c *Config) {
		if i == 0 {
			c.Synthetic.TTFT = 2 * time.Second
		}
	})
	p := peers[1]
	cases := []struct {
		name, path, body string
		status           int
		code, param      string
	}{
		{"bad JSON", "/v1/chat/completions", `{"model":`, 400, "invalid_request", ""},
		{"wrong type", "/v1/chat/completions", `{"model":"syn-a","messages":"hi"}`, 400, "invalid_request", "messages"},
		{"no model", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request", "model"},
		{"no messages", "/v1/chat/completions", `{"model":"syn-a","messages":[]}`, 400, "invalid_request", "messages"},
		{"bad role", "/v1/chat/completions", `{"model":"syn-a","messages":[{"role":"wizard","content":"hi"}]}`, 400, "invalid_request", "messages[0].role"},
		{"temperature out of range", "/v1/chat/completions", `{"model":"syn-a","temperature":5,"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request", "temperature"},
		{"n > 1", "/v1/chat/completions", `{"model":"syn-a","n":3,"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request", "n"},
		{"bad strategy", "/v1/chat/completions", `{"model":"syn-a","mwpeer":{"strategy":"vote"},"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request", "mwpeer.strategy"},
		{"max_tokens 0", "/v1/chat/completions", `{"model":"syn-a","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request", "max_tokens"},
		{"unknown model", "/v1/chat/completions", `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`, 404, "model_not_found", "model"},
		{"deadline", "/v1/chat/completions", `{"model":"syn-a","mwpeer":{"timeout_ms":200},"messages":[{"role":"user","content":"hi"}]}`, 504, "timeout", ""},
		{"prompt list", "/v1/completions", `{"model":"syn-a","prompt":["a","b"]}`, 400, "invalid_request", "prompt"},
		{"no endpoint", "/v1/audio/speech", `{}`, 404, "not_found", ""},
		{"embeddings without a model", "/v1/embeddings", `{"input":"x"}`, 400, "invalid_request", "model"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := postRaw(t, p, c.path, c.body)
			if status != c.status {
				t.Fatalf("status %d, want %d: %v", status, c.status, body)
			}
			e, _ := body["error"].(map[string]any)
			if e == nil || e["message"] == "" || e["type"] == nil {
				t.Fatalf("not an OpenAI error: %v", body)
			}
			if e["code"] != c.code {
				t.Fatalf("code %v, want %s", e["code"], c.code)
			}
			if c.param != "" && e["param"] != c.param {
				t.Fatalf("param %v, want %s", e["param"], c.param)
			}
		})
	}
	t.Run("wrong method", func(t *testing.T) {
		resp, err := http.Get("http://" + p.HTTPAddr() + "/v1/chat/completions")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		if resp.StatusCode != 405 || body["error"] == nil || resp.Header.Get("Allow") != "POST" {
			t.Fatalf("status %d allow %q body %v", resp.StatusCode, resp.Header.Get("Allow"), body)
		}
	})
	t.Run("oversized body", func(t *testing.T) {
		big := `{"model":"syn-a","messages":[{"role":"user","content":"` + strings.Repeat("x", 5<<20) + `"}]}`
		status, body := postRaw(t, p, "/v1/chat/completions", big)
		if status != 413 || body["error"] == nil {
			t.Fatalf("status %d body %v", status, body)
		}
	})
}

// TestAPIFloodBeyondCapacity sends many more concurrent requests than the
// only serving peer accepts: each gets an answer or a 503, and the peers
// stay up.
func TestAPIFloodBeyondCapacity(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}, {}}, func(i int, c *Config) {
		c.Capacity = 1
		c.Synthetic.TTFT = 100 * time.Millisecond
		c.QueueWait = 150 * time.Millisecond
	})
	const n = 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, body := postRaw(t, peers[1], "/v1/chat/completions", `{"model":"syn-a","messages":[{"role":"user","content":"hi"}]}`)
			if status != 200 && body["error"] == nil {
				t.Errorf("status %d without an OpenAI error body", status)
			}
			mu.Lock()
			counts[status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts[200]+counts[503] != n {
		t.Fatalf("statuses %v: want only 200 and 503", counts)
	}
	if counts[200] == 0 || counts[503] == 0 {
		t.Fatalf("statuses %v: want some answered and some refused", counts)
	}
	// Still serving afterwards.
	if status, body := postRaw(t, peers[1], "/v1/chat/completions", `{"model":"syn-a","messages":[{"role":"user","content":"hi"}]}`); status != 200 {
		t.Fatalf("after the flood: %d %v", status, body)
	}
	t.Logf("flood of %d: %v", n, counts)
}

// streamChat posts a streaming chat request and calls onChunk for each
// content delta; it returns the text, the experts header and the final
// mwpeer object.
func streamChat(t *testing.T, p *Peer, body string, onChunk func(n int, expert string)) (string, string, map[string]any) {
	t.Helper()
	resp, err := http.Post("http://"+p.HTTPAddr()+"/v1/chat/completions", "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		data, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, data)
	}
	var text strings.Builder
	var info map[string]any
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			return text.String(), resp.Header.Get("X-Mwpeer-Experts"), info
		}
		var ev struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Mwpeer map[string]any `json:"mwpeer"`
			Error  map[string]any `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("bad event %q: %v", line, err)
		}
		if ev.Error != nil {
			t.Fatalf("stream error: %v", ev.Error)
		}
		for _, c := range ev.Choices {
			if c.Delta.Content != "" {
				text.WriteString(c.Delta.Content)
				n++
				if onChunk != nil {
					onChunk(n, resp.Header.Get("X-Mwpeer-Experts"))
				}
			}
		}
		if ev.Mwpeer != nil {
			info = ev.Mwpeer
		}
	}
	t.Fatalf("stream ended without [DONE]: %v", sc.Err())
	return "", "", nil
}

// TestFailoverMidStream kills the serving peer after a few tokens: the
// client still receives the whole answer, continued by the other expert.
func TestFailoverMidStream(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}, {"syn-a"}, {}}, func(i int, c *Config) {
		c.Synthetic.Tokens = 40
		c.Synthetic.Rate = 40
	})
	client := peers[2]
	want := syntheticAnswer(t, "syn-a", 40, inference.Request{Messages: []inference.Message{{Role: "user", Content: "tell me"}}})
	byID := map[string]*Peer{peers[0].ID().String(): peers[0], peers[1].ID().String(): peers[1]}
	var killed *Peer
	got, first, info := streamChat(t, client, `{"model":"syn-a","stream":true,"mwpeer":{"k":1},"messages":[{"role":"user","content":"tell me"}]}`, func(n int, expert string) {
		if n == 10 && killed == nil {
			killed = byID[expert]
			if killed == nil {
				t.Errorf("unknown expert")
				return
			}
			go killed.crash()
		}
	})
	if killed == nil {
		t.Fatal("no expert was killed")
	}
	if got != want {
		t.Fatalf("after failover the client got\n%q\nwant\n%q", got, want)
	}
	if first != killed.ID().String() {
		t.Fatalf("header names %s, killed %s", first, killed.ID())
	}
	if fo, _ := info["failovers"].(float64); fo != 1 {
		t.Fatalf("failovers = %v, want 1 (%v)", info["failovers"], info)
	}
	experts, _ := info["experts"].([]any)
	if len(experts) != 2 || experts[0] == experts[1] {
		t.Fatalf("experts %v: want the killed one then the other", experts)
	}
}

// TestFastestAnswersAtTheFastSpeedAndCancelsTheSlow asks two experts, one
// slow to start and one fast: the answer comes at the fast one's speed and
// the slow one's backend sees its call cancelled.
func TestFastestAnswersAtTheFastSpeedAndCancelsTheSlow(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}, {"syn-a"}, {}}, func(i int, c *Config) {
		switch i {
		case 0:
			c.Synthetic.TTFT = 3 * time.Second
		case 1:
			// Not instant either, so the slow expert's call surely starts
			// before the race is decided and there is something to cancel.
			c.Synthetic.TTFT = 300 * time.Millisecond
		}
	})
	slowPeer, fast := peers[0], peers[1]
	start := time.Now()
	text, expert, info := streamChat(t, peers[2], `{"model":"syn-a","stream":true,"mwpeer":{"k":2,"strategy":"fastest"},"messages":[{"role":"user","content":"race"}]}`, nil)
	took := time.Since(start)
	if expert != fast.ID().String() {
		t.Fatalf("answered by %s, want the fast peer %s", expert, fast.ID())
	}
	if took > 2*time.Second {
		t.Fatalf("answer took %s: waited for the slow expert (3 s to its first token)", took)
	}
	if text == "" || info == nil {
		t.Fatalf("text %q info %v", text, info)
	}
	wait.For(t, slow(3*time.Second), "slow expert's backend sees the cancel", func() error {
		if synthetic(slowPeer).Cancellations() == 0 {
			return fmt.Errorf("no cancellation yet (calls %d)", synthetic(slowPeer).Calls())
		}
		return nil
	})
	if synthetic(slowPeer).Calls() == 0 {
		t.Fatal("the slow expert was never asked: k=2 not honoured")
	}
}
