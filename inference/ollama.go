package inference

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/envconfig"
)

// OllamaName is the name of the Ollama backend.
const OllamaName = "ollama"

// OllamaConfig configures NewOllama.
type OllamaConfig struct {
	// URL of the Ollama server; empty means OLLAMA_HOST or the default
	// http://127.0.0.1:11434 (the one place below cmd/mwpeer where the
	// environment is read, as Ollama's own client does).
	URL string
	// HTTPClient, if nil, is a client without a global timeout (streams can
	// be long; contexts bound them) on OllamaTransport(IdleConns).
	HTTPClient *http.Client
	// IdleConns is how many idle connections to the server are kept for
	// reuse: as many as calls can be in flight at once, so that a busy peer
	// neither reconnects for every call nor leaves sockets in TIME-WAIT.
	// 0: max(Concurrency, DefaultOllamaIdleConns).
	IdleConns int
	// Concurrency bounds calls in flight to this server; a call that finds
	// no slot within QueueWait gets ErrBusy.
	Concurrency int
	QueueWait   time.Duration
	// KeepAlive is passed to Ollama (how long the model stays loaded); zero
	// leaves Ollama's default.
	KeepAlive time.Duration
	// OnRunning, when set, hears how many calls Ollama is answering at once,
	// with every line of an answer after its first (the least of what the
	// line and the one before saw). Ollama sends nothing,
	// not even headers, for a call still waiting in its queue, so the most
	// heard is how many it runs in parallel, which a peer takes for its
	// capacity (see mwpeer.Config.Capacity).
	OnRunning func(n int)
}

// DefaultOllamaConfig returns the defaults: OLLAMA_HOST, 2 concurrent calls,
// 30 s queue wait.
func DefaultOllamaConfig() OllamaConfig {
	return OllamaConfig{Concurrency: 2, QueueWait: 30 * time.Second}
}

// Ollama is a Backend backed by an Ollama server's HTTP API.
//
// Chat requests go to /api/chat and prompts to /api/generate, both streamed,
// with num_predict, temperature, top_p, stop and seed as options and
// log-probabilities if asked for.
//
// Continuation (Request.Continue) uses the route that works with every model
// template: the prompt is first rendered by Ollama itself (_debug_render_only,
// the same rendering a normal call would do), the delivered text is appended,
// and a raw /api/generate continues from there. A trailing assistant message
// on /api/chat is not enough: templates without a Response field (such as
// the default "{{ .Prompt }}") drop it. Raw prompts simply get the text
// appended.
type Ollama struct {
	client    *api.Client  // the cold paths: list, show, version
	http      *http.Client // the hot ones: chat and generate (see stream)
	base      string       // scheme://host:port, no trailing slash
	lim       *limiter
	keepAlive *api.Duration
	onRunning func(int)
	running   atomic.Int64 // calls whose answer is streaming (see OnRunning)

	mu    sync.Mutex
	shown map[string]shown // model digest -> what /api/show says of it
}

// shown is what Models keeps of /api/show for one model digest.
type shown struct {
	context int
	caps    []string
}

// NewOllama returns an Ollama backend.
func NewOllama(cfg OllamaConfig) (*Ollama, error) {
	var base *url.URL
	if cfg.URL == "" {
		base = envconfig.Host()
	} else {
		u, err := url.Parse(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("ollama url %q: %w", cfg.URL, err)
		}
		if u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("ollama url %q: want scheme://host:port", cfg.URL)
		}
		base = u
	}
	hc := cfg.HTTPClient
	if hc == nil {
		idle := cfg.IdleConns
		if idle <= 0 {
			idle = max(cfg.Concurrency, DefaultOllamaIdleConns)
		}
		hc = &http.Client{Transport: OllamaTransport(idle)}
	}
	o := &Ollama{client: api.NewClient(base, hc), http: hc, base: strings.TrimRight(base.String(), "/"),
		lim: newLimiter(cfg.Concurrency, cfg.QueueWait), onRunning: cfg.OnRunning}
	if cfg.KeepAlive != 0 {
		o.keepAlive = &api.Duration{Duration: cfg.KeepAlive}
	}
	return o, nil
}

// Name returns "ollama".
func (o *Ollama) Name() string { return OllamaName }

