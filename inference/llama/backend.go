package llama

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mwpeer/mwpeer/inference"
)

// BackendName is the name of the embedded engine's backend.
const BackendName = "embedded"

// BackendOptions configure NewBackend.
type BackendOptions struct {
	// Name serves the model under this name instead of its general.name.
	Name string
	// Capacity bounds concurrent generations (0: 1; every generation already
	// uses all cores for its matrix products). A call that finds no free slot
	// within QueueWait gets inference.ErrBusy.
	Capacity  int
	QueueWait time.Duration
	// MaxTokens is the answer length when a request does not set one (0: 256).
	MaxTokens int
	// Experts runs the MoE experts (nil: locally).
	Experts Experts
}

// Capabilities is what the engine can do with any model: complete text, and
// constrain it to JSON (see JSONGrammar).
var Capabilities = []string{inference.CapCompletion, inference.CapJSON}

// Backend serves one GGUF model through the inference.Backend interface.
type Backend struct {
	model *Model
	info  inference.ModelInfo
	opts  BackendOptions
	slots chan struct{}

	closer backendCloser // makes Close idempotent (backend_close.go)
}

var _ inference.Backend = (*Backend)(nil)

// NewBackend loads the GGUF file at path and serves it.
func NewBackend(path string, opts BackendOptions) (*Backend, error) {
	m, err := Load(path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		m.Close()
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("hash %s: %w", path, err)
	}
	b := NewModelBackend(m, opts)
	b.info.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	b.info.Size = size
	return b, nil
}

// NewModelBackend serves an already loaded model, which the backend then
// owns: its Close closes m.
func NewModelBackend(m *Model, opts BackendOptions) *Backend {
	if opts.Name == "" {
		opts.Name = m.Config.Name
	}
	if opts.Capacity <= 0 {
		opts.Capacity = 1
	}
	if opts.MaxTokens <= 0 {
		opts.MaxTokens = 256
	}
	return &Backend{
		model: m,
		opts:  opts,
		info: inference.ModelInfo{Name: opts.Name, Size: m.size, Family: m.Config.Arch, Params: m.Config.ActiveParams(), Context: m.Config.ContextLength,
			Capabilities: capabilities(m), Kernels: Kernels()},
		slots: make(chan struct{}, opts.Capacity),
	}
}

// Model returns the served model.
func (b *Backend) Model() *Model { return b.model }

// Name returns "embedded".
func (b *Backend) Name() string { return BackendName }

// Models returns the one served model.
func (b *Backend) Models(context.Context) ([]inference.ModelInfo, error) {
	return []inference.ModelInfo{b.info}, nil
}

