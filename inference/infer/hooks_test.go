package infer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// recording is a backend that notes who each call came from and can fail
// after a number of chunks.
type recording struct {
	*inference.Synthetic
	failAfter int   // chunks before failing (0: never)
	failWith  error // the failure

	mu      sync.Mutex
	callers []peer.ID
}

func (b *recording) Generate(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	p, ok := inference.Caller(ctx)
	b.mu.Lock()
	if ok {
		b.callers = append(b.callers, p)
	} else {
		b.callers = append(b.callers, "")
	}
	b.mu.Unlock()
	if b.failAfter == 0 {
		return b.Synthetic.Generate(ctx, req, emit)
	}
	sent := 0
	stop := errors.New("stop")
	_, err := b.Synthetic.Generate(ctx, req, func(c inference.Chunk) error {
		if sent == b.failAfter {
			return stop
		}
		sent++
		return emit(c)
	})
	if errors.Is(err, stop) {
		return inference.Final{}, b.failWith
	}
	return inference.Final{}, fmt.Errorf("backend ended early: %v", err)
}

func (b *recording) seen() []peer.ID {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]peer.ID(nil), b.callers...)
}

func TestBackendSeesTheCallersPeerID(t *testing.T) {
	client := newHost(t)
	b := &recording{Synthetic: inference.NewSynthetic(inference.SyntheticConfig{Tokens: 3})}
	h := newHost(t)
	svc := NewService(h, b, ServiceConfig{})
	defer svc.Close()
	connect(t, client, h)
	if _, err := Call(context.Background(), client, h.ID(), testReq, func(inference.Chunk) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := b.seen(); len(got) != 1 || got[0] != client.ID() {
		t.Fatalf("backend saw callers %v, want [%s]", got, client.ID())
	}
	// Work that came from no peer has no caller.
	if _, ok := inference.Caller(context.Background()); ok {
		t.Fatal("a plain context has a caller")
	}
}

func TestAdmitRefusesBeforeTheBackend(t *testing.T) {
	client := newHost(t)
	var asked []peer.ID
	var mu sync.Mutex
	admit := func(ctx context.Context, caller peer.ID, req *inference.Request) error {
		mu.Lock()
		asked = append(asked, caller)
		mu.Unlock()
		if p, ok := inference.Caller(ctx); !ok || p != caller {
			return fmt.Errorf("admit's context names caller %s", p)
		}
		switch req.Prompt {
		case "busy":
			return fmt.Errorf("budget spent for now: %w", inference.ErrBusy)
		case "consent":
			return fmt.Errorf("not on the allowlist: %w", inference.ErrConsentRefused)
		case "quota":
			return fmt.Errorf("tokens per hour used up: %w", inference.ErrQuotaExceeded)
		case "ok":
			return nil
		case "cap":
			if c := inference.CredentialsOf(ctx); string(c.Grant) != "g" || string(c.Cert) != "c" {
				return fmt.Errorf("credentials %q %q did not arrive", c.Grant, c.Cert)
			}
			req.MaxTokens = 2
			return nil
		}
		return errors.New("not in the policy")
	}
	srv := serveWith(t, client, inference.SyntheticConfig{}, ServiceConfig{Admit: admit})

	for _, tc := range []struct {
		prompt string
		want   error
		code   string
	}{
		{"anything", inference.ErrRefused, CodeRefused},
		{"busy", inference.ErrBusy, CodeBusy},
		{"consent", inference.ErrConsentRefused, CodeConsent},
		{"quota", inference.ErrQuotaExceeded, CodeQuota},
	} {
		req := testReq
		req.Prompt = tc.prompt
		_, err := Call(context.Background(), client, srv.h.ID(), req, func(inference.Chunk) error { return nil })
		var re *RemoteError
		if !errors.Is(err, tc.want) || !errors.As(err, &re) || re.Code != tc.code || re.Peer != srv.h.ID() {
			t.Fatalf("%s: err %v, want a %s RemoteError from the server", tc.prompt, err, tc.code)
		}
	}
	if srv.b.Calls() != 0 {
		t.Fatalf("backend called %d times for refused requests", srv.b.Calls())
	}
	// Invalid requests are refused before Admit is asked.
	if _, err := Call(context.Background(), client, srv.h.ID(), inference.Request{Prompt: "x"}, func(inference.Chunk) error { return nil }); !errors.Is(err, inference.ErrInvalidRequest) {
		t.Fatalf("invalid request: %v", err)
	}
	req := testReq
	req.Prompt = "ok"
	if _, err := Call(context.Background(), client, srv.h.ID(), req, func(inference.Chunk) error { return nil }); err != nil || srv.b.Calls() != 1 {
		t.Fatalf("admitted call: %v, backend calls %d", err, srv.b.Calls())
	}
	// Admit may lower max_tokens; credentials reach it.
	req.Prompt = "cap"
	creds := CallOptions{Credentials: func(p peer.ID, model string) inference.Credentials {
		return inference.Credentials{Grant: []byte("g"), Cert: []byte("c")}
	}}
	f, err := CallWith(context.Background(), client, srv.h.ID(), req, func(inference.Chunk) error { return nil }, creds)
	if err != nil || f.CompletionTokens != 2 {
		t.Fatalf("capped call: %v, %d tokens, want 2", err, f.CompletionTokens)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 6 {
		t.Fatalf("admit asked %d times, want 6", len(asked))
	}
	for _, p := range asked {
		if p != client.ID() {
			t.Fatalf("admit saw caller %s, want %s", p, client.ID())
		}
	}
}

func TestRefusedExpertIsReplaced(t *testing.T) {
	client := newHost(t)
	refuse := func(context.Context, peer.ID, *inference.Request) error { return errors.New("no") }
	refuser := serveWith(t, client, inference.SyntheticConfig{Tokens: 5}, ServiceConfig{Admit: refuse})
	spare := serve(t, client, inference.SyntheticConfig{Tokens: 5})
	res, err := inference.Dispatch(context.Background(),
		[]inference.Target{Target(client, refuser.h.ID())}, []inference.Target{Target(client, spare.h.ID())},
		inference.Fastest, testReq, func(string, inference.Chunk) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Expert != spare.h.ID().String() || !errors.Is(res.Errors[refuser.h.ID().String()], inference.ErrRefused) {
		t.Fatalf("expert %s, errors %v", res.Expert, res.Errors)
	}
}

// completions collects what Complete hears.
type completions struct {
	mu   sync.Mutex
	list []Completion
}

func (c *completions) add(_ context.Context, x Completion) {
	c.mu.Lock()
	c.list = append(c.list, x)
	c.mu.Unlock()
}

func (c *completions) wait(t *testing.T, n int) []Completion {
	t.Helper()
	wait.For(t, 5*time.Second, fmt.Sprintf("%d completions", n), func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.list) < n {
			return fmt.Errorf("%d completions", len(c.list))
		}
		return nil
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Completion(nil), c.list...)
}

func TestCompleteHearsEveryOutcome(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name     string
		backend  *recording
		cancelAt int // chunks the client takes before it cancels (0: never)
		outcome  string
		prompt   int   // prompt tokens
		tokens   int   // completion tokens
		err      error // what Completion.Err wraps (nil: anything for a cancel, nothing for success)
	}{
		{"success", &recording{Synthetic: inference.NewSynthetic(inference.SyntheticConfig{Tokens: 7})}, 0, OutcomeOK, -1, 7, nil},
		{"backend error", &recording{Synthetic: inference.NewSynthetic(inference.SyntheticConfig{Tokens: 7}), failAfter: 3, failWith: boom}, 0, CodeInternal, 0, 3, boom},
		{"backend busy", &recording{Synthetic: inference.NewSynthetic(inference.SyntheticConfig{Tokens: 7}), failAfter: 2, failWith: inference.ErrBusy}, 0, CodeBusy, 0, 2, inference.ErrBusy},
		{"client cancel", &recording{Synthetic: inference.NewSynthetic(inference.SyntheticConfig{Tokens: 10000, Rate: 100})}, 4, OutcomeCancelled, 0, 4, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := newHost(t)
			var done completions
			h := newHost(t)
			svc := NewService(h, tc.backend, ServiceConfig{Complete: done.add})
			defer svc.Close()
			connect(t, client, h)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			got := 0
			start := time.Now()
			_, err := Call(ctx, client, h.ID(), testReq, func(inference.Chunk) error {
				if got++; got == tc.cancelAt {
					cancel()
				}
				return nil
			})
			switch {
			case tc.cancelAt > 0 && !errors.Is(err, context.Canceled):
				t.Fatalf("cancelled call: %v", err)
			case tc.cancelAt == 0 && tc.err != nil && err == nil:
				t.Fatal("failed call succeeded")
			case tc.cancelAt == 0 && tc.err == nil && err != nil:
				t.Fatal(err)
			}
			c := done.wait(t, 1)[0]
			if c.Caller != client.ID() || c.Model != testReq.Model || c.Request.Prompt != testReq.Prompt || c.RequestSize == 0 {
				t.Errorf("caller %s model %q prompt %q size %d", c.Caller, c.Model, c.Request.Prompt, c.RequestSize)
			}
			if c.Start.Before(start.Add(-time.Second)) || c.Start.After(time.Now()) || c.TTFT <= 0 || c.Duration < c.TTFT {
				t.Errorf("start %v, ttft %v, duration %v", c.Start, c.TTFT, c.Duration)
			}
			if c.Outcome != tc.outcome || (tc.err != nil && !errors.Is(c.Err, tc.err)) || (tc.outcome == OutcomeOK && c.Err != nil) {
				t.Errorf("outcome %q err %v, want %q %v", c.Outcome, c.Err, tc.outcome, tc.err)
			}
			if tc.outcome == OutcomeCancelled {
				// The server may have sent a few chunks more than the
				// client took before the reset reached it.
				if c.CompletionTokens < tc.tokens || c.Err == nil {
					t.Errorf("cancelled: %d tokens (want at least %d), err %v", c.CompletionTokens, tc.tokens, c.Err)
				}
			} else if c.CompletionTokens != tc.tokens || (tc.prompt >= 0 && c.PromptTokens != tc.prompt) || (tc.prompt < 0 && c.PromptTokens <= 0) {
				t.Errorf("tokens %d prompt %d, want %d and %d", c.CompletionTokens, c.PromptTokens, tc.tokens, tc.prompt)
			}
		})
	}
}

