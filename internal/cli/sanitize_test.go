package cli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCleanDropsTerminalControls(t *testing.T) {
	for _, c := range []struct{ name, in, field, text string }{
		{"plain", "eu-west", "eu-west", "eu-west"},
		{"unicode kept", "Zürich – 東京 ✓", "Zürich – 東京 ✓", "Zürich – 東京 ✓"},
		{"newline and tab", "a\tb\nc", "abc", "a\tb\nc"},
		{"carriage return", "ok\rEVIL", "okEVIL", "okEVIL"},
		{"SGR colour", "\x1b[31mred\x1b[0m", "red", "red"},
		{"clear screen", "x\x1b[2J\x1b[Hy", "xy", "xy"},
		{"CSI with private parameters", "\x1b[?1049hz", "z", "z"},
		{"OSC title with BEL", "\x1b]0;pwned\x07eu", "eu", "eu"},
		{"OSC hyperlink with ST", "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\", "click", "click"},
		{"OSC 52 clipboard", "\x1b]52;c;ZXZpbA==\x07m", "m", "m"},
		{"DCS", "\x1bPq#0;2;0;0;0\x1b\\d", "d", "d"},
		{"two-character escape", "\x1bcreset", "reset", "reset"},
		{"ESC at the end", "abc\x1b", "abc", "abc"},
		{"unterminated OSC", "a\x1b]0;title", "a", "a"},
		{"C1 CSI", "a\u009b31mb", "ab", "ab"},
		{"C1 OSC", "a\u009d0;t\u009cb", "ab", "ab"},
		{"other C1", "a\u0085b\u008ec", "abc", "abc"},
		{"bell, backspace, NUL, DEL", "a\x07b\x08c\x00d\x7fe", "abcde", "abcde"},
		{"bidi override", "abc\u202edcba\u202c", "abcdcba", "abcdcba"},
		{"bidi isolates and marks", "\u2066x\u2069\u200e\u200f\u061cy", "xy", "xy"},
		{"invalid UTF-8", "a\xffb\xc2", "a\ufffdb\ufffd", "a\ufffdb\ufffd"},
	} {
		if got := clean(c.in); got != c.field {
			t.Errorf("%s: clean(%q) = %q, want %q", c.name, c.in, got, c.field)
		}
		if got := cleanText(c.in); got != c.text {
			t.Errorf("%s: cleanText(%q) = %q, want %q", c.name, c.in, got, c.text)
		}
	}
}

func TestCleanJSONKeepsMeaning(t *testing.T) {
	in := map[string]string{"region": "eu\u009b2J\u202e\x7fwest", "ok": "plain ✓", "esc": "\x1b[31m"}
	raw, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	out := cleanJSON(raw)
	if s := string(out); !isClean(s, true) {
		t.Fatalf("cleanJSON left controls: %q", s)
	}
	var back map[string]string
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatalf("cleanJSON broke the JSON: %v\n%s", err, out)
	}
	for k, v := range in {
		if back[k] != v {
			t.Errorf("%s: %q after cleanJSON, want %q", k, back[k], v)
		}
	}
	if clean := []byte(`{"a": 1}`); &cleanJSON(clean)[0] != &clean[0] {
		t.Error("cleanJSON copied JSON that needed nothing")
	}
}

// hostile is a peer's HTTP API whose every string carries terminal controls.
func hostile(t *testing.T) string {
	t.Helper()
	// Escaped in JSON as Go's encoder writes C0 controls, and raw as it
	// writes C1, DEL and bidi controls.
	const esc = `\u001b]0;pwned\u0007\u001b[2J\u009b31m\u202e\u007f` + "\u009b2J\u202e\x7f"
	answers := map[string]string{
		"/api/status": `{"id":"12D3KooWself` + esc + `","version":"v` + esc + `","engine":"ollama` + esc + `",
			"models":["m` + esc + `"],"domains":["code` + esc + `"],"listen_addrs":["/ip4/1.2.3.4` + esc + `"],
			"rejected_announcements":{"bad` + esc + `":1},"connections":[{"peer":"12D3KooWother` + esc + `","transport":"tcp` + esc + `","direction":"in"}]}`,
		"/api/peers": `{"peers":[{"id":"12D3KooWpeer` + esc + `","domains":["math` + esc + `"],"models":[{"name":"llama` + esc + `"}],
			"region":"eu` + esc + `","rtt_ms":1.5,"rtt_source":"measured` + esc + `","conn":"direct` + esc + `","last_seen":"2025-01-01T00:00:00Z"}]}`,
		"/api/route": `{"domains":[{"domain":"code` + esc + `","score":1}],"k":1,
			"candidates":[{"peer":"12D3KooWpeer` + esc + `","model":"llama` + esc + `","score":1,"parts":{"rtt` + esc + `":0.5}}],"chosen":[]}`,
		"/v1/chat/completions": "data: {\"choices\":[{\"delta\":{\"content\":\"line one" + esc + "\\n\\tline two\"}}]}\n\n" +
			"data: {\"choices\":[],\"mwpeer\":{\"experts\":[\"12D3KooWpeer" + esc + "\"]}}\n\ndata: [DONE]\n\n",
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := answers[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestClientCommandsPrintNoControls(t *testing.T) {
	addr := hostile(t)
	for _, args := range [][]string{
		{"status", "--http", addr},
		{"peers", "--http", addr},
		{"route", "--http", addr, "hi"},
		{"chat", "--http", addr, "hi"},
		{"status", "--http", addr, "--json"},
		{"peers", "--http", addr, "--json"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var stdout, stderr strings.Builder
		code := Run(ctx, args, &stdout, &stderr)
		cancel()
		if code != exitOK {
			t.Errorf("%v: exit %d: %s", args, code, stderr.String())
		}
		out := stdout.String() + stderr.String()
		if !isClean(out, true) {
			t.Errorf("%v printed controls: %q", args, out)
		}
		if strings.Contains(out, "pwned") && !slices.Contains(args, "--json") {
			t.Errorf("%v printed the payload of an escape sequence: %q", args, out)
		}
		if args[0] == "chat" && !strings.Contains(stdout.String(), "line one\n\tline two") {
			t.Errorf("chat lost the answer's newline or tab: %q", stdout.String())
		}
	}
}

func TestAllowedOriginsFlagIsChecked(t *testing.T) {
	var stdout, stderr strings.Builder
	code := Run(context.Background(), []string{"id", "--data-dir", t.TempDir(), "--allowed-origins", "app.example"}, &stdout, &stderr)
	if code != exitUsage || !strings.Contains(stderr.String(), "--allowed-origins") {
		t.Fatalf("exit %d, stderr %q; want %d naming --allowed-origins", code, stderr.String(), exitUsage)
	}
}