func (b *Backend) acquire(ctx context.Context) error {
	select {
	case b.slots <- struct{}{}:
		return nil
	default:
	}
	if b.opts.QueueWait <= 0 {
		return inference.ErrBusy
	}
	t := time.NewTimer(b.opts.QueueWait)
	defer t.Stop()
	select {
	case b.slots <- struct{}{}:
		return nil
	case <-t.C:
		return inference.ErrBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Generate runs req and streams its tokens to emit.
func (b *Backend) Generate(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	start := time.Now()
	if req.Model != b.opts.Name {
		return inference.Final{}, fmt.Errorf("embedded: %w: %q", inference.ErrUnknownModel, req.Model)
	}
	if req.MaxTokens < 0 || req.TopLogprobs < 0 || req.TopLogprobs > 20 {
		return inference.Final{}, fmt.Errorf("embedded: %w: max_tokens %d, top_logprobs %d", inference.ErrInvalidRequest, req.MaxTokens, req.TopLogprobs)
	}
	if err := inference.Check(b.info.Capabilities, BackendName, req); err != nil {
		return inference.Final{}, err
	}
	var grammar *JSONGrammar
	if len(req.Format) > 0 {
		if req.Continue != "" {
			return inference.Final{}, fmt.Errorf("embedded: %w: continuing a JSON answer", inference.ErrUnsupported)
		}
		g, err := CompileJSON(req.Format)
		if err != nil {
			return inference.Final{}, &inference.UnsupportedError{Model: req.Model, Capability: inference.CapJSON, Param: "response_format", Engine: BackendName, Detail: err.Error()}
		}
		grammar = g
	}
	if !req.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, req.Deadline)
		defer cancel()
	}
	if err := b.acquire(ctx); err != nil {
		return inference.Final{}, err
	}
	defer func() { <-b.slots }()

	opts := Options{MaxTokens: req.MaxTokens, Stop: req.Stop, JSON: grammar}
	if opts.MaxTokens == 0 {
		opts.MaxTokens = b.opts.MaxTokens
	}
	if req.Temperature != nil {
		opts.Temperature = *req.Temperature
	} else {
		opts.Temperature = 0.8
	}
	if req.TopP != nil {
		opts.TopP = *req.TopP
	}
	if req.Seed != nil {
		opts.Seed = *req.Seed
	} else {
		opts.Seed = time.Now().UnixNano()
	}
	if req.Logprobs {
		opts.TopLogprobs = req.TopLogprobs
	}

	var f inference.Final
	var sum float64
	var pending []byte // bytes not yet forming whole UTF-8 characters
	var lps []inference.TokenLogprob
	r, err := b.render(req)
	if err != nil {
		return inference.Final{}, fmt.Errorf("embedded: %w", err)
	}
	opts.EndTokens = r.ends
	text := r.prompt
	if r.force != nil {
		if req.Continue != "" || grammar != nil {
			return inference.Final{}, fmt.Errorf("embedded: %w: a forced tool call (tool_choice %q) with a continuation or a format", inference.ErrUnsupported, req.ToolChoice)
		}
		text += r.force.prefix
		opts.JSON = r.force.grammar
	}
	var tp *toolParser
	if r.tools {
		tp = &toolParser{}
		if r.force != nil {
			tp.add(r.force.prefix)
		}
	}
	// send emits text (through the tool-call parser when tools were
	// offered) with the log-probabilities of the tokens that made it.
	send := func(text string, final bool) error {
		var calls []inference.ToolCall
		if tp != nil {
			text, calls = tp.add(text)
			if final {
				text += tp.finish()
			}
		}
		if text == "" && len(calls) == 0 && !(final && len(lps) > 0) {
			return nil
		}
		c := inference.Chunk{Text: text, Logprobs: lps, ToolCalls: calls}
		lps = nil
		if len(calls) > 0 {
			f.FinishReason = inference.FinishToolCalls
		}
		return emit(c)
	}
	prompt, reason, err := b.model.Generate(ctx, text, opts, b.opts.Experts, func(t Token) error {
		if f.CompletionTokens == 0 {
			f.TTFT = time.Since(start)
		}
		f.CompletionTokens++
		sum += t.Logprob
		if req.Logprobs {
			lp := inference.TokenLogprob{Token: t.Text, Logprob: t.Logprob}
			for _, a := range t.Top {
				lp.Top = append(lp.Top, inference.TopLogprob{Token: a.Text, Logprob: a.Logprob})
			}
			lps = append(lps, lp)
		}
		pending = append(pending, t.Text...)
		n := validUTF8Prefix(pending)
		if n == 0 {
			return nil
		}
		c := string(pending[:n])
		pending = append(pending[:0], pending[n:]...)
		return send(c, false)
	})
	f.PromptTokens = prompt
	f.Duration = time.Since(start)
	if err != nil {
		return f, fmt.Errorf("embedded: %w", err)
	}
	rest := string(pending)
	if r.force != nil {
		rest += r.force.suffix
	}
	if err := send(rest, true); err != nil {
		return f, err
	}
	switch {
	case f.FinishReason == inference.FinishToolCalls:
	case reason == "length":
		f.FinishReason = inference.FinishLength
	default:
		f.FinishReason = inference.FinishStop
	}
	if f.CompletionTokens > 0 {
		f.MeanLogprob = sum / float64(f.CompletionTokens)
		f.HasLogprob = true
	}
	return f, nil
}
