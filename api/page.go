package api

import (
	"fmt"
	"net/http"
	"strconv"
)

// Paging of GET /api/peers and /api/experts. A catalog holds up to 10,000
// peers, and anyone can announce: the API answers a page at a time so that
// neither the answer nor the work to build it grows with what strangers say.
const (
	// DefaultPageSize is the page size without ?limit=.
	DefaultPageSize = 100
	// MaxPageSize caps ?limit= (larger values are cut to it). A peer
	// entry is at most one announcement's worth (32 KiB signed, typically
	// under 1 KiB), so a page is bounded by a few megabytes at worst.
	MaxPageSize = 500
)

// Page is what a paged view was asked for: ?limit= items from ?offset= on,
// in the view's stable order (peer ID; model name and ID), and for
// /api/experts ?model= (an ID or a name) for one model in detail.
type Page struct {
	Limit  int
	Offset int
	Model  string
}

// PageOf reads ?limit=, ?offset= and ?model= from r.
func PageOf(r *http.Request) (Page, error) {
	q := r.URL.Query()
	p := Page{Limit: DefaultPageSize, Model: q.Get("model")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return Page{}, fmt.Errorf("limit %q: want a positive integer", s)
		}
		p.Limit = min(n, MaxPageSize)
	}
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return Page{}, fmt.Errorf("offset %q: want a non-negative integer", s)
		}
		p.Offset = n
	}
	if len(p.Model) > 256 {
		return Page{}, fmt.Errorf("model: longer than 256 bytes")
	}
	return p, nil
}

// bounds returns the slice bounds of the page over n items.
func (p Page) bounds(n int) (from, to int) {
	limit := p.Limit
	if limit <= 0 {
		limit = DefaultPageSize
	}
	limit = min(limit, MaxPageSize)
	from = min(max(p.Offset, 0), n)
	return from, min(from+limit, n)
}

// PagedNode is a Node that builds only the page of peers or experts asked
// for. The server uses it when the node has it, and otherwise pages what
// Peers and Experts return.
type PagedNode interface {
	PeersPage(Page) Peers
	ExpertsPage(Page) Experts
}

func (s *Server) handlePeers(w http.ResponseWriter, r *http.Request) {
	page, err := PageOf(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if n, ok := s.node.(PagedNode); ok {
		writeJSON(w, http.StatusOK, n.PeersPage(page))
		return
	}
	all := s.node.Peers()
	from, to := page.bounds(len(all.Peers))
	out := Peers{Peers: all.Peers[from:to], Total: len(all.Peers), Offset: from, Limit: to - from}
	if to < out.Total {
		out.NextOffset = &to
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleExperts(w http.ResponseWriter, r *http.Request) {
	page, err := PageOf(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if n, ok := s.node.(PagedNode); ok {
		writeJSON(w, http.StatusOK, n.ExpertsPage(page))
		return
	}
	writeJSON(w, http.StatusOK, s.node.Experts())
}