// Models lists the models the server has, with their digests.
func (o *Ollama) Models(ctx context.Context) ([]ModelInfo, error) {
	resp, err := o.client.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("ollama list: %w", err)
	}
	out := make([]ModelInfo, 0, len(resp.Models))
	for _, m := range resp.Models {
		sh := o.show(ctx, m.Name, m.Digest)
		out = append(out, ModelInfo{Name: m.Name, Digest: m.Digest, Size: m.Size, Family: m.Details.Family, Params: ParseParams(m.Details.ParameterSize),
			Context: sh.context, Capabilities: sh.caps})
	}
	return out, nil
}

// show is a model's context length from /api/show's model_info
// ("<architecture>.context_length", 0 when Ollama does not say) and its
// capabilities (see ollamaCapabilities), asked once per digest.
func (o *Ollama) show(ctx context.Context, name, digest string) shown {
	o.mu.Lock()
	sh, ok := o.shown[digest]
	o.mu.Unlock()
	if ok {
		return sh
	}
	resp, err := o.client.Show(ctx, &api.ShowRequest{Model: name})
	if err != nil {
		return shown{} // asked again on the next listing
	}
	arch, _ := resp.ModelInfo["general.architecture"].(string)
	if v, ok := resp.ModelInfo[arch+".context_length"].(float64); ok && v > 0 && v <= 1<<24 {
		sh.context = int(v)
	}
	sh.caps = ollamaCapabilities(resp.Capabilities)
	o.mu.Lock()
	if o.shown == nil {
		o.shown = map[string]shown{}
	}
	if len(o.shown) > 4096 {
		clear(o.shown)
	}
	o.shown[digest] = sh
	o.mu.Unlock()
	return sh
}

func (o *Ollama) options(req Request) map[string]any {
	opts := map[string]any{}
	if req.MaxTokens > 0 {
		opts["num_predict"] = req.MaxTokens
	}
	if req.Temperature != nil {
		opts["temperature"] = *req.Temperature
	}
	if req.TopP != nil {
		opts["top_p"] = *req.TopP
	}
	if len(req.Stop) > 0 {
		opts["stop"] = req.Stop
	}
	if req.Seed != nil {
		opts["seed"] = *req.Seed
	}
	return opts
}

// Generate runs req on Ollama and streams its tokens.
func (o *Ollama) Generate(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
	ctx, cancel := withDeadline(ctx, req)
	defer cancel()
	if err := o.lim.acquire(ctx); err != nil {
		return Final{}, fmt.Errorf("ollama: %w", err)
	}
	defer o.lim.release()

	start := time.Now()
	var f Final
	var mean logprobMean
	var tokens int
	step := func(text string, lps []api.Logprob, done bool, reason string, m api.Metrics) error {
		if text != "" || len(lps) > 0 {
			c := Chunk{Text: text}
			for _, lp := range lps {
				t := TokenLogprob{Token: lp.Token, Logprob: lp.Logprob}
				for _, alt := range lp.TopLogprobs {
					t.Top = append(t.Top, TopLogprob{Token: alt.Token, Logprob: alt.Logprob})
				}
				c.Logprobs = append(c.Logprobs, t)
			}
			mean.add(c.Logprobs)
			if tokens == 0 {
				f.TTFT = time.Since(start)
			}
			tokens++
			if err := emit(c); err != nil {
				return err
			}
		}
		if done {
			f.FinishReason = FinishStop
			if reason == "length" {
				f.FinishReason = FinishLength
			}
			f.PromptTokens = m.PromptEvalCount
			f.CompletionTokens = m.EvalCount
		}
		return nil
	}

	var err error
	switch {
	case len(req.Input) > 0:
		err = o.embed(ctx, req, emit, &f)
	case req.Continue != "" && (len(req.Tools) > 0 || len(req.Format) > 0):
		// A raw continuation would lose the tools and the format.
		err = fmt.Errorf("%w: continuing an answer with tools or a format", ErrUnsupported)
	case req.Continue != "":
		err = o.continueRaw(ctx, req, step)
	case len(req.Messages) > 0:
		cr := &api.ChatRequest{
			Model: req.Model, Messages: chatMessages(req), Options: o.options(req),
			KeepAlive: o.keepAlive, Logprobs: req.Logprobs, TopLogprobs: req.TopLogprobs,
			Format: req.Format,
		}
		if cr.Tools, err = ollamaTools(req); err != nil {
			break
		}
		calls := 0
		err = o.chat(ctx, cr, func(r *api.ChatResponse) error {
			if len(r.Message.ToolCalls) > 0 {
				c := Chunk{ToolCalls: fromOllamaToolCalls(r.Message.ToolCalls, calls)}
				calls += len(c.ToolCalls)
				if tokens == 0 {
					f.TTFT = time.Since(start)
				}
				tokens++
				if err := emit(c); err != nil {
					return err
				}
			}
			if err := step(r.Message.Content, r.Logprobs, r.Done, r.DoneReason, r.Metrics); err != nil {
				return err
			}
			if r.Done && calls > 0 {
				f.FinishReason = FinishToolCalls
			}
			return nil
		})
	default:
		err = o.generate(ctx, req, req.Prompt, req.Raw, step)
	}
	if err != nil {
		return Final{}, ollamaError(ctx, req, err)
	}
	if f.FinishReason == "" {
		return Final{}, fmt.Errorf("ollama: stream ended without done")
	}
	if f.CompletionTokens == 0 {
		f.CompletionTokens = tokens
	}
	f.Duration = time.Since(start)
	mean.fill(&f)
	return f, nil
}

