package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mwpeer/mwpeer"
	"github.com/mwpeer/mwpeer/swarm"
)

// chatFlags parses the flags shared by chat and route; the prompt is the
// remaining arguments.
type chatArgs struct {
	http, model, strategy, domains string
	k, maxTokens                   int
	temperature                    float64
	json                           bool
	prompt                         string
	// messages, when set, are the conversation so far (an interactive
	// session); prompt is then unused.
	messages []map[string]string
}

func parseChat(name string, args []string, stderr io.Writer) (chatArgs, int) {
	var a chatArgs
	fs := flag.NewFlagSet("mwpeer "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&a.http, "http", env("HTTP", mwpeer.DefaultConfig().HTTPAddr), "HTTP address of the running peer (MWPEER_HTTP)")
	fs.StringVar(&a.model, "model", env("MODEL", swarm.AnyModel), "model to ask; \"auto\" lets routing pick among every model (MWPEER_MODEL)")
	fs.StringVar(&a.strategy, "strategy", "fastest", "fastest, confidence or blend")
	fs.StringVar(&a.domains, "domains", "", "comma-separated domains, overriding the classifier")
	fs.IntVar(&a.k, "k", 0, "experts asked in parallel; 0 lets routing choose")
	fs.IntVar(&a.maxTokens, "max-tokens", 0, "most tokens to generate; 0 for the model's default")
	fs.Float64Var(&a.temperature, "temperature", -1, "sampling temperature; negative for the model's default")
	fs.BoolVar(&a.json, "json", false, "print the raw JSON answer")
	fs.Usage = func() {
		if name == "chat" {
			fmt.Fprintf(fs.Output(), "Usage: mwpeer chat [flags] [\"prompt\"]\n\nWith a prompt, streams one answer; without one, starts a conversation (one message a line).\n\nFlags:\n")
		} else {
			fmt.Fprintf(fs.Output(), "Usage: mwpeer %s [flags] \"prompt\"\n\nFlags:\n", name)
		}
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return a, exitOK
		}
		return a, exitUsage
	}
	a.prompt = strings.TrimSpace(strings.Join(fs.Args(), " "))
	if a.prompt == "" && name != "chat" { // chat without one is a conversation
		fmt.Fprintf(stderr, "mwpeer %s: no prompt given: mwpeer %s \"your prompt\"\n", name, name)
		return a, exitUsage
	}
	return a, -1
}

func (a chatArgs) body(stream bool) map[string]any {
	msgs := a.messages
	if msgs == nil {
		msgs = []map[string]string{{"role": "user", "content": a.prompt}}
	}
	b := map[string]any{
		"model":    a.model,
		"messages": msgs,
		"stream":   stream,
	}
	opts := map[string]any{"strategy": a.strategy}
	if a.k > 0 {
		opts["k"] = a.k
	}
	if a.domains != "" {
		opts["domains"] = splitList(a.domains)
	}
	b["mwpeer"] = opts
	if a.maxTokens > 0 {
		b["max_tokens"] = a.maxTokens
	}
	if a.temperature >= 0 {
		b["temperature"] = a.temperature
	}
	return b
}

func post(ctx context.Context, addr, path string, body any) (*http.Response, error) {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+path, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("no peer answering at %s (%v): start one with 'mwpeer run', or pass --http with the address of a running peer", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		msg := clean(strings.TrimSpace(string(raw)))
		if json.Unmarshal(raw, &e) == nil && e.Error.Message != "" {
			msg = clean(e.Error.Message)
		}
		return nil, fmt.Errorf("%s: %s%s", resp.Status, msg, nextStep(resp.StatusCode, msg))
	}
	return resp, nil
}

// nextStep adds what to do after an error status, when the message does
// not already say it.
func nextStep(status int, msg string) string {
	if strings.Contains(msg, ": ") && (strings.Contains(msg, "start") || strings.Contains(msg, "try") || strings.Contains(msg, "pass") || strings.Contains(msg, "use")) {
		return ""
	}
	switch {
	case status == http.StatusUnauthorized:
		return " (pass an API key: mwpeer keys add NAME creates one on the peer's machine)"
	case status == http.StatusNotFound:
		return " (mwpeer peers lists who serves what; --model auto takes any model)"
	case status == http.StatusServiceUnavailable, status == http.StatusTooManyRequests:
		return " (the swarm is busy: try again in a moment)"
	case status == http.StatusGatewayTimeout:
		return " (the answer took too long: try a shorter prompt or --max-tokens)"
	case status >= 500:
		return " (the peer's log says more: mwpeer run --log-level debug)"
	}
	return ""
}

// stdin is what an interactive chat reads (tests replace it).
var stdin io.Reader = os.Stdin

