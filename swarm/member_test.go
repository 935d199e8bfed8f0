package swarm

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
)

// TestMemberFilterExcludesCatalogAndDHTPeers: with a Member filter, a peer
// it refuses is never a candidate, whether the catalog or the DHT names it.
func TestMemberFilterExcludesCatalogAndDHTPeers(t *testing.T) {
	self, in, out, farIn, farOut := newID(t), newID(t), newID(t), newID(t), newID(t)
	members := map[string]bool{in.String(): true, farIn.String(): true}
	r := New(Config{
		Self:    self,
		Catalog: catalog{entry(in, "m"), entry(out, "m"), entry(out, "only-out")},
		Providers: func(ctx context.Context, kind, name string, max int) ([]peer.AddrInfo, error) {
			return []peer.AddrInfo{{ID: farIn}, {ID: farOut}}, nil
		},
		Member: func(id string) bool { return members[id] },
	})
	cs, err := r.Candidates(context.Background(), query("m"))
	if err != nil {
		t.Fatal(err)
	}
	if got := peersOf(cs); !slices.Equal(got, []string{in.String()}) {
		t.Fatalf("catalog candidates %v, want only the member", got)
	}
	// Only a non-member serves the model in the catalog: the DHT is asked,
	// and only its member answers.
	cs, err = r.Candidates(context.Background(), query("only-out"))
	if err != nil {
		t.Fatal(err)
	}
	if got := peersOf(cs); !slices.Equal(got, []string{farIn.String()}) {
		t.Fatalf("DHT candidates %v, want only the member", got)
	}
	members[farIn.String()] = false
	if _, err := r.Candidates(context.Background(), query("only-out")); !errors.Is(err, inference.ErrUnknownModel) {
		t.Fatalf("no member serves it: %v", err)
	}
}
