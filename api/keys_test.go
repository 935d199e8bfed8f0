package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/openai/openai-go"
	"github.com/openai/openai-go/option"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/routing"
	"github.com/mwpeer/mwpeer/swarm"
)

// Every answer of fakeSwarm uses this many tokens.
const (
	promptTokens     = 7
	completionTokens = 2
)

type fakeNode struct{}

func (fakeNode) Status() api.Status   { return api.Status{ID: "self"} }
func (fakeNode) Peers() api.Peers     { return api.Peers{} }
func (fakeNode) RTT() api.RTTMatrix   { return api.RTTMatrix{} }
func (fakeNode) Experts() api.Experts { return api.Experts{} }

// fakeSwarm answers every prompt with "hello world" and records the
// max_tokens it was asked for.
type fakeSwarm struct {
	mu        sync.Mutex
	maxTokens []int
}

func (f *fakeSwarm) Models() []swarm.Model {
	return []swarm.Model{{ID: "m"}, {ID: "small", Context: 1000}}
}

func (f *fakeSwarm) Route(context.Context, swarm.Query) (routing.Decision, error) {
	return routing.Decision{}, nil
}

func (f *fakeSwarm) Complete(ctx context.Context, q swarm.Query, emit func(string, inference.Chunk) error) (swarm.Answer, error) {
	f.mu.Lock()
	f.maxTokens = append(f.maxTokens, q.Request.MaxTokens)
	f.mu.Unlock()
	for _, t := range []string{"hello", " world"} {
		if err := emit("fake", inference.Chunk{Text: t}); err != nil {
			return swarm.Answer{}, err
		}
	}
	return swarm.Answer{Text: "hello world", Experts: []string{"fake"}, Final: inference.Final{
		FinishReason: inference.FinishStop, PromptTokens: promptTokens, CompletionTokens: completionTokens,
	}}, nil
}

func (f *fakeSwarm) lastMaxTokens() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxTokens[len(f.maxTokens)-1]
}

// fakeKeys holds keys in memory, as the ledger would on disk.
type fakeKeys struct {
	mu        sync.Mutex
	bySecret  map[string]string // secret -> name
	remaining map[string]int64
	charged   map[string]int64
}

func newFakeKeys() *fakeKeys {
	return &fakeKeys{bySecret: map[string]string{}, remaining: map[string]int64{}, charged: map[string]int64{}}
}

func (k *fakeKeys) add(name, secret string, budget int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.bySecret[secret] = name
	k.remaining[name] = budget
}

func (k *fakeKeys) HasKeys() (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.bySecret) > 0, nil
}

func (k *fakeKeys) Authorize(secret string) (api.KeyInfo, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	name, ok := k.bySecret[secret]
	if !ok {
		return api.KeyInfo{}, fmt.Errorf("no key has this secret: %w", api.ErrUnknownKey)
	}
	info := api.KeyInfo{Name: name, Remaining: k.remaining[name]}
	if info.Remaining <= 0 {
		return info, fmt.Errorf("key %s: %w", name, api.ErrQuotaExhausted)
	}
	return info, nil
}

func (k *fakeKeys) Charge(name string, tokens int64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.remaining[name] -= tokens
	k.charged[name] += tokens
	return nil
}

func (k *fakeKeys) chargedTo(name string) int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.charged[name]
}

// serve starts an api.Server over the fakes; keys nil leaves /v1 open.
func serve(t *testing.T, keys api.Keys) (*httptest.Server, *fakeSwarm) {
	t.Helper()
	sw := &fakeSwarm{}
	s := api.NewServer(fakeNode{}, sw, nil)
	s.SetKeys(keys)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv, sw
}

// client is the OpenAI SDK pointed at srv with key ("": no Authorization).
func client(srv *httptest.Server, key string) openai.Client {
	opts := []option.RequestOption{option.WithBaseURL(srv.URL + "/v1/"), option.WithMaxRetries(0)}
	if key == "" {
		opts = append(opts, option.WithHeaderDel("authorization")) // not even $OPENAI_API_KEY
	} else {
		opts = append(opts, option.WithAPIKey(key))
	}
	return openai.NewClient(opts...)
}

func chat(ctx context.Context, c openai.Client, maxTokens int64) (*openai.ChatCompletion, error) {
	p := openai.ChatCompletionNewParams{
		Model:    "m",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}
	if maxTokens > 0 {
		p.MaxTokens = openai.Int(maxTokens)
	}
	return c.Chat.Completions.New(ctx, p)
}

// wantAPIError fails t unless err is the SDK's API error with status and code.
func wantAPIError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("want an API error %d %s, got %v", status, code, err)
	}
	if e.StatusCode != status || e.Code != code {
		t.Fatalf("got %d %q (%s), want %d %q", e.StatusCode, e.Code, e.Message, status, code)
	}
}

