package api_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/browsertest"
	"github.com/mwpeer/mwpeer/routing"
	"github.com/mwpeer/mwpeer/swarm"
)

// knownSwarm is a swarm the dashboard's pictures can be counted against:
// this peer and three others, two of them placed on the map, one announcing
// a hostile region; a sharded model of 3 layers × 4 experts with 2 experts
// missing.
type knownSwarm struct {
	mu       sync.Mutex
	models   []string
	seen     [][]inference.Message // the messages of every prompt
	canceled int                   // prompts whose request went away
	polls    int64                 // /api/status answered: the engine "generates" 50 tokens between two
}

const (
	knownSelf = "12D3KooWdashboardSelfPeerAAAAAAAAAAAAAAAAAAAAAAAAAA"
	// hostileRegion is HTML and 2,000 characters without a space.
	hostileRegion = `<img src=x onerror="window.pwned=1"><b>bold</b>`
)

var knownPeers = []string{
	"12D3KooWdashboardPeerOneBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
	"12D3KooWdashboardPeerTwoCCCCCCCCCCCCCCCCCCCCCCCCCCCCC",
	"12D3KooWdashboardPeerThreeDDDDDDDDDDDDDDDDDDDDDDDDDDD",
}

func longRegion() string { return hostileRegion + strings.Repeat("W", 2000-len(hostileRegion)) }

func (k *knownSwarm) Status() api.Status {
	k.mu.Lock()
	k.polls++
	gen := api.Generated{Requests: k.polls, Tokens: 50 * k.polls}
	k.mu.Unlock()
	return api.Status{ID: knownSelf, Generated: gen, Version: "test", Engine: "synthetic", Models: []string{"m1"}, Reachability: "private",
		Location: &api.Location{Lat: 48.85, Lon: 2.35}, Region: "eu-west",
		Announce:    api.AnnounceStatus{IntervalS: 5, TTLS: 30},
		Connections: []api.Connection{{Peer: knownPeers[0], Transport: "quic"}, {Peer: knownPeers[1], Transport: "tcp", Relayed: true}},
	}
}

func (k *knownSwarm) Peers() api.Peers {
	ms := 12.5
	now := time.Now()
	ps := []api.PeerInfo{
		{ID: knownPeers[0], Region: longRegion(), Location: &api.Location{Lat: 35.68, Lon: 139.69}, Models: []api.Model{{Name: "m1", Engine: "synthetic"}},
			RTTMs: &ms, RTTSource: "measured", Conn: "direct", LastSeen: now, Capacity: 4, Version: "0.1.0-test"},
		{ID: knownPeers[1], Region: "us-east", Location: &api.Location{Lat: 40.71, Lon: -74.0}, Models: []api.Model{{Name: "m2", Engine: "ollama"}},
			RTTSource: "unknown", Conn: "relayed", LastSeen: now.Add(-20 * time.Second), Capacity: 1},
		{ID: knownPeers[2], Conn: "none", RTTSource: "unknown", LastSeen: now.Add(-time.Minute), Capacity: 1},
	}
	for i := range ps {
		ps[i].Addrs, ps[i].Domains = []string{}, []string{}
		if ps[i].Models == nil {
			ps[i].Models = []api.Model{}
		}
	}
	return api.Peers{Peers: ps, Total: len(ps), Limit: len(ps)}
}

func (k *knownSwarm) RTT() api.RTTMatrix {
	ids := append([]string{knownSelf}, knownPeers...)
	m := api.RTTMatrix{Self: knownSelf, Peers: ids, RTT: map[string]map[string]api.RTTEntry{}}
	sources := []string{"measured", "reported", "coordinates", "distance"}
	for i, a := range ids {
		m.RTT[a] = map[string]api.RTTEntry{}
		for j, b := range ids {
			if i != j {
				m.RTT[a][b] = api.RTTEntry{Ms: float64(5 * (i + j + 1)), Source: sources[(i+j)%len(sources)]}
			}
		}
	}
	return m
}

func (k *knownSwarm) Experts() api.Experts { return k.ExpertsPage(api.Page{}) }

func (k *knownSwarm) PeersPage(api.Page) api.Peers { return k.Peers() }

func (k *knownSwarm) ExpertsPage(api.Page) api.Experts {
	m := api.ShardedModel{ID: "abc123", Name: "moe-tiny", Layers: 3, Experts: 4, RunnerCount: 1, HostCount: 2,
		Replicas: [][]int{{1, 2, 1, 0}, {2, 2, 1, 1}, {0, 1, 3, 1}}, MinReplicas: 0, Missing: 2,
		Warnings: []string{"2 of 12 experts have no live host: prompts routed to them fail"}}
	return api.Experts{Models: []api.ShardedModel{m}, Total: 1, Limit: 1}
}

