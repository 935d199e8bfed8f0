package api_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestOllamaAPINeedsAKeyWhenThereAreKeys: the Ollama API runs models as /v1
// does, so it is no way around API keys; listing stays open as /api/status
// does.
func TestOllamaAPINeedsAKeyWhenThereAreKeys(t *testing.T) {
	keys := newFakeKeys()
	keys.add("alice", "sk-alice", 1000)
	srv, _ := serve(t, keys)
	post := func(path, key string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(`{"model":"m","prompt":"hi","input":"hi","messages":[{"role":"user","content":"hi"}],"stream":false}`))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/api/chat", "/api/generate", "/api/embed", "/api/embeddings"} {
		if code := post(path, ""); code != http.StatusUnauthorized {
			t.Errorf("%s without a key: %d, want 401", path, code)
		}
	}
	for _, path := range []string{"/api/chat", "/api/generate"} {
		if code := post(path, "sk-alice"); code != http.StatusOK {
			t.Errorf("%s with a key: %d, want 200", path, code)
		}
	}
	if got := keys.chargedTo("alice"); got == 0 {
		t.Error("the Ollama API charged nothing to the key")
	}
	resp, err := http.Get(srv.URL + "/api/tags")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/tags: %v %v", resp, err)
	}
	resp.Body.Close()
}
