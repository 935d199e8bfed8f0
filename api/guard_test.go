package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mwpeer/mwpeer/api"
)

const chatBody = `{"model":"m","messages":[{"role":"user","content":"hi"}]}`

// guardCase is one request to a guarded server and what must come back.
type guardCase struct {
	name    string
	method  string
	path    string
	host    string
	headers map[string]string
	body    string
	status  int
	// code is the error code of a refusal.
	code string
	// acao is the Access-Control-Allow-Origin wanted ("" for none).
	acao string
}

func runGuardCases(t *testing.T, g api.Guard, cases []guardCase) {
	t.Helper()
	s := api.NewServer(fakeNode{}, &fakeSwarm{}, nil)
	if err := s.SetGuard(g); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := c.method
			if method == "" {
				method = http.MethodGet
			}
			req := httptest.NewRequest(method, "http://127.0.0.1:8080"+c.path, strings.NewReader(c.body))
			req.Host = c.host
			for k, v := range c.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			resp := rec.Result()
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, rec.Body)
			}
			if c.code != "" {
				var e api.ErrorBody
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == nil || *e.Error.Code != c.code {
					t.Fatalf("body %s, want error code %q", rec.Body, c.code)
				}
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != c.acao {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", got, c.acao)
			}
			if c.acao != "" && !strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Origin") {
				t.Errorf("Vary %q lacks Origin", resp.Header.Values("Vary"))
			}
			for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s %q, want %q", k, got, v)
				}
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("Content-Security-Policy %q lacks frame-ancestors 'none'", csp)
			}
		})
	}
}

func TestGuardHost(t *testing.T) {
	runGuardCases(t, api.Guard{Listen: "127.0.0.1:8080", Hosts: []string{"box.lan"}}, []guardCase{
		{name: "loopback with port", path: "/api/status", host: "127.0.0.1:8080", status: 200},
		{name: "other loopback address", path: "/api/status", host: "127.3.2.1:8080", status: 200},
		{name: "loopback without port", path: "/api/status", host: "127.0.0.1", status: 200},
		{name: "IPv6 loopback", path: "/api/status", host: "[::1]:8080", status: 200},
		{name: "IPv6 loopback without port", path: "/api/status", host: "[::1]", status: 200},
		{name: "IPv4-mapped loopback", path: "/api/status", host: "[::ffff:127.0.0.1]:8080", status: 200},
		{name: "localhost", path: "/api/status", host: "localhost:8080", status: 200},
		{name: "localhost upper case with dot", path: "/api/status", host: "LOCALHOST.:8080", status: 200},
		{name: "subdomain of localhost", path: "/api/status", host: "dash.localhost:8080", status: 200},
		{name: "allowed host", path: "/api/status", host: "box.lan:8080", status: 200},
		{name: "rebinding name", path: "/api/status", host: "attacker.example:8080", status: 403, code: "forbidden_host"},
		{name: "rebinding name on chat", method: "POST", path: "/v1/chat/completions", host: "attacker.example:8080",
			headers: map[string]string{"Content-Type": "application/json"}, body: chatBody, status: 403, code: "forbidden_host"},
		{name: "localhost as a prefix", path: "/api/status", host: "localhost.attacker.example", status: 403, code: "forbidden_host"},
		{name: "other address", path: "/api/status", host: "192.168.1.5:8080", status: 403, code: "forbidden_host"},
		{name: "empty", path: "/api/status", host: "", status: 403, code: "forbidden_host"},
		{name: "dashboard on a rebinding name", path: "/", host: "attacker.example", status: 403, code: "forbidden_host"},
	})
}

func TestGuardHostListeningEverywhere(t *testing.T) {
	runGuardCases(t, api.Guard{Listen: "0.0.0.0:8080"}, []guardCase{
		{name: "any address", path: "/api/status", host: "192.168.1.5:8080", status: 200},
		{name: "IPv6 address", path: "/api/status", host: "[2001:db8::1]:8080", status: 200},
		{name: "a name", path: "/api/status", host: "attacker.example:8080", status: 403, code: "forbidden_host"},
	})
	runGuardCases(t, api.Guard{Listen: "192.168.1.5:8080"}, []guardCase{
		{name: "listen address", path: "/api/status", host: "192.168.1.5:8080", status: 200},
		{name: "another address", path: "/api/status", host: "192.168.1.6:8080", status: 403, code: "forbidden_host"},
	})
}

