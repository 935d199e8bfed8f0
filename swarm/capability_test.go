package swarm

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
)

// TestAnnouncedCapabilitiesAreInferences: what an announcement may carry
// is what inference knows.
func TestAnnouncedCapabilitiesAreInferences(t *testing.T) {
	if !slices.Equal(experts.Capabilities, inference.KnownCapabilities) {
		t.Fatalf("experts.Capabilities %v, inference.KnownCapabilities %v", experts.Capabilities, inference.KnownCapabilities)
	}
}

// TestRequestsGoOnlyToCapableServers: a tools request goes only to the
// server whose model can call tools, an embedding request only to an
// embedding model (also for "auto"), and when no server of the model can
// do it the error is ErrUnsupported naming the parameter.
func TestRequestsGoOnlyToCapableServers(t *testing.T) {
	plain, tooled, embedder := newID(t), newID(t), newID(t)
	e1, e2, e3 := entry(plain, "m"), entry(tooled, "m"), entry(embedder, "e")
	e2.Models[0].Capabilities = []string{inference.CapCompletion, inference.CapTools}
	e3.Models[0].Capabilities = []string{inference.CapEmbedding}
	r := New(Config{Self: newID(t), Catalog: catalog{e1, e2, e3}})
	ctx := context.Background()

	q := query("m")
	if cs, err := r.Candidates(ctx, q); err != nil || len(cs) != 2 {
		t.Fatalf("plain: %v %v", peersOf(cs), err)
	}
	q.Request.Tools = json.RawMessage(`[{"type":"function","function":{"name":"f"}}]`)
	if cs, err := r.Candidates(ctx, q); err != nil || len(cs) != 1 || cs[0].Peer != tooled.String() {
		t.Fatalf("tools: %v %v", peersOf(cs), err)
	}
	q.Request.ToolChoice = "none" // tools offered but not to be used: any server
	if cs, err := r.Candidates(ctx, q); err != nil || len(cs) != 2 {
		t.Fatalf("tool_choice none: %v %v", peersOf(cs), err)
	}
	q = query("m")
	q.Request.Format = json.RawMessage(`"json"`)
	var ue *inference.UnsupportedError
	if _, err := r.Candidates(ctx, q); !errors.As(err, &ue) || ue.Param != "response_format" || !errors.Is(err, inference.ErrUnsupported) {
		t.Fatalf("json from servers that cannot: %v", err)
	}
	q = Query{Request: inference.Request{Model: AnyModel, Input: []string{"x"}}}
	if cs, err := r.Candidates(ctx, q); err != nil || len(cs) != 1 || cs[0].Model != "e" {
		t.Fatalf("auto embeddings: %+v %v", cs, err)
	}
	q.Request.Model = "m"
	if _, err := r.Candidates(ctx, q); !errors.As(err, &ue) || ue.Param != "input" {
		t.Fatalf("embeddings from a chat model: %v", err)
	}
	// The models list says what each can do.
	for _, m := range r.Models() {
		want := map[string][]string{"m": {"completion", "tools"}, "e": {"embedding"}}[m.ID]
		if !slices.Equal(m.Capabilities, want) {
			t.Fatalf("%s: %v, want %v", m.ID, m.Capabilities, want)
		}
	}
}
