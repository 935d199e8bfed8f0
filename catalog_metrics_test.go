package mwpeer

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// scrape returns the value of an unlabelled metric on p's /metrics.
func scrape(t *testing.T, p *Peer, name string) (float64, error) {
	t.Helper()
	resp, err := http.Get("http://" + p.HTTPAddr() + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}

// TestMetricsShowCatalogBytes: /metrics carries the catalog's counted
// bytes (mwpeer_catalog_bytes) and its budget (mwpeer_catalog_max_bytes,
// as configured), and /api/status the same: once two peers are heard,
// what the catalog counts for them (Catalog.Bytes).
func TestMetricsShowCatalogBytes(t *testing.T) {
	const budget = 3_000_000
	peers := startSwarm(t, 3, func(i int, c *Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.CatalogMaxBytes = budget
	})
	p := peers[0]
	if got, err := scrape(t, p, "mwpeer_catalog_max_bytes"); err != nil || got != budget {
		t.Fatalf("mwpeer_catalog_max_bytes %v (%v), want %d", got, err, budget)
	}
	wait.For(t, slow(20*time.Second), "the catalog holds the other two and /metrics counts them", func() error {
		if p.Catalog.Len() != 2 {
			return fmt.Errorf("catalog of %d", p.Catalog.Len())
		}
		got, err := scrape(t, p, "mwpeer_catalog_bytes")
		if err != nil {
			return err
		}
		// Two typical synthetic entries: more than their fixed overhead,
		// far less than the budget. A beat can change the sum between
		// the scrape and this read, by a beat's few hundred bytes.
		held, _ := p.Catalog.Bytes()
		if got < 1000 || got > budget/10 || got < float64(held)-2000 || got > float64(held)+2000 {
			return fmt.Errorf("mwpeer_catalog_bytes %v, the catalog counts %d", got, held)
		}
		return nil
	})
	var st api.Status
	getJSON(t, p, "/api/status", &st)
	if held, _ := p.Catalog.Bytes(); st.CatalogMaxBytes != budget || st.CatalogBytes < 1000 || st.CatalogBytes > held+2000 {
		t.Errorf("status: catalog_bytes %d of %d, the catalog counts %d of %d", st.CatalogBytes, st.CatalogMaxBytes, held, budget)
	}
}
