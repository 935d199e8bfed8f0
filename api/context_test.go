package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mwpeer/mwpeer/api"
)

// TestTooLongPromptIsSaidSo: a prompt that cannot fit the context its
// model's servers announce is a 400 context_length_exceeded naming both
// sizes, before any expert is asked; one that may fit, or a model whose
// context nobody announced, goes through.
func TestTooLongPromptIsSaidSo(t *testing.T) {
	sw := &fakeSwarm{}
	srv := httptest.NewServer(api.NewServer(fakeNode{}, sw, nil))
	defer srv.Close()
	post := func(model string, n int) (int, api.ErrorBody) {
		body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]}`, model, strings.Repeat("word ", n/5))
		resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e api.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}
	if code, e := post("small", 6000); code != 400 || e.Error.Code == nil || *e.Error.Code != "context_length_exceeded" ||
		!strings.Contains(e.Error.Message, "1000 tokens") {
		t.Fatalf("6,000 bytes to a 1,000-token model: %d %+v", code, e.Error)
	}
	for _, c := range []struct {
		model string
		n     int
	}{{"small", 2000}, {"m", 60000}} {
		if code, e := post(c.model, c.n); code != 200 {
			t.Fatalf("%d bytes to %s: %d %+v", c.n, c.model, code, e.Error)
		}
	}
	if len(sw.maxTokens) != 2 {
		t.Fatalf("the swarm was asked %d times, want 2 (not for the prompt too long)", len(sw.maxTokens))
	}
}
