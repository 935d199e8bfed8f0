package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/internal/browsertest"
)

// prompts is how many prompts reached the swarm.
func (f *fakeSwarm) prompts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.maxTokens)
}

// browserNode is a Node whose status the dashboard can render.
type browserNode struct{}

const browserPeerID = "12D3KooWbrowserTestPeer"

func (browserNode) Status() api.Status   { return api.Status{ID: browserPeerID} }
func (browserNode) Peers() api.Peers     { return api.Peers{Peers: []api.PeerInfo{}} }
func (browserNode) RTT() api.RTTMatrix   { return api.RTTMatrix{} }
func (browserNode) Experts() api.Experts { return api.Experts{Models: []api.ShardedModel{}} }

// hits records the requests a server saw that came with a given Origin.
type hits struct {
	origin string
	mu     sync.Mutex
	seen   []string // "METHOD /path"
}

func (h *hits) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") == h.origin {
			h.mu.Lock()
			h.seen = append(h.seen, r.Method+" "+r.URL.Path)
			h.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

func (h *hits) saw(req string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.seen {
		if s == req {
			return true
		}
	}
	return false
}

// evilPage tries every way a page of another origin has to use the API at
// target, and writes what it read into #result, then shows #done.
const evilPage = `<!doctype html>
<html><body>
<pre id="result"></pre>
<div id="done" hidden>done</div>
<iframe name="sink"></iframe>
<form id="form" method="POST" action="%[1]s/v1/chat/completions" enctype="text/plain" target="sink">
<input name='{"model":"m","messages":[{"role":"user","content":"form"}],"x":"' value='"}'>
</form>
<script>
const target = %[1]q;
const body = JSON.stringify({model: "m", messages: [{role: "user", content: "evil"}]});
const results = {};
async function attempt(name, f) {
  try {
    const r = await f();
    let text = "";
    try { text = await r.text(); } catch (e) { text = "unreadable: " + e; }
    results[name] = {type: r.type, status: r.status, body: text};
  } catch (e) {
    results[name] = {error: String(e)};
  }
}
async function form() {
  const loaded = new Promise((ok) => document.querySelector("iframe").addEventListener("load", ok, {once: true}));
  document.getElementById("form").submit();
  await Promise.race([loaded, new Promise((ok) => setTimeout(ok, 5000))]);
}
(async () => {
  await attempt("cors_post", () => fetch(target + "/v1/chat/completions", {method: "POST", mode: "cors", headers: {"Content-Type": "application/json"}, body}));
  await attempt("no_cors_post", () => fetch(target + "/v1/chat/completions", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body}));
  await attempt("cors_status", () => fetch(target + "/api/status"));
  await attempt("no_cors_status", () => fetch(target + "/api/status", {mode: "no-cors"}));
  await form();
  document.getElementById("result").textContent = JSON.stringify(results);
  document.getElementById("done").hidden = false;
})();
</script>
</body></html>`

// attemptResult is what the evil page could make of one request.
type attemptResult struct {
	Type   string `json:"type"`
	Status int    `json:"status"`
	Body   string `json:"body"`
	Error  string `json:"error"`
}

