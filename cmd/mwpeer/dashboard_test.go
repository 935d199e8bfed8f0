package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/mwpeer/mwpeer/internal/browsertest"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// TestDashboardSaysWhenModelPeerIsKilled opens the dashboard of one mwpeer
// process, picks the model only a second process serves, gets an answer
// from it, and kills that process with SIGKILL: the page says the model
// left the swarm, keeps it chosen, and a prompt to it is answered with what
// happened and what to do, not with a Go error.
func TestDashboardSaysWhenModelPeerIsKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 2 mwpeer processes and Chromium; skipped with -short")
	}
	b := browsertest.Start(t, 1280, 900)
	bin := buildBinary(t)
	root := t.TempDir()
	page := startProc(t, bin, filepath.Join(root, "page"), "general", "")
	other := startProc(t, bin, filepath.Join(root, "other"), "code", page.boot)
	wait.For(t, 15*time.Second, "the peers see each other", func() error { return everyoneSees([]*proc{page, other}) })

	b.Do("open", 30*time.Second, chromedp.Navigate("http://"+page.http+"/"))
	b.Until("the other's model is offered", `[...document.getElementById("model").options].some((o) => o.value === "syn-code")`, 45*time.Second)
	b.Do("ask syn-code", 20*time.Second,
		chromedp.SetValue(chromedp.ID("model"), "syn-code"),
		chromedp.SendKeys(chromedp.ID("prompt"), "write a loop"+kb.Enter))
	b.Until("answered by the other peer", fmt.Sprintf(`(() => { const m = document.querySelector(".msg.assistant .meta"); return !!m && m.textContent.includes("answered by peer %s"); })()`, other.id[:6]), 30*time.Second)

	if err := other.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-other.done
	took := time.Now()
	b.Until("the page says the model left", `!document.getElementById("model-notice").hidden && /syn-code.*left the swarm/.test(document.getElementById("model-notice").textContent) && document.getElementById("model").value === "syn-code"`, 30*time.Second)
	t.Logf("the page said syn-code left %s after the kill", time.Since(took).Round(time.Millisecond))

	b.Do("ask again", 20*time.Second, chromedp.SendKeys(chromedp.ID("prompt"), "still there?"+kb.Enter))
	b.Until("a human error", `(() => { const e = document.querySelectorAll(".msg.assistant .errmsg")[1]; return !!e && !e.hidden && e.textContent.length > 0; })()`, 30*time.Second)
	msg := browsertest.Eval[string](b, `document.querySelectorAll(".msg.assistant .errmsg")[1].textContent`)
	t.Logf("the page said: %s", msg)
	// Depending on whether the request found the dead peer still in a
	// catalog, it failed to dial it or found no one serving the model;
	// either way the page names the model and says what to do.
	if want := `No peer serves the model "syn-code" any more. Pick another model`; !strings.Contains(msg, want) {
		t.Errorf("error %q does not say %q", msg, want)
	}
	if strings.Contains(msg, "all dials failed") || strings.Contains(msg, "/ip4/") {
		t.Errorf("error %q shows Go's dial error", msg)
	}
	b.Screenshot("dashboard-model-gone")
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the page logged errors: %q", errs)
	}
}
