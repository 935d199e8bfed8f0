package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
	"github.com/mwpeer/mwpeer/swarm"
)

// openAIBodies are request bodies as clients send them.
var openAIBodies = []string{
	`{"model":"llama3:8b","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"max_tokens":32,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`,
	`{"model":"llama3:8b","messages":[{"role":"user","content":[{"type":"text","text":"What is 2+2?"}]}],"logprobs":true,"top_logprobs":3,"stop":["\n\n","END"],"seed":7,"mwpeer":{"strategy":"confidence","k":2,"domains":["math"],"timeout_ms":1500}}`,
	`{"model":"m","messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Oslo\"}"}}]},{"role":"tool","tool_call_id":"c1","content":"3C"}],"tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object"}}}],"tool_choice":"auto","response_format":{"type":"json_object"}}`,
	`{"model":"m","messages":[{"role":"developer","content":"x"}],"max_completion_tokens":0}`,
	`{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":2.5,"n":3}`,
	`{"model":"m","messages":[{"role":"user","content":"x"}],"mwpeer":{"timeout_ms":9223372036854775807,"k":-1}}`,
	`{"model":" ","messages":[]}`,
	`{"model":"m","messages":[{"role":"user","content":{"not":"content"}}]}`,
	`[]`,
}

// completionBodies are legacy /v1/completions bodies.
var completionBodies = []string{
	`{"model":"llama3:8b","prompt":"Once upon","max_tokens":16,"logprobs":2,"stop":"\n"}`,
	`{"model":"m","prompt":["a","b"]}`,
	`{"model":"m","prompt":"x","echo":true,"suffix":"y"}`,
}

// checkQuery asserts what a request accepted by the OpenAI API promises:
// every limit holds, and the deadline is set and bounded.
func checkQuery(t *testing.T, q swarm.Query, before time.Time) {
	r := q.Request
	if r.Model == "" || len(r.Model) > 256 {
		t.Fatalf("accepted model %q", r.Model)
	}
	if r.MaxTokens < 0 || r.MaxTokens > MaxTokensCap || len(r.Stop) > MaxStops || len(r.Messages) > MaxMessages ||
		r.TopLogprobs < 0 || r.TopLogprobs > MaxTopLogprobs || q.K < 0 || q.K > MaxK {
		t.Fatalf("accepted a query over a limit: %+v", q)
	}
	if p := r.Temperature; p != nil && !(*p >= 0 && *p <= 2) {
		t.Fatalf("accepted temperature %v", *p)
	}
	if p := r.TopP; p != nil && !(*p >= 0 && *p <= 1) {
		t.Fatalf("accepted top_p %v", *p)
	}
	if r.Deadline.IsZero() || r.Deadline.Before(before) || r.Deadline.After(time.Now().Add(30*time.Minute)) {
		t.Fatalf("deadline %s", r.Deadline)
	}
}

// refused asserts that err, an error of reading or checking a request,
// maps to a 4xx answer, never a 500.
func refused(t *testing.T, err error) {
	w := httptest.NewRecorder()
	writeErr(w, err)
	if w.Code < 400 || w.Code >= 500 {
		t.Fatalf("refused with %d (%v), want a 4xx", w.Code, err)
	}
}

func newJSONRequest(body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	return r
}

// FuzzChatRequest reads /v1/chat/completions bodies as the API does: a body
// is refused with a 4xx, or gives a query within every limit.
func FuzzChatRequest(f *testing.F) {
	for _, b := range openAIBodies {
		fuzzcorpus.Add(f, []byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		before := time.Now()
		var req chatRequest
		if err := decode(newJSONRequest(body), &req); err != nil {
			refused(t, err)
			return
		}
		q, err := req.toQuery()
		if err != nil {
			refused(t, err)
			return
		}
		checkQuery(t, q, before)
		if len(q.Request.Messages) == 0 {
			t.Fatal("accepted a chat without messages")
		}
	})
}

// FuzzCompletionRequest reads /v1/completions bodies the same way.
func FuzzCompletionRequest(f *testing.F) {
	for _, b := range completionBodies {
		fuzzcorpus.Add(f, []byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		before := time.Now()
		var req completionRequest
		if err := decode(newJSONRequest(body), &req); err != nil {
			refused(t, err)
			return
		}
		q, err := req.toQuery()
		if err != nil {
			refused(t, err)
			return
		}
		checkQuery(t, q, before)
		if !q.Request.Raw || len(q.Request.Messages) > 0 {
			t.Fatalf("a completion became %+v", q.Request)
		}
	})
}