// runChat streams an answer from the running peer to stdout; without a
// prompt it holds a conversation (session).
func runChat(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a, code := parseChat("chat", args, stderr)
	if code >= 0 {
		return code
	}
	if a.prompt == "" {
		return session(ctx, a, stdin, stdout, stderr)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if a.json {
		resp, err := post(ctx, a.http, "/v1/chat/completions", a.body(false))
		if err != nil {
			fmt.Fprintf(stderr, "mwpeer: %v\n", err)
			return exitError
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		stdout.Write(cleanJSON(raw))
		if err != nil {
			fmt.Fprintf(stderr, "mwpeer: %v\n", err)
			return exitError
		}
		return exitOK
	}
	ans, err := ask(ctx, a, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stderr, "answered by %s\n", ans.by())
	return exitOK
}

// answer is one streamed answer.
type answer struct {
	text, model string
	experts     []string
}

func (a answer) by() string {
	ex := make([]string, len(a.experts))
	for i, e := range a.experts {
		ex[i] = short(e)
	}
	s := strings.Join(ex, ", ")
	if a.model != "" {
		s += " (" + clean(a.model) + ")"
	}
	return s
}

// ask streams the answer to a's conversation (or prompt) to stdout, ending
// it with a newline.
func ask(ctx context.Context, a chatArgs, stdout io.Writer) (answer, error) {
	var ans answer
	resp, err := post(ctx, a.http, "/v1/chat/completions", a.body(true))
	if err != nil {
		return ans, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var text strings.Builder
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			break
		}
		var ev struct {
			Model   string `json:"model"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Mwpeer *struct {
				Experts   []string `json:"experts"`
				Failovers int      `json:"failovers"`
			} `json:"mwpeer"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			continue
		}
		if ev.Error != nil {
			fmt.Fprintln(stdout)
			return ans, fmt.Errorf("the answer broke off: %s (ask again: another peer may answer)", clean(ev.Error.Message))
		}
		if ev.Model != "" {
			ans.model = ev.Model
		}
		for _, c := range ev.Choices {
			fmt.Fprint(stdout, cleanText(c.Delta.Content))
			text.WriteString(c.Delta.Content)
		}
		if ev.Mwpeer != nil {
			ans.experts = ev.Mwpeer.Experts
		}
	}
	fmt.Fprintln(stdout)
	if err := sc.Err(); err != nil {
		return ans, fmt.Errorf("the answer broke off: %v (ask again)", err)
	}
	ans.text = text.String()
	return ans, nil
}

// session is an interactive conversation: each line read is a message, the
// answer streams back, and the next message carries the conversation so
// far. The model that answers first keeps answering (with --model auto,
// routing would otherwise be free to pick another model every turn).
func session(ctx context.Context, a chatArgs, in io.Reader, stdout, stderr io.Writer) int {
	fmt.Fprintf(stderr, "Talking to the swarm through %s (model %s). One message a line; /clear forgets the conversation, /bye or Ctrl-D ends it.\n", a.http, clean(a.model))
	model := a.model
	var history []map[string]string
	lines := bufio.NewScanner(in)
	lines.Buffer(make([]byte, 64<<10), 1<<20)
	for {
		fmt.Fprint(stdout, ">>> ")
		if !lines.Scan() {
			fmt.Fprintln(stdout)
			return exitOK
		}
		msg := strings.TrimSpace(lines.Text())
		switch msg {
		case "":
			continue
		case "/bye", "/exit", "/quit":
			return exitOK
		case "/clear":
			history, model = nil, a.model
			fmt.Fprintln(stderr, "(conversation forgotten)")
			continue
		case "/help", "/?":
			fmt.Fprintln(stderr, "Type a message and press Enter. /clear forgets the conversation; /bye (or Ctrl-D) ends the session.")
			continue
		}
		turn := a
		turn.model = model
		turn.messages = append(history, map[string]string{"role": "user", "content": msg})
		actx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		ans, err := ask(actx, turn, stdout)
		cancel()
		if ctx.Err() != nil {
			return exitOK
		}
		if err != nil {
			fmt.Fprintf(stderr, "mwpeer: %v\n", err)
			continue // the conversation goes on without this turn
		}
		history = append(turn.messages, map[string]string{"role": "assistant", "content": ans.text})
		if model == swarm.AnyModel && ans.model != "" && ans.model != swarm.AnyModel {
			model = ans.model
		}
		fmt.Fprintf(stderr, "(answered by %s)\n", ans.by())
	}
}

// runRoute prints the routing decision for a prompt.
func runRoute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a, code := parseChat("route", args, stderr)
	if code >= 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := post(ctx, a.http, "/api/route", a.body(false))
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	if a.json {
		stdout.Write(cleanJSON(raw))
		return exitOK
	}
	var d struct {
		Domains []struct {
			Domain string  `json:"domain"`
			Score  float64 `json:"score"`
		} `json:"domains"`
		K          int `json:"k"`
		Candidates []struct {
			Peer  string             `json:"peer"`
			Local bool               `json:"local"`
			Model string             `json:"model"`
			Score float64            `json:"score"`
			Parts map[string]float64 `json:"parts"`
		} `json:"candidates"`
		Chosen []struct {
			Peer string `json:"peer"`
		} `json:"chosen"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		fmt.Fprintf(stderr, "mwpeer: unexpected answer: %v\n", err)
		return exitError
	}
	var doms []string
	for _, x := range d.Domains {
		doms = append(doms, fmt.Sprintf("%s %.2f", clean(x.Domain), x.Score))
	}
	fmt.Fprintf(stdout, "domains: %s\nK: %d\n", strings.Join(doms, ", "), d.K)
	chosen := map[string]bool{}
	for _, c := range d.Chosen {
		chosen[c.Peer] = true
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\tPEER\tMODEL\tSCORE\tPARTS")
	for _, c := range d.Candidates {
		mark := ""
		if chosen[c.Peer] {
			mark = "*"
		}
		who := short(c.Peer)
		if c.Local {
			who += " (this peer)"
		}
		var parts []string
		for _, k := range sortedKeys(c.Parts) {
			parts = append(parts, fmt.Sprintf("%s=%.3f", clean(k), c.Parts[k]))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%.3f\t%s\n", mark, who, clean(c.Model), c.Score, strings.Join(parts, " "))
	}
	w.Flush()
	return exitOK
}
