package api

import (
	"embed"
	"net/http"
	"sync"
)

//go:embed static/index.html static/app.js static/land-110m.svg
var static embed.FS

// staticTypes are the files the dashboard loads besides itself, with their
// content types: its script (kept out of the page so that the
// Content-Security-Policy needs no inline script) and the world outline of
// its map (Natural Earth 1:110m land, public domain; see
// static/world-atlas).
var staticTypes = map[string]string{
	"app.js":        "text/javascript; charset=utf-8",
	"land-110m.svg": "image/svg+xml",
}

// dashboardPolicy is the dashboard's Content-Security-Policy, with the
// hashes of its inline styles.
var dashboardPolicy = sync.OnceValue(func() string {
	data, _ := static.ReadFile("static/index.html")
	return pagePolicy(data)
})

// dashboard serves the web dashboard: one page that reads /api/status,
// /api/peers, /api/rtt, /api/experts, /api/ledger and /v1/models, and streams
// prompts through /v1/chat/completions.
func dashboard(w http.ResponseWriter, r *http.Request) {
	data, err := static.ReadFile("static/index.html")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", "dashboard missing from the binary")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", dashboardPolicy())
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(data)
}

// staticFile serves GET /static/{file}: the dashboard's script and map.
// They keep the API's policy, which runs and loads nothing: the script runs
// under the page's policy, and the SVG is drawn as an image.
func staticFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	typ, ok := staticTypes[name]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such file: "+r.URL.Path)
		return
	}
	data, err := static.ReadFile("static/" + name)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", "dashboard file missing from the binary")
		return
	}
	w.Header().Set("Content-Type", typ)
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(data)
}