// TestWireSchemaIsOneZero pins the frames to what /mwpeer/infer/1.0.0 has
// always sent, whatever inference's API types become.
func TestWireSchemaIsOneZero(t *testing.T) {
	temp, seed := 0.5, int64(7)
	req := toWireRequest(inference.Request{Model: "m", Messages: []inference.Message{{Role: "user", Content: "hi"}}, Prompt: "p", Raw: true,
		MaxTokens: 3, Temperature: &temp, TopP: &temp, Stop: []string{"x"}, Seed: &seed, Logprobs: true, TopLogprobs: 2, Continue: "c",
		Deadline: time.Now().Add(time.Hour)})
	req.TimeoutMS = 9
	fin := toWireFinal(inference.Final{FinishReason: "stop", PromptTokens: 1, CompletionTokens: 2, TTFT: 3, Duration: 4, MeanLogprob: -0.5, HasLogprob: true})
	ch := toWireChunk(inference.Chunk{Text: "t", Logprobs: []inference.TokenLogprob{{Token: "t", Logprob: -1, Top: []inference.TopLogprob{{Token: "u", Logprob: -2}}}}})
	for _, tc := range []struct {
		v    any
		want string
	}{
		{req, `{"model":"m","messages":[{"role":"user","content":"hi"}],"prompt":"p","raw":true,"max_tokens":3,"temperature":0.5,"top_p":0.5,"stop":["x"],"seed":7,"logprobs":true,"top_logprobs":2,"continue":"c","timeout_ms":9}`},
		{toWireRequest(inference.Request{Model: "m", Prompt: "p"}), `{"model":"m","prompt":"p"}`},
		{frame{Chunk: ch}, `{"chunk":{"text":"t","logprobs":[{"token":"t","logprob":-1,"top":[{"token":"u","logprob":-2}]}]}}`},
		{frame{Final: fin}, `{"final":{"finish_reason":"stop","prompt_tokens":1,"completion_tokens":2,"ttft_ns":3,"duration_ns":4,"mean_logprob":-0.5,"has_logprob":true}}`},
		{frame{Error: &errorFrame{Code: CodeBusy, Message: "m"}}, `{"error":{"code":"busy","message":"m"}}`},
		{frame{Receipt: []byte{1, 2, 3}}, `{"receipt":"AQID"}`},
		{answer{Countersign: []byte{1, 2, 3}}, `{"countersign":"AQID"}`},
		{answer{Refuse: "no"}, `{"refuse":"no"}`},
	} {
		got, err := json.Marshal(tc.v)
		if err != nil || string(got) != tc.want {
			t.Errorf("got  %s (%v)\nwant %s", got, err, tc.want)
		}
	}
	// And back: what arrives converts to the same API values.
	var back request
	if err := json.Unmarshal([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"prompt":"p","stop":["x"],"timeout_ms":9}`), &back); err != nil {
		t.Fatal(err)
	}
	r := back.request()
	if r.Model != "m" || len(r.Messages) != 1 || r.Messages[0].Content != "hi" || r.Prompt != "p" || strings.Join(r.Stop, ",") != "x" || !r.Deadline.IsZero() {
		t.Fatalf("request %+v", r)
	}
	if c := ch.chunk(); c.Text != "t" || c.Logprobs[0].Top[0].Token != "u" {
		t.Fatalf("chunk %+v", c)
	}
	if f := fin.final(); f.TTFT != 3 || f.Duration != 4 || !f.HasLogprob {
		t.Fatalf("final %+v", f)
	}
}

// TestChargeRunsBeforeTheCallerHearsTheEnd: what Charge charges is in force
// when the caller's Call returns, so its next request sees it.
func TestChargeRunsBeforeTheCallerHearsTheEnd(t *testing.T) {
	client, h := newHost(t), newHost(t)
	var charged, done completions
	svc := NewService(h, inference.NewSynthetic(inference.SyntheticConfig{Tokens: 5}), ServiceConfig{Charge: charged.add, Complete: done.add})
	defer svc.Close()
	connect(t, client, h)
	for i := range 3 {
		if _, err := Call(context.Background(), client, h.ID(), testReq, func(inference.Chunk) error { return nil }); err != nil {
			t.Fatal(err)
		}
		charged.mu.Lock()
		n := len(charged.list)
		var last Completion
		if n > 0 {
			last = charged.list[n-1]
		}
		charged.mu.Unlock()
		if n != i+1 || last.CompletionTokens != 5 || last.PromptTokens <= 0 || !last.Admitted {
			t.Fatalf("call %d returned with %d charges (last: %d+%d tokens, admitted %v)", i, n, last.PromptTokens, last.CompletionTokens, last.Admitted)
		}
	}
	for _, c := range done.wait(t, 3) {
		if !c.Charged || c.Outcome != OutcomeOK {
			t.Errorf("completion charged %v, outcome %q", c.Charged, c.Outcome)
		}
	}
}
