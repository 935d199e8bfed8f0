//go:build unix

package api_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/internal/browsertest"
)

// TestDashboardPeerProcess is not a test: it is the peer process of
// TestDashboardFrozenPeer, serving the API of a known swarm on loopback
// until it is killed.
func TestDashboardPeerProcess(t *testing.T) {
	if os.Getenv("MWPEER_DASHBOARD_PEER") != "1" {
		t.Skip("the peer process of TestDashboardFrozenPeer")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &knownSwarm{models: []string{"m1"}}
	fmt.Printf("listening http://%s\n", ln.Addr())
	http.Serve(ln, api.NewServer(k, k, nil))
}

// TestDashboardFrozenPeer freezes the page's peer with SIGSTOP: the page
// marks its data stale, and keeps at most one request per endpoint in
// flight while the peer does not answer; once the peer resumes, the marker
// goes.
func TestDashboardFrozenPeer(t *testing.T) {
	b := browsertest.Start(t, 1280, 900)
	cmd := exec.Command(os.Args[0], "-test.run=^TestDashboardPeerProcess$")
	cmd.Env = append(os.Environ(), "MWPEER_DASHBOARD_PEER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := bufio.NewScanner(out)
	var url string
	for lines.Scan() {
		if u, ok := strings.CutPrefix(lines.Text(), "listening "); ok {
			url = u
			break
		}
	}
	if url == "" {
		t.Fatalf("the peer process did not say where it listens: %v", lines.Err())
	}
	go func() {
		for lines.Scan() {
		}
	}()

	b.Do("open", 30*time.Second, chromedp.Navigate(url+"/"))
	b.Until("fresh", fmt.Sprintf(`document.getElementById("peer-id").textContent === %q && document.getElementById("stale").hidden`, knownSelf), 45*time.Second)

	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	before := browsertest.Eval[int](b, `window.mwpeerTest.fetches["/api/status"] || 0`)
	b.Until("stale marker", `!document.getElementById("stale").hidden && document.body.classList.contains("is-stale") && /Stale|does not answer/.test(document.getElementById("stale").textContent)`, 45*time.Second)
	// Wait for the page to have tried the frozen peer several times over.
	b.Until("more polls", fmt.Sprintf(`(window.mwpeerTest.fetches["/api/status"] || 0) >= %d`, before+3), 60*time.Second)
	maxInflight := browsertest.Eval[map[string]int](b, `window.mwpeerTest.maxInflight`)
	t.Logf("most requests in flight per path: %v", maxInflight)
	for path, n := range maxInflight {
		if n > 1 {
			t.Errorf("%s: %d requests in flight at once to a frozen peer, want at most 1", path, n)
		}
	}
	b.Screenshot("dashboard-stale")

	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	b.Until("fresh again", `document.getElementById("stale").hidden && !document.body.classList.contains("is-stale")`, 30*time.Second)
}
