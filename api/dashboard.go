package api

import (
	"embed"
	"net/http"
)

//go:embed static/index.html
var static embed.FS

// dashboard serves the web dashboard: one page that reads /api/status,
// /api/peers and /v1/models and streams prompts through /v1/chat/completions.
func dashboard(w http.ResponseWriter, r *http.Request) {
	data, err := static.ReadFile("static/index.html")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", "dashboard missing from the binary")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
	w.Write(data)
}