func TestGuardOrigin(t *testing.T) {
	const own = "127.0.0.1:8080"
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	runGuardCases(t, api.Guard{Listen: own, Origins: []string{"https://app.example", "HTTP://Tool.Example:3000/"}}, []guardCase{
		{name: "no origin (curl, SDKs)", path: "/api/status", host: own, status: 200},
		{name: "no origin, same-origin fetch", path: "/api/status", host: own, headers: with("Sec-Fetch-Site", "same-origin"), status: 200},
		{name: "no origin, typed in the address bar", path: "/api/status", host: own, headers: with("Sec-Fetch-Site", "none", "Sec-Fetch-Mode", "navigate"), status: 200},
		{name: "no origin, link from another site", path: "/", host: own, headers: with("Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate"), status: 200},
		{name: "no origin, cross-site subresource", path: "/api/status", host: own,
			headers: with("Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "no-cors"), status: 403, code: "forbidden_origin"},
		{name: "no origin, same-site other port", path: "/api/status", host: own,
			headers: with("Sec-Fetch-Site", "same-site", "Sec-Fetch-Mode", "no-cors"), status: 403, code: "forbidden_origin"},
		{name: "dashboard's own origin", path: "/api/status", host: own, headers: with("Origin", "http://"+own), status: 200},
		{name: "dashboard's own origin posts", method: "POST", path: "/v1/chat/completions", host: own,
			headers: with("Origin", "http://"+own, "Content-Type", "application/json"), body: chatBody, status: 200},
		{name: "own origin by localhost", path: "/api/status", host: "localhost:8080", headers: with("Origin", "http://localhost:8080"), status: 200},
		{name: "own host, other port", path: "/api/status", host: own, headers: with("Origin", "http://127.0.0.1:9999"), status: 403, code: "forbidden_origin"},
		{name: "other origin", path: "/api/status", host: own, headers: with("Origin", "https://evil.example"), status: 403, code: "forbidden_origin"},
		{name: "other origin posts", method: "POST", path: "/v1/chat/completions", host: own,
			headers: with("Origin", "https://evil.example", "Content-Type", "application/json"), body: chatBody, status: 403, code: "forbidden_origin"},
		{name: "null origin", path: "/api/status", host: own, headers: with("Origin", "null"), status: 403, code: "forbidden_origin"},
		{name: "allowed origin", path: "/api/status", host: own, headers: with("Origin", "https://app.example"), status: 200, acao: "https://app.example"},
		{name: "allowed origin normalized", path: "/api/status", host: own, headers: with("Origin", "http://tool.example:3000"), status: 200, acao: "http://tool.example:3000"},
		{name: "allowed origin posts", method: "POST", path: "/v1/chat/completions", host: own,
			headers: with("Origin", "https://app.example", "Content-Type", "application/json"), body: chatBody, status: 200, acao: "https://app.example"},
		{name: "allowed origin, other scheme", path: "/api/status", host: own, headers: with("Origin", "http://app.example"), status: 403, code: "forbidden_origin"},
		{name: "allowed origin, rebinding host", path: "/api/status", host: "app.example", headers: with("Origin", "https://app.example"), status: 403, code: "forbidden_host"},
		{name: "preflight of allowed origin", method: "OPTIONS", path: "/v1/chat/completions", host: own,
			headers: with("Origin", "https://app.example", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type,authorization"),
			status:  204, acao: "https://app.example"},
		{name: "preflight of other origin", method: "OPTIONS", path: "/v1/chat/completions", host: own,
			headers: with("Origin", "https://evil.example", "Access-Control-Request-Method", "POST"), status: 403, code: "forbidden_origin"},
		{name: "preflight on a rebinding host", method: "OPTIONS", path: "/v1/chat/completions", host: "evil.example",
			headers: with("Origin", "http://evil.example", "Access-Control-Request-Method", "POST"), status: 403, code: "forbidden_host"},
		{name: "OPTIONS without preflight", method: "OPTIONS", path: "/v1/chat/completions", host: own, status: 405},
	})
	runGuardCases(t, api.Guard{Listen: own, Origins: []string{"*"}}, []guardCase{
		{name: "star admits any origin", path: "/api/status", host: own, headers: with("Origin", "https://anyone.example"), status: 200, acao: "https://anyone.example"},
		{name: "star admits cross-site without origin", path: "/api/status", host: own, headers: with("Sec-Fetch-Site", "cross-site"), status: 200},
		{name: "star does not admit a rebinding host", path: "/api/status", host: "anyone.example", headers: with("Origin", "http://anyone.example"), status: 403, code: "forbidden_host"},
		{name: "star still wants JSON", method: "POST", path: "/v1/chat/completions", host: own,
			headers: with("Origin", "https://anyone.example"), body: chatBody, status: 415, code: "unsupported_media_type", acao: "https://anyone.example"},
	})
}

func TestGuardContentType(t *testing.T) {
	const own = "127.0.0.1:8080"
	post := func(name, ct string, status int, code string) guardCase {
		h := map[string]string{}
		if ct != "" {
			h["Content-Type"] = ct
		}
		return guardCase{name: name, method: "POST", path: "/v1/chat/completions", host: own, headers: h, body: chatBody, status: status, code: code}
	}
	runGuardCases(t, api.Guard{Listen: own}, []guardCase{
		post("json", "application/json", 200, ""),
		post("json with charset", "application/json; charset=utf-8", 200, ""),
		post("json with parameters", "application/json;charset=UTF-8;v=1", 200, ""),
		post("text/plain", "text/plain", 415, "unsupported_media_type"),
		post("text/plain with charset", "text/plain;charset=UTF-8", 415, "unsupported_media_type"),
		post("form", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
		post("multipart", "multipart/form-data; boundary=x", 415, "unsupported_media_type"),
		post("none", "", 415, "unsupported_media_type"),
		post("json-like", "application/jsonp", 415, "unsupported_media_type"),
		post("malformed", "application/json; =", 415, "unsupported_media_type"),
		{name: "route too", method: "POST", path: "/api/route", host: own, headers: map[string]string{"Content-Type": "text/plain"}, body: chatBody,
			status: 415, code: "unsupported_media_type"},
		{name: "GET needs none", path: "/v1/models", host: own, status: 200},
	})
}

func TestGuardPreflightHeaders(t *testing.T) {
	s := api.NewServer(fakeNode{}, &fakeSwarm{}, nil)
	if err := s.SetGuard(api.Guard{Origins: []string{"https://app.example"}}); err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("OPTIONS", "http://127.0.0.1:8080/v1/chat/completions", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
	req.Header.Set("Access-Control-Request-Private-Network", "true")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	h := rec.Result().Header
	for k, want := range map[string]string{
		"Access-Control-Allow-Origin":          "https://app.example",
		"Access-Control-Allow-Methods":         "GET, POST, OPTIONS",
		"Access-Control-Allow-Headers":         "authorization,content-type",
		"Access-Control-Allow-Private-Network": "true",
		"Access-Control-Max-Age":               "600",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s %q, want %q", k, got, want)
		}
	}
	if rec.Code != http.StatusNoContent {
		t.Errorf("status %d, want 204", rec.Code)
	}
}

func TestSetGuardRefusesBadOrigins(t *testing.T) {
	s := api.NewServer(fakeNode{}, nil, nil)
	for _, o := range []string{"app.example", "https://app.example/path", "ftp://app.example", "https://", "null", "https://u@app.example"} {
		if err := s.SetGuard(api.Guard{Origins: []string{o}}); err == nil {
			t.Errorf("SetGuard accepted origin %q", o)
		}
	}
	for o, want := range map[string]string{
		"*": "*", "https://App.Example": "https://app.example", "http://a.example:80": "http://a.example",
		"https://a.example:443/": "https://a.example", "http://127.0.0.1:3000": "http://127.0.0.1:3000",
	} {
		if got, err := api.ParseOrigin(o); err != nil || got != want {
			t.Errorf("ParseOrigin(%q) = %q, %v; want %q", o, got, err, want)
		}
	}
}

func TestDashboardPolicyIsStrict(t *testing.T) {
	srv, _ := serve(t, nil)
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "script-src 'self';", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("dashboard policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "'unsafe-inline'") || strings.Contains(csp, "'unsafe-eval'") {
		t.Errorf("dashboard policy %q allows any inline code", csp)
	}
	// The script is a file of its own, and runs only as JavaScript.
	js, err := http.Get(srv.URL + "/static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	js.Body.Close()
	if js.StatusCode != http.StatusOK || js.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.HasPrefix(js.Header.Get("Content-Type"), "text/javascript") {
		t.Errorf("GET /static/app.js: %d, %q, %q", js.StatusCode, js.Header.Get("Content-Type"), js.Header.Get("X-Content-Type-Options"))
	}
}