type ollamaStep func(text string, lps []api.Logprob, done bool, reason string, m api.Metrics) error

func (o *Ollama) generate(ctx context.Context, req Request, prompt string, raw bool, step ollamaStep) error {
	gr := &api.GenerateRequest{
		Model: req.Model, Prompt: prompt, Raw: raw, Options: o.options(req),
		KeepAlive: o.keepAlive, Logprobs: req.Logprobs, TopLogprobs: req.TopLogprobs,
		Format: req.Format,
	}
	return o.generateStream(ctx, gr, func(r *api.GenerateResponse) error {
		return step(r.Response, r.Logprobs, r.Done, r.DoneReason, r.Metrics)
	})
}

// continueRaw renders the prompt as Ollama would, appends req.Continue and
// continues with a raw generate.
func (o *Ollama) continueRaw(ctx context.Context, req Request, step ollamaStep) error {
	prompt := req.Prompt
	if !req.Raw {
		var rendered string
		var err error
		if len(req.Messages) > 0 {
			err = o.chat(ctx, &api.ChatRequest{Model: req.Model, Messages: chatMessages(req), DebugRenderOnly: true, KeepAlive: o.keepAlive},
				func(r *api.ChatResponse) error {
					if r.DebugInfo != nil {
						rendered = r.DebugInfo.RenderedTemplate
					}
					return nil
				})
		} else {
			err = o.generateStream(ctx, &api.GenerateRequest{Model: req.Model, Prompt: req.Prompt, DebugRenderOnly: true, KeepAlive: o.keepAlive},
				func(r *api.GenerateResponse) error {
					if r.DebugInfo != nil {
						rendered = r.DebugInfo.RenderedTemplate
					}
					return nil
				})
		}
		if err != nil {
			return fmt.Errorf("render prompt: %w", err)
		}
		prompt = rendered
	}
	return o.generate(ctx, req, prompt+req.Continue, true, step)
}

// DefaultOllamaIdleConns is the idle connections kept to an Ollama server
// when nothing says how many calls may be in flight.
const DefaultOllamaIdleConns = 64

// OllamaTransport is the HTTP transport of an Ollama backend: Go's default
// one, but keeping idle connections for idle calls at once (the default
// keeps 2 per host, so a busy peer would reconnect for nearly every call).
func OllamaTransport(idle int) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          idle,
		MaxIdleConnsPerHost:   idle,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// The streaming calls below replace the Ollama client's Chat and Generate
// on the hot path. Those allocate a 512 KB line buffer per call, parse
// every line twice and read the environment per call: about a millisecond
// of a zero-delay backend's time to first token, and most of its CPU at
// thousands of calls a second. These read the same NDJSON into the same
// types with pooled buffers.

// maxLine bounds one NDJSON line of an answer (Ollama's own client takes
// 512 KB; embeddings and tool calls can be long).
const maxLine = 8 << 20