// TestBrowserCannotAbuseAPI drives a real Chromium: a page of another origin
// reads nothing from the API and runs no prompt, a request with a rebinding
// Host is refused, and the dashboard on its own origin still works under its
// Content-Security-Policy.
func TestBrowserCannotAbuseAPI(t *testing.T) {
	bin := browsertest.Chromium()
	if bin == "" {
		t.Skip("no Chromium: install the chromium package or set MWPEER_CHROMIUM to a Chrome binary")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	// The API on 127.0.0.1, the evil page on 127.0.0.2: another origin and
	// another site to the browser, and loopback to loopback, so that no
	// Private Network Access rule of Chromium's steps in before the guard.
	sw := &fakeSwarm{}
	s := api.NewServer(browserNode{}, sw, nil)
	evilLn, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2 for a second origin: %v", err)
	}
	evil := httptest.NewUnstartedServer(nil)
	evil.Listener.Close()
	evil.Listener = evilLn
	evilOrigin := "http://" + evilLn.Addr().String()
	seen := &hits{origin: evilOrigin}
	srv := httptest.NewServer(seen.wrap(s))
	t.Cleanup(srv.Close)
	if err := s.SetGuard(api.Guard{Listen: srv.Listener.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	evil.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, evilPage, srv.URL)
	})
	evil.Start()
	t.Cleanup(evil.Close)

	actx, acancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(bin),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	// The first action starts the browser, which lives as long as bctx: no
	// shorter deadline on this one. It records CSP violations on every page.
	record := `window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => window.cspViolations.push(e.violatedDirective + " " + e.blockedURI));`
	if err := chromedp.Do(bctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: record})
		return err
	})); err != nil {
		t.Fatalf("start Chromium (%s): %v", bin, err)
	}
	step := func(name string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, scancel := context.WithTimeout(bctx, 30*time.Second)
		defer scancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}

	t.Run("another origin reads nothing and runs nothing", func(t *testing.T) {
		step("evil page", chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.ID("done")))
		sctx, scancel := context.WithTimeout(bctx, 10*time.Second)
		defer scancel()
		raw, err := chromedp.Run(sctx, chromedp.TextContent(chromedp.ID("result")))
		if err != nil {
			t.Fatal(err)
		}
		var results map[string]attemptResult
		if err := json.Unmarshal([]byte(raw), &results); err != nil {
			t.Fatalf("result %q: %v", raw, err)
		}
		t.Logf("the evil page got: %s", raw)
		for _, name := range []string{"cors_post", "no_cors_post", "cors_status", "no_cors_status"} {
			r, ok := results[name]
			switch {
			case !ok:
				t.Errorf("%s: no result", name)
			case r.Error != "":
				// A refused CORS request: a network error to the page.
			case r.Type == "opaque" && r.Status == 0 && r.Body == "":
				// A no-cors answer the page cannot open.
			default:
				t.Errorf("%s: the page read %+v", name, r)
			}
		}
		// The browser did ask: the guard, not the browser, said no.
		for _, req := range []string{"OPTIONS /v1/chat/completions", "POST /v1/chat/completions", "GET /api/status"} {
			if !seen.saw(req) {
				t.Errorf("the API never saw %s from %s", req, evilOrigin)
			}
		}
		if n := sw.prompts(); n != 0 {
			t.Errorf("%d prompts from another origin reached the swarm", n)
		}
	})

	t.Run("rebinding Host is refused", func(t *testing.T) {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		defer rcancel()
		for _, path := range []string{"/api/status", "/v1/chat/completions"} {
			method, body := http.MethodGet, ""
			if strings.HasPrefix(path, "/v1") {
				method, body = http.MethodPost, chatBody
			}
			req, err := http.NewRequestWithContext(rctx, method, srv.URL+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Host = "attacker.example:" + fmt.Sprint(srv.Listener.Addr().(*net.TCPAddr).Port)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s %s with Host %s: %d, want 403", method, path, req.Host, resp.StatusCode)
			}
		}
		if n := sw.prompts(); n != 0 {
			t.Errorf("%d prompts with a rebinding Host reached the swarm", n)
		}
	})

	t.Run("the dashboard works on its own origin", func(t *testing.T) {
		step("dashboard", chromedp.Navigate(srv.URL+"/"),
			chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.getElementById("peer-id").textContent === %q`, browserPeerID),
				chromedp.WithPollingTimeout(20*time.Second)),
			chromedp.SetValue(chromedp.ID("prompt"), "hello from the dashboard"),
			chromedp.Click(chromedp.ID("send")),
			chromedp.Poll[chromedp.Void](`(() => { const a = document.querySelector(".msg.assistant .body"); return !!a && a.textContent === "hello world"; })()`,
				chromedp.WithPollingTimeout(20*time.Second)),
		)
		if n := sw.prompts(); n != 1 {
			t.Errorf("%d prompts reached the swarm from the dashboard, want 1", n)
		}
		sctx, scancel := context.WithTimeout(bctx, 10*time.Second)
		defer scancel()
		violations, err := chromedp.Run(sctx, chromedp.Evaluate[[]string](`window.cspViolations`))
		if err != nil {
			t.Fatal(err)
		}
		if len(violations) > 0 {
			t.Errorf("the dashboard broke its Content-Security-Policy: %q", violations)
		}
	})
}
