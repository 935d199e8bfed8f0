package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/mwpeer/mwpeer/swarm"
)

// Keys is the store of API keys that guards /v1 (the ledger implements it).
// Once it holds any key, every /v1 request must carry one as
// "Authorization: Bearer KEY", and the tokens of each answer are charged to
// the key that asked for it. The api never sees how keys are stored.
type Keys interface {
	// HasKeys reports whether any key exists. It is asked on every /v1
	// request, so it should be cheap. An error refuses the request (500):
	// a store that cannot answer does not open the API.
	HasKeys() (bool, error)
	// Authorize returns the key whose secret this is. Its error wraps
	// ErrUnknownKey for a secret that is no key and ErrQuotaExhausted for a
	// key with no budget left; any other error is the store's own (500).
	Authorize(secret string) (KeyInfo, error)
	// Charge records tokens used by the key called name. It is called after
	// an answer, so it must accept a charge beyond what is left (the key
	// then stays exhausted until its budget renews).
	Charge(name string, tokens int64) error
}

// KeyInfo is what the api knows of an authorized key.
type KeyInfo struct {
	// Name is the key's name, as given to `mwpeer keys add NAME`.
	Name string
	// Remaining is the budget left in tokens. A key with Remaining ≤ 0 is
	// refused as exhausted even if Authorize did not say so, and a request's
	// max_tokens is capped to Remaining.
	Remaining int64
}

// Errors a Keys implementation wraps, so that the api can answer 401 and 429
// without relying on an error's text.
var (
	// ErrUnknownKey: the secret is not a key of this peer (401 invalid_api_key).
	ErrUnknownKey = errors.New("unknown API key")
	// ErrQuotaExhausted: the key has spent its budget (429 insufficient_quota).
	ErrQuotaExhausted = errors.New("API key budget exhausted")
)

// SetKeys makes s require and charge API keys on /v1 from k; nil (the
// default) leaves /v1 open. It is safe to call while s serves.
func (s *Server) SetKeys(k Keys) {
	if k == nil {
		s.keys.Store(nil)
		return
	}
	s.keys.Store(&k)
}

type keyCtx struct{}

// keyFrom returns the key that authorized r's request, if any.
func keyFrom(ctx context.Context) (KeyInfo, bool) {
	k, ok := ctx.Value(keyCtx{}).(KeyInfo)
	return k, ok
}

// isV1 says whether path is part of the OpenAI-compatible API.
func isV1(path string) bool { return path == "/v1" || strings.HasPrefix(path, "/v1/") }

// authorize checks r's API key when keys exist. It writes the refusal and
// returns false, or returns r with the key in its context.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	kp := s.keys.Load()
	if kp == nil || !isV1(r.URL.Path) && !isOllamaWork(r.URL.Path) {
		return r, true
	}
	keys := *kp
	has, err := keys.HasKeys()
	if err != nil {
		s.log.Error("API keys: "+err.Error(), "path", r.URL.Path)
		writeError(w, http.StatusInternalServerError, "internal_error", "cannot check API keys")
		return nil, false
	}
	if !has {
		return r, true
	}
	secret, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		unauthorized(w, "missing API key: send it as Authorization: Bearer KEY (create one with `mwpeer keys add`)")
		return nil, false
	}
	info, err := keys.Authorize(secret)
	switch {
	case errors.Is(err, ErrUnknownKey):
		unauthorized(w, "invalid API key")
		return nil, false
	case errors.Is(err, ErrQuotaExhausted) || err == nil && info.Remaining <= 0:
		exhausted(w, info.Name)
		return nil, false
	case err != nil:
		s.log.Error("API keys: "+err.Error(), "path", r.URL.Path)
		writeError(w, http.StatusInternalServerError, "internal_error", "cannot check API keys")
		return nil, false
	}
	return r.WithContext(context.WithValue(r.Context(), keyCtx{}, info)), true
}

// bearer returns the token of an "Authorization: Bearer TOKEN" header.
func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="mwpeer"`)
	code := "invalid_api_key"
	writeJSON(w, http.StatusUnauthorized, ErrorBody{Error: ErrorDetail{Message: msg, Type: "invalid_request_error", Code: &code}})
}

// exhausted answers as OpenAI does for an account out of quota.
func exhausted(w http.ResponseWriter, name string) {
	msg := "this API key has used its token budget; it renews at the start of its next period"
	if name != "" {
		msg = "API key " + name + " has used its token budget; it renews at the start of its next period"
	}
	code := "insufficient_quota"
	writeJSON(w, http.StatusTooManyRequests, ErrorBody{Error: ErrorDetail{Message: msg, Type: "insufficient_quota", Code: &code}})
}

// capToBudget lowers q's max_tokens to what r's key has left.
func capToBudget(r *http.Request, q *swarm.Query) {
	k, ok := keyFrom(r.Context())
	if !ok || k.Remaining >= MaxTokensCap {
		return
	}
	if q.Request.MaxTokens == 0 || int64(q.Request.MaxTokens) > k.Remaining {
		q.Request.MaxTokens = int(max(k.Remaining, 1))
	}
}

// charge bills the tokens of an answer (prompt and completion, as its usage
// says) to the key that asked for it.
func (s *Server) charge(r *http.Request, a swarm.Answer) {
	k, ok := keyFrom(r.Context())
	tokens := int64(a.Final.PromptTokens) + int64(a.Final.CompletionTokens)
	kp := s.keys.Load()
	if !ok || tokens <= 0 || kp == nil {
		return
	}
	if err := (*kp).Charge(k.Name, tokens); err != nil {
		s.log.Warn("API key charge: "+err.Error(), "key", k.Name, "tokens", tokens)
	}
}

// RequiresKeys reports whether an HTTP API listening on addr (host:port, as
// --http takes it) is reachable from other machines and so must not run
// without API keys: every address except loopback ones (127.0.0.0/8, ::1)
// and the name localhost. An empty host (":8080") listens everywhere and
// requires keys; an empty addr (no API) does not.
func RequiresKeys(addr string) bool {
	if addr == "" {
		return false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = strings.Trim(addr, "[]") // a bare host
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return true // any other name may resolve anywhere
	}
	return !ip.Unmap().IsLoopback()
}