// lineBufs holds line buffers for stream.
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

var userAgent = []string{fmt.Sprintf("mwpeer (%s %s) Go/%s", runtime.GOARCH, runtime.GOOS, runtime.Version())}

// chat streams /api/chat.
func (o *Ollama) chat(ctx context.Context, req *api.ChatRequest, fn func(*api.ChatResponse) error) error {
	return o.stream(ctx, "/api/chat", req, func(line []byte) error {
		var r struct {
			api.ChatResponse
			Error string `json:"error"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			return fmt.Errorf("ollama answered %q: %w", trimLine(line), err)
		}
		if r.Error != "" {
			return errors.New(r.Error)
		}
		return fn(&r.ChatResponse)
	})
}

// generateStream streams /api/generate.
func (o *Ollama) generateStream(ctx context.Context, req *api.GenerateRequest, fn func(*api.GenerateResponse) error) error {
	return o.stream(ctx, "/api/generate", req, func(line []byte) error {
		var r struct {
			api.GenerateResponse
			Error string `json:"error"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			return fmt.Errorf("ollama answered %q: %w", trimLine(line), err)
		}
		if r.Error != "" {
			return errors.New(r.Error)
		}
		return fn(&r.GenerateResponse)
	})
}

func trimLine(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// stream POSTs req as JSON to path and calls line for every line of the
// answer. An HTTP error status comes back as api.StatusError, as from
// Ollama's own client.
func (o *Ollama) stream(ctx context.Context, path string, req any, line func([]byte) error) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, o.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header["Content-Type"] = []string{"application/json"}
	hr.Header["Accept"] = []string{"application/x-ndjson"}
	hr.Header["User-Agent"] = userAgent
	resp, err := o.http.Do(hr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= http.StatusBadRequest {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		se := api.StatusError{StatusCode: resp.StatusCode, Status: resp.Status, ErrorMessage: strings.TrimSpace(string(raw))}
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			se.ErrorMessage = e.Error
		}
		return se
	}
	o.running.Add(1)
	defer o.running.Add(-1)
	buf := lineBufs.Get().(*[]byte)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(*buf, maxLine)
	lines, before := 0, 0
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		// Calls count as answering together when they were at two lines in
		// a row of this one: when one call ends as the next begins (Ollama
		// running one at a time), the two may be seen together for an
		// instant, never that long.
		if o.onRunning != nil {
			now := int(o.running.Load())
			if lines++; lines > 1 {
				o.onRunning(min(before, now))
			}
			before = now
		}
		if err := line(sc.Bytes()); err != nil {
			lineBufs.Put(buf)
			return err
		}
	}
	lineBufs.Put(buf)
	return sc.Err()
}

func ollamaError(ctx context.Context, req Request, err error) error {
	var se api.StatusError
	if errors.As(err, &se) && se.StatusCode == http.StatusNotFound {
		return fmt.Errorf("ollama: %w: %q: %s", ErrUnknownModel, req.Model, se.ErrorMessage)
	}
	if errors.As(err, &se) && se.StatusCode == http.StatusBadRequest && strings.Contains(se.ErrorMessage, "does not support") {
		return fmt.Errorf("ollama: %w: %q: %s", ErrUnsupported, req.Model, se.ErrorMessage)
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("ollama: %w (%v)", ctx.Err(), err)
	}
	return fmt.Errorf("ollama: %w", err)
}

// OllamaURL turns an OLLAMA_HOST-style value (host, host:port or URL) into a
// base URL.
func OllamaURL(h string) string {
	if strings.Contains(h, "://") {
		return strings.TrimRight(h, "/")
	}
	if !strings.Contains(h, ":") {
		h += ":11434"
	}
	return "http://" + h
}

// ParseParams reads Ollama's parameter size ("270M", "3.2B", "1.5T") as a
// count; 0 when it cannot.
func ParseParams(s string) int64 {
	s = strings.TrimSpace(strings.ToUpper(s))
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "K"):
		mult = 1e3
	case strings.HasSuffix(s, "M"):
		mult = 1e6
	case strings.HasSuffix(s, "B"):
		mult = 1e9
	case strings.HasSuffix(s, "T"):
		mult = 1e12
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v*mult > 1e15 {
		return 0
	}
	return int64(v * mult)
}
