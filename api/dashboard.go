package api

import (
	"embed"
	"net/http"
	"sync"
)

//go:embed static/index.html
var static embed.FS

// dashboardPolicy is the dashboard's Content-Security-Policy, with the
// hashes of its inline scripts and styles.
var dashboardPolicy = sync.OnceValue(func() string {
	data, _ := static.ReadFile("static/index.html")
	return pagePolicy(data)
})

// dashboard serves the web dashboard: one page that reads /api/status,
// /api/peers and /v1/models and streams prompts through /v1/chat/completions.
func dashboard(w http.ResponseWriter, r *http.Request) {
	data, err := static.ReadFile("static/index.html")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", "dashboard missing from the binary")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", dashboardPolicy())
	w.Write(data)
}
