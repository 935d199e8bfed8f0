package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/inference/sharding"
)

// catalogOf returns n entries sorted by ID, as Catalog.Snapshot does.
func catalogOf(n int) []experts.Entry {
	out := make([]experts.Entry, n)
	for i := range out {
		out[i].Peer = fmt.Sprintf("peer-%05d", i)
	}
	return out
}

type pagedNode struct {
	fakeNode
	entries []experts.Entry
}

func (n pagedNode) PeersPage(p api.Page) api.Peers {
	return api.PeersView(n.entries, p, func(string) geo.RTT { return geo.RTT{} }, func(string) string { return "none" })
}

func (n pagedNode) ExpertsPage(p api.Page) api.Experts {
	return api.ExpertsView("self", nil, 0, nil, p)
}

func get(t *testing.T, h http.Handler, path string, v any) int {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://127.0.0.1"+path, nil))
	if v != nil && w.Code == http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return w.Code
}

// TestPeersArePaged: /api/peers answers a page (100 by default, at most
// MaxPageSize), says how many there are and where the next page starts,
// and refuses nonsense.
func TestPeersArePaged(t *testing.T) {
	h := api.NewServer(pagedNode{entries: catalogOf(1234)}, nil, nil)
	cases := []struct {
		query           string
		first           string
		n, offset, next int
		limit           int
	}{
		{"", "peer-00000", api.DefaultPageSize, 0, api.DefaultPageSize, api.DefaultPageSize},
		{"?limit=10&offset=20", "peer-00020", 10, 20, 30, 10},
		{"?limit=100000", "peer-00000", api.MaxPageSize, 0, api.MaxPageSize, api.MaxPageSize},
		{"?offset=1200", "peer-01200", 34, 1200, 0, api.DefaultPageSize},
		{"?offset=5000", "", 0, 1234, 0, api.DefaultPageSize},
	}
	for _, c := range cases {
		var ps api.Peers
		if code := get(t, h, "/api/peers"+c.query, &ps); code != http.StatusOK {
			t.Fatalf("%q: %d", c.query, code)
		}
		next := 0
		if ps.NextOffset != nil {
			next = *ps.NextOffset
		}
		if len(ps.Peers) != c.n || ps.Total != 1234 || ps.Offset != c.offset || next != c.next || ps.Limit != c.limit ||
			(c.n > 0 && ps.Peers[0].ID != c.first) {
			t.Errorf("%q: %d peers from %q, total %d, offset %d, next %d, limit %d", c.query, len(ps.Peers), c.first, ps.Total, ps.Offset, next, ps.Limit)
		}
	}
	for _, q := range []string{"?limit=0", "?limit=-1", "?limit=x", "?offset=-3", "?model=" + strings.Repeat("m", 300)} {
		if code := get(t, h, "/api/peers"+q, nil); code != http.StatusBadRequest {
			t.Errorf("%q: %d, want 400", q, code)
		}
	}
	// A node without PagedNode is paged by the server.
	if code := get(t, api.NewServer(fakeNode{}, nil, nil), "/api/peers?limit=5", nil); code != http.StatusOK {
		t.Fatalf("unpaged node: %d", code)
	}
}

// TestExpertsListOnlyVerifiedModels: models whose manifest this peer holds
// are listed with counts, and in detail with ?model=; shards announced of
// any other model are only counted, whatever shape they claim.
func TestExpertsListOnlyVerifiedModels(t *testing.T) {
	id := strings.Repeat("ab", 32)
	local := []sharding.LocalModel{{ID: id, Name: "tiny", Layers: 2, Experts: 4, ExpertsUsed: 2, Dense: true}}
	sum := experts.NewShardSummary(id, "tiny", 2, 4)
	for l := range 2 {
		for e := range 4 {
			sum.Set(l, e)
		}
	}
	var entries []experts.Entry
	for i := range 3 {
		e := experts.Entry{}
		e.Peer = fmt.Sprintf("host-%d", i)
		e.Shards = []experts.ShardSummary{sum}
		entries = append(entries, e)
	}
	for i := range 1000 { // a flood of fake models, each claiming 1024 x 64 experts
		e := experts.Entry{}
		e.Peer = fmt.Sprintf("sybil-%d", i)
		e.Shards = []experts.ShardSummary{experts.NewShardSummary(fmt.Sprintf("%064x", i), "fake", 1024, 64)}
		entries = append(entries, e)
	}
	list := api.ExpertsView("self", local, 0, entries, api.Page{})
	if len(list.Models) != 1 || list.Total != 1 || list.Unverified != 1000 {
		t.Fatalf("list: %d models, total %d, unverified %d", len(list.Models), list.Total, list.Unverified)
	}
	m := list.Models[0]
	if m.HostCount != 3 || m.RunnerCount != 0 || m.MinReplicas != 3 || m.Replicas != nil || m.Hosts != nil || m.Local == nil {
		t.Fatalf("list entry: %+v", m)
	}
	for _, q := range []string{id, "tiny"} {
		d := api.ExpertsView("self", local, 0, entries, api.Page{Model: q})
		if len(d.Models) != 1 || len(d.Models[0].Hosts) != 3 || len(d.Models[0].Replicas) != 2 || d.Models[0].Replicas[1][3] != 3 {
			t.Fatalf("detail of %q: %+v", q, d)
		}
	}
	if d := api.ExpertsView("self", local, 0, entries, api.Page{Model: fmt.Sprintf("%064x", 7)}); len(d.Models) != 0 {
		t.Fatalf("an unverified model in detail: %+v", d.Models)
	}
	body, _ := json.Marshal(list)
	if len(body) > 4<<10 {
		t.Fatalf("list of one model is %d bytes", len(body))
	}
}
