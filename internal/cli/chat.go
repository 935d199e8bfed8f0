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
		fmt.Fprintf(fs.Output(), "Usage: mwpeer %s [flags] \"prompt\"\n\nFlags:\n", name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return a, exitOK
		}
		return a, exitUsage
	}
	a.prompt = strings.TrimSpace(strings.Join(fs.Args(), " "))
	if a.prompt == "" {
		fmt.Fprintf(stderr, "mwpeer %s: no prompt given\n", name)
		return a, exitUsage
	}
	return a, -1
}

func (a chatArgs) body(stream bool) map[string]any {
	b := map[string]any{
		"model":    a.model,
		"messages": []map[string]string{{"role": "user", "content": a.prompt}},
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
		return nil, fmt.Errorf("no peer answering at %s: %v", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error.Message != "" {
			return nil, fmt.Errorf("%s: %s", resp.Status, clean(e.Error.Message))
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, clean(strings.TrimSpace(string(raw))))
	}
	return resp, nil
}

// runChat streams an answer from the running peer to stdout.
func runChat(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a, code := parseChat("chat", args, stderr)
	if code >= 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	resp, err := post(ctx, a.http, "/v1/chat/completions", a.body(!a.json))
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	defer resp.Body.Close()
	if a.json {
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		stdout.Write(cleanJSON(raw))
		if err != nil {
			fmt.Fprintf(stderr, "mwpeer: %v\n", err)
			return exitError
		}
		return exitOK
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var experts []string
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			break
		}
		var ev struct {
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
			fmt.Fprintf(stderr, "\nmwpeer: %s\n", clean(ev.Error.Message))
			return exitError
		}
		for _, c := range ev.Choices {
			fmt.Fprint(stdout, cleanText(c.Delta.Content))
		}
		if ev.Mwpeer != nil {
			experts = ev.Mwpeer.Experts
		}
	}
	fmt.Fprintln(stdout)
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	for i, e := range experts {
		experts[i] = short(e)
	}
	fmt.Fprintf(stderr, "answered by %s\n", strings.Join(experts, ", "))
	return exitOK
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
