package infer

import (
	"context"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/host"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/p2ptest"
)

// serving is a peer serving a synthetic backend.
type serving struct {
	h   host.Host
	b   *inference.Synthetic
	svc *Service
}

// serve starts a peer with a synthetic backend and connects client to it.
func serve(t testing.TB, client host.Host, cfg inference.SyntheticConfig) *serving {
	t.Helper()
	return serveWith(t, client, cfg, ServiceConfig{})
}

// serveWith is serve with a service configuration.
func serveWith(t testing.TB, client host.Host, cfg inference.SyntheticConfig, sc ServiceConfig) *serving {
	t.Helper()
	h := newHost(t)
	b := inference.NewSynthetic(cfg)
	svc := NewService(h, b, sc)
	t.Cleanup(func() { svc.Close() })
	connect(t, client, h)
	return &serving{h: h, b: b, svc: svc}
}

// fullText runs req directly on a fresh synthetic backend with cfg.
func fullText(t testing.TB, cfg inference.SyntheticConfig, req inference.Request) string {
	t.Helper()
	cfg.TTFT, cfg.Rate = 0, 0
	var sb strings.Builder
	if _, err := inference.NewSynthetic(cfg).Generate(context.Background(), req, collect(&sb)); err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

func collect(sb *strings.Builder) func(inference.Chunk) error {
	return func(c inference.Chunk) error {
		sb.WriteString(c.Text)
		return nil
	}
}

var testReq = inference.Request{Model: inference.SyntheticName, Prompt: "why is the sky blue?"}

// Loopback hosts for these tests.
var newHost, connect = p2ptest.NewHost, p2ptest.Connect
