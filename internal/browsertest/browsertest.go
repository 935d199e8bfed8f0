// Package browsertest drives the dashboard in a headless Chromium for tests:
// it finds the browser, starts it as CI runs it (as root, without a
// sandbox), and records in every page what a test must see: console errors,
// uncaught exceptions, failed loads, Content-Security-Policy violations and
// the page's fetches in flight. It is for tests only.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// Chromium finds a Chromium or Chrome binary: $MWPEER_CHROMIUM, else the
// usual names in PATH; "" when there is none.
func Chromium() string {
	if p := os.Getenv("MWPEER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// recorder runs before every page's own scripts. window.mwpeerTest holds
// what it saw: errors (console.error, uncaught exceptions and rejections,
// resources that failed to load, CSP violations), and for each fetched path
// the fetches in flight now and the most ever at once.
const recorder = `(() => {
const rec = window.mwpeerTest = { errors: [], inflight: {}, maxInflight: {}, fetches: {} };
const push = (s) => rec.errors.push(String(s).slice(0, 500));
const ce = console.error.bind(console);
console.error = (...a) => { push("console.error: " + a.join(" ")); ce(...a); };
window.addEventListener("error", (e) => {
  if (e.target && e.target !== window && (e.target.src || e.target.href)) push("failed to load " + (e.target.src || e.target.href));
  else push("uncaught: " + e.message);
}, true);
window.addEventListener("unhandledrejection", (e) => push("unhandled rejection: " + (e.reason && e.reason.stack || e.reason)));
document.addEventListener("securitypolicyviolation", (e) => push("CSP: " + e.violatedDirective + " " + e.blockedURI));
const f = window.fetch.bind(window);
window.fetch = (input, init) => {
  const path = new URL(typeof input === "string" ? input : input.url, location.href).pathname;
  rec.inflight[path] = (rec.inflight[path] || 0) + 1;
  rec.fetches[path] = (rec.fetches[path] || 0) + 1;
  rec.maxInflight[path] = Math.max(rec.maxInflight[path] || 0, rec.inflight[path]);
  const done = () => { rec.inflight[path]--; };
  const p = f(input, init);
  p.then(done, done);
  return p;
};
})();`

// Browser is one headless Chromium with one tab.
type Browser struct {
	t   testing.TB
	ctx context.Context
}

// Start starts Chromium with a width × height window, or skips t when there
// is none. It is closed when t ends.
func Start(t testing.TB, width, height int) *Browser {
	t.Helper()
	bin := Chromium()
	if bin == "" {
		t.Skip("no Chromium: install the chromium package or set MWPEER_CHROMIUM to a Chrome binary")
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.WindowSize(width, height),
		chromedp.UserDataDir(t.TempDir()),
	)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(func() { bcancel(); acancel() })
	// The first action starts the browser, which lives as long as bctx.
	if err := chromedp.Do(bctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: recorder})
		return err
	}), chromedp.EmulateViewport(int64(width), int64(height))); err != nil {
		t.Fatalf("start Chromium (%s): %v", bin, err)
	}
	return &Browser{t: t, ctx: bctx}
}

// Do runs actions with a deadline, failing the test on an error.
func (b *Browser) Do(what string, within time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, within)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// Until polls the JavaScript expression cond until it is true, failing the
// test after within.
func (b *Browser) Until(what, cond string, within time.Duration) {
	b.t.Helper()
	b.Do(what, within+5*time.Second, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(100*time.Millisecond)))
}

// Eval evaluates expr in the page into T.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// Errors are the errors the page recorded (see recorder).
func (b *Browser) Errors() []string {
	return Eval[[]string](b, `window.mwpeerTest ? window.mwpeerTest.errors : ["recorder missing"]`)
}

// ScreenshotDir is where screenshots go: $MWPEER_SCREENSHOTS (the
// committed ones are refreshed with MWPEER_SCREENSHOTS=testdata/screenshots,
// relative to the package under test), else a directory under the system's
// temporary one, so a test run leaves the working tree as it was.
func ScreenshotDir() string {
	if d := os.Getenv("MWPEER_SCREENSHOTS"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "mwpeer-screenshots")
}

// Screenshot saves the whole page as name.png in ScreenshotDir.
func (b *Browser) Screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // PNG
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := ScreenshotDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
}
