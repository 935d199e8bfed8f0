package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeChat is a /v1/chat/completions that answers "answer N" from model
// "m1" and records every request's messages and model.
type fakeChat struct {
	mu       sync.Mutex
	requests []struct {
		Model    string              `json:"model"`
		Messages []map[string]string `json:"messages"`
	}
}

func (f *fakeChat) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, struct {
		Model    string              `json:"model"`
		Messages []map[string]string `json:"messages"`
	}{})
	n := len(f.requests)
	json.NewDecoder(r.Body).Decode(&f.requests[n-1])
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	for _, part := range []string{"answer ", fmt.Sprint(n)} {
		fmt.Fprintf(w, "data: {\"model\":\"m1\",\"choices\":[{\"delta\":{\"content\":%q}}]}\n\n", part)
	}
	fmt.Fprint(w, "data: {\"model\":\"m1\",\"choices\":[{\"delta\":{}}],\"mwpeer\":{\"experts\":[\"12D3KooWExpert\"]}}\n\ndata: [DONE]\n\n")
}

// TestChatWithoutPromptHoldsAConversation: each line is a turn that
// carries the conversation so far, to the model that answered first;
// /clear starts over and /bye ends.
func TestChatWithoutPromptHoldsAConversation(t *testing.T) {
	f := &fakeChat{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	stdin = strings.NewReader("hello\n\nhow are you?\n/clear\nagain\n/bye\nnever sent\n")
	defer func() { stdin = nil }()
	var out, errs bytes.Buffer
	if code := Run(context.Background(), []string{"chat", "--http", srv.Listener.Addr().String()}, &out, &errs); code != exitOK {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	if len(f.requests) != 3 {
		t.Fatalf("%d requests, want 3", len(f.requests))
	}
	roles := func(i int) string {
		var rs []string
		for _, m := range f.requests[i].Messages {
			rs = append(rs, m["role"]+":"+m["content"])
		}
		return strings.Join(rs, "|")
	}
	for i, want := range []struct{ model, msgs string }{
		{"auto", "user:hello"},
		{"m1", "user:hello|assistant:answer 1|user:how are you?"}, // pinned to the model that answered
		{"auto", "user:again"}, // after /clear
	} {
		if f.requests[i].Model != want.model || roles(i) != want.msgs {
			t.Errorf("turn %d: model %q, messages %q; want %q, %q", i, f.requests[i].Model, roles(i), want.model, want.msgs)
		}
	}
	if !strings.Contains(out.String(), "answer 1\n") || !strings.Contains(out.String(), "answer 3\n") {
		t.Errorf("stdout:\n%s", out.String())
	}
	if !strings.Contains(errs.String(), "/bye") || !strings.Contains(errs.String(), "answered by 12D3KooWExpert") && !strings.Contains(errs.String(), "answered by") {
		t.Errorf("stderr:\n%s", errs.String())
	}
}

// TestChatErrorsSayWhatToDo: no peer at the address, and a swarm with no
// model, each end with what to do next.
func TestChatErrorsSayWhatToDo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"message":"every expert is busy"}}`))
	}))
	addr := srv.Listener.Addr().String()
	for _, c := range []struct{ addr, want string }{
		{addr, "try again in a moment"},
	} {
		var out, errs bytes.Buffer
		if code := Run(context.Background(), []string{"chat", "--http", c.addr, "hi"}, &out, &errs); code != exitError || !strings.Contains(errs.String(), c.want) {
			t.Errorf("chat via %s: exit %d, stderr %q; want it to say %q", c.addr, code, errs.String(), c.want)
		}
	}
	srv.Close() // now nothing answers there
	var out, errs bytes.Buffer
	if code := Run(context.Background(), []string{"chat", "--http", addr, "hi"}, &out, &errs); code != exitError || !strings.Contains(errs.String(), "mwpeer run") {
		t.Errorf("chat with no peer: exit %d, stderr %q", code, errs.String())
	}
}
