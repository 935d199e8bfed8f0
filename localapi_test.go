package mwpeer

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// TestLocalAPIGuardFollowsConfig starts a peer with allowed hosts and
// origins and asks its API as a browser and a rebinding page would.
func TestLocalAPIGuardFollowsConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.AllowedHosts = []string{"box.lan"}
	cfg.AllowedOrigins = []string{"https://app.example"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	for _, c := range []struct {
		name, host, origin string
		status             int
		acao               string
	}{
		{"own address", p.HTTPAddr(), "", 200, ""},
		{"dashboard's origin", p.HTTPAddr(), "http://" + p.HTTPAddr(), 200, ""},
		{"allowed host", "box.lan:8080", "", 200, ""},
		{"rebinding host", "attacker.example", "", 403, ""},
		{"allowed origin", p.HTTPAddr(), "https://app.example", 200, "https://app.example"},
		{"other origin", p.HTTPAddr(), "https://evil.example", 403, ""},
	} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddr()+"/api/status", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = c.host
		if c.origin != "" {
			req.Header.Set("Origin", c.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("Access-Control-Allow-Origin") != c.acao {
			t.Errorf("%s: %d with Access-Control-Allow-Origin %q, want %d and %q", c.name, resp.StatusCode,
				resp.Header.Get("Access-Control-Allow-Origin"), c.status, c.acao)
		}
	}
}

// TestOpenAPINeedsKeysOrHTTPInsecure: an API reachable from the network
// without keys is refused unless HTTPInsecure says so. It listens on every
// interface only for as long as the peer takes to start and close.
func TestOpenAPINeedsKeysOrHTTPInsecure(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPAddr = "0.0.0.0:0"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Start(ctx, cfg)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "HTTPAddr" {
		t.Fatalf("Start without keys on %s: %v, want a HTTPAddr error", cfg.HTTPAddr, err)
	}
	cfg.HTTPInsecure = true
	p, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start with HTTPInsecure: %v", err)
	}
	p.Close()
}

func TestBadAllowedOriginIsRefused(t *testing.T) {
	cfg := testConfig(t)
	cfg.AllowedOrigins = []string{"app.example"}
	var fe *FieldError
	if err := cfg.Validate(); !errors.As(err, &fe) || fe.Field != "AllowedOrigins" {
		t.Fatalf("Validate: %v, want an AllowedOrigins error", err)
	}
}