func (k *knownSwarm) Models() []swarm.Model {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []swarm.Model
	for _, m := range k.models {
		out = append(out, swarm.Model{ID: m, Peers: 1, Engines: []string{"synthetic"}, Context: 4096})
	}
	return out
}

func (k *knownSwarm) setModels(ms ...string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.models = ms
}

func (k *knownSwarm) Route(ctx context.Context, q swarm.Query) (routing.Decision, error) {
	c := routing.Scored{Candidate: routing.Candidate{Peer: knownPeers[0], Model: "m1"}, Score: 0.7,
		Parts: routing.Parts{Relevance: 1, Speed: 0.6, Capacity: 0.8, Load: 1, Distance: 0.3, Failures: 1}}
	return routing.Decision{Domains: []routing.DomainScore{{Domain: "general", Score: 1}}, K: 1, Candidates: []routing.Scored{c}, Chosen: []routing.Scored{c}}, nil
}

// Complete answers "slow" prompts a token every 50 ms until the request goes
// away, and any other with a Markdown answer that says how many messages
// it saw and what the first was, with HTML in it that must stay text.
func (k *knownSwarm) Complete(ctx context.Context, q swarm.Query, emit func(string, inference.Chunk) error) (swarm.Answer, error) {
	msgs := q.Request.Messages
	k.mu.Lock()
	k.seen = append(k.seen, msgs)
	k.mu.Unlock()
	last := msgs[len(msgs)-1].Content
	if strings.Contains(last, "slow") {
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				k.mu.Lock()
				k.canceled++
				k.mu.Unlock()
				return swarm.Answer{}, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			if err := emit(knownPeers[0], inference.Chunk{Text: fmt.Sprintf("tok%d ", i)}); err != nil {
				return swarm.Answer{}, err
			}
		}
	}
	text := fmt.Sprintf("I saw **%d messages**; the first was `%s`.\n\n```html\n<script>window.pwned=1</script><b>x</b>\n```\n\n<img src=x onerror=\"window.pwned=1\">", len(msgs), msgs[0].Content)
	for _, part := range strings.SplitAfter(text, " ") {
		// Paced like a model, so that the page can measure tokens/s.
		select {
		case <-ctx.Done():
			return swarm.Answer{}, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
		if err := emit(knownPeers[0], inference.Chunk{Text: part}); err != nil {
			return swarm.Answer{}, err
		}
	}
	agree := 0.75
	return swarm.Answer{Text: text, Experts: []string{knownPeers[0]}, Failovers: 1, Agreement: &agree,
		Final: inference.Final{FinishReason: inference.FinishStop, CompletionTokens: 20, TTFT: 30 * time.Millisecond}}, nil
}

func (k *knownSwarm) prompts() (seen [][]inference.Message, canceled int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([][]inference.Message(nil), k.seen...), k.canceled
}

// noOverflow is true when the page does not scroll sideways.
const noOverflow = `document.documentElement.scrollWidth <= window.innerWidth && document.body.scrollWidth <= window.innerWidth`

