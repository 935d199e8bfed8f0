package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The dashboard carries a ledger section that reads /api/ledger and draws
// credits over time in an inline, labelled SVG.
func TestDashboardHasLedgerSection(t *testing.T) {
	srv, _ := serve(t, nil)
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: %d", resp.StatusCode)
	}
	// The page's script is a file of its own.
	js, err := http.Get(srv.URL + "/static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	defer js.Body.Close()
	script, err := io.ReadAll(js.Body)
	if err != nil {
		t.Fatal(err)
	}
	if js.StatusCode != http.StatusOK {
		t.Fatalf("GET /static/app.js: %d", js.StatusCode)
	}
	body = append(body, script...)
	for _, want := range []string{`id="ledger"`, `id="ledger-none"`, `id="ledger-peers"`, `id="ledger-chart"`, `"/api/ledger"`, `"aria-label"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("dashboard lacks %s", want)
		}
	}
}
