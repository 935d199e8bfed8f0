package api_test

import (
	"net/http"
	"testing"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/experts"
)

// TestPeersShowKernels: /api/peers shows the kernel set a peer announces
// for a model of its embedded engine, and none for an Ollama model.
func TestPeersShowKernels(t *testing.T) {
	entries := catalogOf(1)
	entries[0].Models = []experts.Model{
		{Name: "a", Engine: "embedded", Kernels: "neon"},
		{Name: "b", Engine: "ollama"},
	}
	var ps api.Peers
	if code := get(t, api.NewServer(pagedNode{entries: entries}, nil, nil), "/api/peers", &ps); code != http.StatusOK {
		t.Fatalf("/api/peers: %d", code)
	}
	if len(ps.Peers) != 1 || len(ps.Peers[0].Models) != 2 {
		t.Fatalf("peers %+v", ps.Peers)
	}
	if m := ps.Peers[0].Models; m[0].Kernels != "neon" || m[1].Kernels != "" {
		t.Fatalf("models %+v, want kernels neon and none", m)
	}
}