// TestDashboardInBrowser drives the dashboard in a real Chromium against a
// known swarm: it loads cleanly, draws the expected pictures, keeps a
// hostile region as wrapped text, chats (Enter, Stop, history, safe
// Markdown), tells when the chosen model goes away and fits 360 px.
func TestDashboardInBrowser(t *testing.T) {
	b := browsertest.Start(t, 1280, 900)
	k := &knownSwarm{models: []string{"m1", "m2"}}
	s := api.NewServer(k, k, nil)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)

	b.Do("open", 30*time.Second, chromedp.Navigate(srv.URL+"/"))
	b.Until("status shown", fmt.Sprintf(`document.getElementById("peer-id").textContent === %q`, knownSelf), 45*time.Second)
	b.Until("everything drawn", `document.querySelectorAll(".expert-cell").length > 0 && document.querySelectorAll(".rtt-cell").length > 0 && document.querySelectorAll("#peers tr").length === 3`, 45*time.Second)

	t.Run("loads without console errors", func(t *testing.T) {
		if errs := b.Errors(); len(errs) > 0 {
			t.Errorf("the page logged errors: %q", errs)
		}
	})

	t.Run("pictures of a known swarm", func(t *testing.T) {
		counts := browsertest.Eval[map[string]int](b, `({
			map: document.querySelectorAll("#map circle.map-peer").length,
			self: document.querySelectorAll("#map circle.map-self").length,
			outline: document.querySelectorAll("#map image").length,
			rtt: document.querySelectorAll("#heatmap rect.rtt-cell").length,
			measured: document.querySelectorAll('#heatmap rect[data-source="measured"]').length,
			experts: document.querySelectorAll("#expert-grids rect.expert-cell").length,
			missing: document.querySelectorAll("#expert-grids rect.expert-cell.missing").length,
		})`)
		want := map[string]int{"map": 3, "self": 1, "outline": 1, "rtt": 16, "measured": 2, "experts": 12, "missing": 2}
		for k, v := range want {
			if counts[k] != v {
				t.Errorf("%s: %d elements, want %d", k, counts[k], v)
			}
		}
		b.Screenshot("dashboard-desktop")
	})

	t.Run("this peer's engine rate", func(t *testing.T) {
		deadline := time.Now().Add(30 * time.Second)
		for browsertest.Eval[int](b, `document.querySelectorAll("#tps-chart polyline.engine-tps").length`) != 1 {
			if time.Now().After(deadline) {
				t.Fatal("the chart shows no line of this peer's engine tokens/s after several status polls")
			}
			time.Sleep(100 * time.Millisecond) // polling the page with a deadline
		}
	})

	t.Run("versions and context lengths", func(t *testing.T) {
		var got map[string]bool
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			got = browsertest.Eval[map[string]bool](b, `({
				version: document.body.innerText.includes("0.1.0-test"),
				context: document.body.innerText.includes("context 4096 tokens"),
			})`)
			if got["version"] && got["context"] {
				return
			}
			time.Sleep(100 * time.Millisecond) // polling the page with a deadline
		}
		t.Fatalf("the page shows a peer's version %v and a model's context length %v", got["version"], got["context"])
	})

	t.Run("hostile region is wrapped text", func(t *testing.T) {
		got := browsertest.Eval[map[string]any](b, `(() => {
			const r = document.querySelector("#peers .region");
			const td = r.closest("td");
			return { text: r.textContent.length, html: document.querySelectorAll("#peers img, #peers b").length,
				pwned: !!window.pwned, fits: td.getBoundingClientRect().right <= document.documentElement.clientWidth + 1,
				tooltip: r.title.length, pageFits: `+noOverflow+` };
		})()`)
		if got["text"].(float64) != 2000 || got["tooltip"].(float64) != 2000 {
			t.Errorf("region shown as %v characters (tooltip %v), want all 2000", got["text"], got["tooltip"])
		}
		if got["html"].(float64) != 0 || got["pwned"].(bool) {
			t.Errorf("the region's HTML became elements: %v", got)
		}
		if !got["fits"].(bool) || !got["pageFits"].(bool) {
			t.Errorf("the region overflows: %v", got)
		}
	})

	t.Run("chat streams, stops and remembers", func(t *testing.T) {
		b.Do("first turn", 20*time.Second,
			chromedp.SetValue(chromedp.ID("model"), "m1"),
			chromedp.SendKeys(chromedp.ID("prompt"), "what is a peer?"+kb.Enter))
		b.Until("first answer", `(() => { const m = document.querySelectorAll(".msg.assistant"); return m.length === 1 && /answered by/.test(m[0].querySelector(".meta").textContent); })()`, 45*time.Second)
		first := browsertest.Eval[map[string]any](b, `(() => { const m = document.querySelector(".msg.assistant");
			return { body: m.querySelector(".body").textContent, meta: m.querySelector(".meta").textContent,
				strong: m.querySelectorAll(".body strong").length, code: m.querySelectorAll(".body pre code").length,
				html: m.querySelectorAll(".body script, .body img, .body b").length, pwned: !!window.pwned }; })()`)
		t.Logf("first answer: %v", first)
		if first["strong"].(float64) != 1 || first["code"].(float64) != 1 {
			t.Errorf("Markdown not rendered: %v", first)
		}
		if first["html"].(float64) != 0 || first["pwned"].(bool) || !strings.Contains(first["body"].(string), "<script>") {
			t.Errorf("HTML from the answer was not kept as text: %v", first)
		}
		for _, want := range []string{"answered by peer 12D3Ko", "1 failover", "first token 30 ms", "agreement 75%"} {
			if !strings.Contains(first["meta"].(string), want) {
				t.Errorf("answer details %q lack %q", first["meta"], want)
			}
		}
		if !regexp.MustCompile(`\d+\.\d tokens/s`).MatchString(first["meta"].(string)) {
			t.Errorf("answer details %q lack a measured tokens/s", first["meta"])
		}

		b.Do("slow turn", 20*time.Second, chromedp.SendKeys(chromedp.ID("prompt"), "a slow one please"+kb.Enter))
		b.Until("streaming", `document.querySelectorAll(".msg.assistant")[1].querySelector(".body").textContent.includes("tok2") && document.getElementById("send").disabled && !document.getElementById("stop").disabled`, 45*time.Second)
		b.Do("stop", 10*time.Second, chromedp.Click(chromedp.ID("stop")))
		b.Until("stopped", `!document.getElementById("send").disabled && document.getElementById("stop").disabled && /stopped by you/.test(document.querySelectorAll(".msg.assistant")[1].querySelector(".meta").textContent)`, 30*time.Second)
		deadline := time.Now().Add(30 * time.Second)
		for _, c := k.prompts(); c == 0; _, c = k.prompts() {
			if time.Now().After(deadline) {
				t.Fatal("Stop did not cancel the request on the server")
			}
			time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
		}

		b.Do("third turn", 20*time.Second, chromedp.SendKeys(chromedp.ID("prompt"), "and again?"+kb.Enter))
		b.Until("third answer", `document.querySelectorAll(".msg.assistant").length === 3 && /answered by/.test(document.querySelectorAll(".msg.assistant")[2].querySelector(".meta").textContent)`, 45*time.Second)
		seen, _ := k.prompts()
		last := seen[len(seen)-1]
		if len(last) < 3 || last[0].Content != "what is a peer?" || last[1].Role != "assistant" || last[len(last)-1].Content != "and again?" {
			t.Errorf("the last turn did not carry the conversation: %+v", last)
		}
		b.Until("why this expert", `document.querySelectorAll("#why tbody tr").length === 1`, 30*time.Second)
		b.Until("history kept", `JSON.parse(localStorage.getItem("mwpeer.chat.v1")).length === 6`, 20*time.Second)
		b.Screenshot("dashboard-chat")
	})

	t.Run("chosen model leaves", func(t *testing.T) {
		b.Do("choose m2", 10*time.Second, chromedp.SetValue(chromedp.ID("model"), "m2"))
		k.setModels("m1")
		b.Until("the page says so", `!document.getElementById("model-notice").hidden && /m2.*left the swarm/.test(document.getElementById("model-notice").textContent) && document.getElementById("model").value === "m2"`, 45*time.Second)
		k.setModels("m1", "m2")
		b.Until("notice gone", `document.getElementById("model-notice").hidden`, 45*time.Second)
	})

	t.Run("360 px wide", func(t *testing.T) {
		b.Do("narrow", 10*time.Second, chromedp.EmulateViewport(360, 800))
		b.Until("no horizontal scroll", noOverflow, 30*time.Second)
		b.Screenshot("dashboard-360px")
		b.Do("wide again", 10*time.Second, chromedp.EmulateViewport(1280, 900))
	})

	t.Run("still no console errors", func(t *testing.T) {
		if errs := b.Errors(); len(errs) > 0 {
			t.Errorf("the page logged errors: %q", errs)
		}
	})
}