func TestV1IsOpenWithoutKeys(t *testing.T) {
	for name, keys := range map[string]api.Keys{"no store": nil, "empty store": newFakeKeys()} {
		t.Run(name, func(t *testing.T) {
			srv, _ := serve(t, keys)
			c, err := chat(context.Background(), client(srv, ""), 0)
			if err != nil {
				t.Fatal(err)
			}
			if c.Choices[0].Message.Content != "hello world" {
				t.Fatalf("answer %q", c.Choices[0].Message.Content)
			}
		})
	}
}

func TestV1NeedsAKeyOnceKeysExist(t *testing.T) {
	keys := newFakeKeys()
	keys.add("alice", "sk-alice", 1000)
	srv, _ := serve(t, keys)
	ctx := context.Background()

	_, err := chat(ctx, client(srv, ""), 0)
	wantAPIError(t, err, http.StatusUnauthorized, "invalid_api_key")
	_, err = chat(ctx, client(srv, "sk-mallory"), 0)
	wantAPIError(t, err, http.StatusUnauthorized, "invalid_api_key")
	anonymous := client(srv, "")
	_, err = anonymous.Models.List(ctx)
	wantAPIError(t, err, http.StatusUnauthorized, "invalid_api_key")
	if got := keys.chargedTo("alice"); got != 0 {
		t.Fatalf("refused requests charged %d tokens", got)
	}

	// The refusal has OpenAI's error shape, param null included.
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	e := body["error"]
	if resp.StatusCode != http.StatusUnauthorized || e["type"] != "invalid_request_error" || e["code"] != "invalid_api_key" ||
		e["message"] == "" || e["param"] != nil {
		t.Fatalf("%d %v", resp.StatusCode, body)
	}
	if _, ok := e["param"]; !ok {
		t.Fatalf("no param in %v", body)
	}

	// The rest of the API is not behind keys.
	resp, err = http.Get(srv.URL + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/status: %d", resp.StatusCode)
	}
}

func TestKeyIsChargedTheUsage(t *testing.T) {
	keys := newFakeKeys()
	keys.add("alice", "sk-alice", 1000)
	srv, _ := serve(t, keys)
	ctx := context.Background()
	c := client(srv, "sk-alice")

	answer, err := chat(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	used := answer.Usage.PromptTokens + answer.Usage.CompletionTokens
	if used != promptTokens+completionTokens {
		t.Fatalf("usage %+v", answer.Usage)
	}
	if got := keys.chargedTo("alice"); got != used {
		t.Fatalf("charged %d, usage says %d", got, used)
	}

	stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "m",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	used += acc.Usage.PromptTokens + acc.Usage.CompletionTokens
	if got := keys.chargedTo("alice"); got != used || acc.Usage.TotalTokens == 0 {
		t.Fatalf("charged %d after a stream, usage says %d", got, used)
	}
}

func TestExhaustedKeyGets429(t *testing.T) {
	keys := newFakeKeys()
	keys.add("bob", "sk-bob", 5)
	keys.add("carol", "sk-carol", 0)
	srv, sw := serve(t, keys)
	ctx := context.Background()

	_, err := chat(ctx, client(srv, "sk-carol"), 0)
	wantAPIError(t, err, http.StatusTooManyRequests, "insufficient_quota")

	// bob has 5 tokens left: his request may generate at most 5, and the
	// answer's 9 tokens leave him exhausted.
	if _, err := chat(ctx, client(srv, "sk-bob"), 100); err != nil {
		t.Fatal(err)
	}
	if got := sw.lastMaxTokens(); got != 5 {
		t.Errorf("max_tokens %d reached the swarm, want 5 (the budget left)", got)
	}
	_, err = chat(ctx, client(srv, "sk-bob"), 0)
	wantAPIError(t, err, http.StatusTooManyRequests, "insufficient_quota")
	if got := keys.chargedTo("bob"); got != promptTokens+completionTokens {
		t.Fatalf("bob charged %d, want %d", got, promptTokens+completionTokens)
	}
}

func TestRequiresKeys(t *testing.T) {
	for addr, want := range map[string]bool{
		"":                      false,
		"127.0.0.1:8080":        false,
		"127.8.9.10:80":         false,
		"[::1]:8080":            false,
		"localhost:8080":        false,
		"LocalHost.:8080":       false,
		"[::ffff:127.0.0.1]:80": false,
		"127.0.0.1":             false,
		":8080":                 true,
		"0.0.0.0:8080":          true,
		"[::]:8080":             true,
		"192.168.1.5:8080":      true,
		"10.0.0.1:8080":         true,
		"example.com:8080":      true,
		"localhost.example:80":  true,
	} {
		if got := api.RequiresKeys(addr); got != want {
			t.Errorf("RequiresKeys(%q) = %v, want %v", addr, got, want)
		}
	}
}
