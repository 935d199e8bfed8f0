package swarm

import (
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/routing"
)

// TestVerifyTargetsShareAKernelSet: peers serving one model with the same
// digest on the embedded engine verify each other only if they announce
// the same kernel set: an avx2 peer is never paired with a neon one, even
// when they rank first and second.
func TestVerifyTargetsShareAKernelSet(t *testing.T) {
	a, b, c, d := newID(t), newID(t), newID(t), newID(t)
	served := func(id peer.ID, kernels string) experts.Entry {
		e := entry(id)
		e.Models = []experts.Model{{Name: "m", Digest: "sha256:0123", Engine: "embedded", Kernels: kernels}}
		return e
	}
	for _, tc := range []struct {
		name    string
		peers   []peer.ID // in rank order
		kernels []string
		want    []peer.ID
	}{
		{"avx2 and neon", []peer.ID{a, b}, []string{"avx2", "neon"}, nil},
		{"neon between two avx2", []peer.ID{a, b, c}, []string{"avx2", "neon", "avx2"}, []peer.ID{a, c}},
		{"two of each", []peer.ID{a, b, c, d}, []string{"neon", "avx2", "avx2", "neon"}, []peer.ID{a, d}},
		{"three of one set win", []peer.ID{a, b, c, d}, []string{"neon", "avx2", "avx2", "avx2"}, []peer.ID{b, c, d}},
		{"one set", []peer.ID{a, b}, []string{"generic", "generic"}, []peer.ID{a, b}},
	} {
		var cat catalog
		var d routing.Decision
		var cands []Candidate
		for i, id := range tc.peers {
			cat = append(cat, served(id, tc.kernels[i]))
			rc := routing.Candidate{Peer: id.String(), Model: "m"}
			d.Candidates = append(d.Candidates, routing.Scored{Candidate: rc})
			cands = append(cands, Candidate{Candidate: rc})
		}
		r := New(Config{Self: newID(t), Catalog: cat, Local: Local{Models: func() []experts.Model { return nil }}})
		var got []peer.ID
		for _, tg := range r.verifyTargets(d, cands) {
			id, err := peer.Decode(tg.Name)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, id)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: targets %v, want %v", tc.name, got, tc.want)
		}
	}
}