// TestMarkdownRendererIsSafe renders hostile Markdown in the page and checks
// that only the renderer's own elements come out, and links only to http(s).
func TestMarkdownRendererIsSafe(t *testing.T) {
	b := browsertest.Start(t, 800, 600)
	srv := httptest.NewServer(api.NewServer(&knownSwarm{}, &knownSwarm{}, nil))
	t.Cleanup(srv.Close)
	b.Do("open", 30*time.Second, chromedp.Navigate(srv.URL+"/"))
	b.Until("renderer", `typeof window.mwpeerMarkdown === "function"`, 30*time.Second)
	for _, tc := range []struct{ name, md, want string }{
		{"html", `<script>window.pwned=1</script><img src=x onerror="window.pwned=1">`, `<script>window.pwned=1</script><img src=x onerror="window.pwned=1">`},
		{"javascript link", `[click](javascript:alert(1))`, `[click](javascript:alert(1))`},
		{"code keeps html", "```\n<b>x</b>\n```", "<b>x</b>"},
		{"unclosed fence", "```js\nlet a = 1", "let a = 1"},
		{"inline", "**b** *i* `c` [l](https://example.com)", "b i c l"},
	} {
		got := browsertest.Eval[map[string]any](b, fmt.Sprintf(`(() => { const d = document.createElement("div"); d.append(window.mwpeerMarkdown(%q));
			const bad = [...d.querySelectorAll("*")].filter((e) => !["P","BR","STRONG","EM","CODE","PRE","A","UL","OL","LI","BLOCKQUOTE","H3","H4","H5","H6"].includes(e.tagName) || [...e.attributes].some((a) => a.name.startsWith("on") || a.name === "style"));
			const links = [...d.querySelectorAll("a")].map((a) => a.href);
			return { text: d.textContent, bad: bad.length, badLinks: links.filter((h) => !/^https?:/.test(h)).length, pwned: !!window.pwned }; })()`, tc.md))
		if got["text"] != tc.want || got["bad"].(float64) != 0 || got["badLinks"].(float64) != 0 || got["pwned"].(bool) {
			t.Errorf("%s: %q rendered as %v, want text %q and only safe elements", tc.name, tc.md, got, tc.want)
		}
	}
}
