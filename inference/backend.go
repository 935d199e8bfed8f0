package inference

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. They survive the wire: a remote peer's error carries a code
// that infer.Call maps back to the same sentinel, so errors.Is works end to end.
var (
	// ErrUnknownModel: the backend does not serve the requested model.
	ErrUnknownModel = errors.New("unknown model")
	// ErrBusy: the backend's concurrency limit was reached and no slot freed
	// up within its queue wait.
	ErrBusy = errors.New("backend busy")
	// ErrRefused: the serving peer's policy declined to serve this caller
	// (consent, budget, membership). Like ErrBusy it says nothing about the
	// request itself: dispatch asks another expert.
	ErrRefused = errors.New("refused by the serving peer")
	// ErrConsentRefused: the serving peer's consent policy does not serve
	// this caller or this model (it wraps ErrRefused).
	ErrConsentRefused = fmt.Errorf("consent refused: %w", ErrRefused)
	// ErrQuotaExceeded: the caller used up what the serving peer's policy
	// or its consent token allows it for now (it wraps ErrRefused).
	ErrQuotaExceeded = fmt.Errorf("quota exceeded: %w", ErrRefused)
	// ErrNoExpert: there was no target to run the request on, or every one of
	// them failed before producing a token.
	ErrNoExpert = errors.New("no expert available")
	// ErrInvalidRequest: the request failed validation.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrStalled: an expert produced no chunk within the stall timeout.
	ErrStalled = errors.New("expert stalled")
	// ErrUnsupported: the model or its engine cannot do what the request
	// asks (tools, images, JSON output, embeddings). Unlike ErrBusy it says
	// something about the request: another expert serving the same model
	// with the same engine would refuse it too. See UnsupportedError.
	ErrUnsupported = errors.New("not supported")
)

// Finish reasons reported in Final.
const (
	FinishStop      = "stop"
	FinishLength    = "length"
	FinishToolCalls = "tool_calls" // the answer is tool calls (Chunk.ToolCalls)
)

// Message is one turn of a chat.
type Message struct {
	Role    string `json:"role"` // "system", "user", "assistant" or "tool"
	Content string `json:"content"`
	// Images are the images of a user message (encoded files: PNG, JPEG),
	// for models with CapVision.
	Images [][]byte `json:"images,omitempty"`
	// ToolCalls are the calls an assistant message made.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID and ToolName say which call a "tool" message answers.
	ToolCallID string `json:"tool_call_id,omitempty"`
	ToolName   string `json:"tool_name,omitempty"`
}

// ToolCall is one call of a function the request offered in Tools.
type ToolCall struct {
	// Index orders the calls of one answer (0, 1, ...).
	Index int    `json:"index"`
	ID    string `json:"id,omitempty"`
	Name  string `json:"name"`
	// Arguments is a JSON object, as text.
	Arguments string `json:"arguments"`
}

// Request asks a backend for a completion. Messages make it a chat; when
// Messages is empty, Prompt is completed (with the model's template unless Raw).
type Request struct {
	Model    string    `json:"model"`
	Messages []Message `json:"messages,omitempty"`
	Prompt   string    `json:"prompt,omitempty"`
	Raw      bool      `json:"raw,omitempty"`

	// MaxTokens bounds the tokens this call generates (0: backend default).
	MaxTokens   int      `json:"max_tokens,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
	Stop        []string `json:"stop,omitempty"`
	Seed        *int64   `json:"seed,omitempty"`
	Logprobs    bool     `json:"logprobs,omitempty"`
	TopLogprobs int      `json:"top_logprobs,omitempty"`

	// Continue is text already delivered to the client for this answer; the
	// backend generates what follows it and does not repeat it (failover).
	Continue string `json:"continue,omitempty"`

	// Tools is the functions the model may call, as a JSON array in
	// OpenAI's shape ([{"type":"function","function":{"name",
	// "description","parameters"}}], which is also Ollama's); it needs a
	// model with CapTools. ToolChoice is "auto" (or ""), "none",
	// "required", or the name of the one function to call.
	Tools      json.RawMessage `json:"tools,omitempty"`
	ToolChoice string          `json:"tool_choice,omitempty"`
	// Format asks for JSON output, as Ollama's format: the JSON string
	// "json" for any JSON object, or a JSON Schema object the output must
	// validate against. It needs a model with CapJSON.
	Format json.RawMessage `json:"format,omitempty"`
	// Input, when set, makes this an embedding request instead of a
	// completion: the backend emits one Chunk per input, in order, with its
	// Embedding set. It needs a model with CapEmbedding.
	Input []string `json:"input,omitempty"`

	// Deadline, if set, bounds the whole call. On the wire it travels as a
	// relative timeout, so peers' clocks need not agree.
	Deadline time.Time `json:"-"`
}

// TopLogprob is one alternative at a token position.
type TopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
}

// TokenLogprob is the log-probability of one generated token and, if asked
// for, the most likely alternatives at its position.
type TokenLogprob struct {
	Token   string       `json:"token"`
	Logprob float64      `json:"logprob"`
	Top     []TopLogprob `json:"top,omitempty"`
}

// Chunk is a piece of streamed output, usually one token.
type Chunk struct {
	Text     string         `json:"text"`
	Logprobs []TokenLogprob `json:"logprobs,omitempty"`
	// ToolCalls are whole tool calls the model made (each once, complete).
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// Embedding answers one input of an embedding request.
	Embedding []float32 `json:"embedding,omitempty"`
}

// Final closes a stream. Durations travel as nanoseconds.
type Final struct {
	FinishReason     string        `json:"finish_reason"`
	PromptTokens     int           `json:"prompt_tokens"`
	CompletionTokens int           `json:"completion_tokens"`
	TTFT             time.Duration `json:"ttft_ns"`
	Duration         time.Duration `json:"duration_ns"`
	// MeanLogprob is the mean log-probability of the generated tokens; it is
	// meaningful only when HasLogprob is true.
	MeanLogprob float64 `json:"mean_logprob,omitempty"`
	HasLogprob  bool    `json:"has_logprob,omitempty"`
}

// ModelInfo describes a model a backend serves.
type ModelInfo struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	Family string `json:"family"`
	// Params is the parameters one token uses (for a Mixture-of-Experts
	// model the active ones, where the engine knows them); 0 when unknown.
	// Receipts price work by it.
	Params int64 `json:"params,omitempty"`
	// Context is the context length in tokens (0: unknown).
	Context int `json:"context,omitempty"`
	// Capabilities is what the model can do (the Cap constants); nil
	// means CapCompletion only.
	Capabilities []string `json:"capabilities,omitempty"`
	// Kernels is the kernel set an embedded engine computes with
	// (llama.Kernels: "avx2", "neon", "generic"); "" for other engines.
	// Peers of different sets differ in the last bits, so answers are
	// compared only within one.
	Kernels string `json:"kernels,omitempty"`
}

// Backend generates tokens. Generate calls emit for each chunk in order and
// returns when the answer is complete, ctx is done, or emit fails (its error
// is returned). Implementations are safe for concurrent use.
type Backend interface {
	Name() string
	Models(ctx context.Context) ([]ModelInfo, error)
	Generate(ctx context.Context, req Request, emit func(Chunk) error) (Final, error)
}

// logprobMean accumulates log-probabilities for Final.MeanLogprob.
type logprobMean struct {
	sum float64
	n   int
}

func (m *logprobMean) add(lps []TokenLogprob) {
	for _, lp := range lps {
		m.sum += lp.Logprob
		m.n++
	}
}

func (m *logprobMean) fill(f *Final) {
	if m.n > 0 {
		f.MeanLogprob = m.sum / float64(m.n)
		f.HasLogprob = true
	}
}

// limiter bounds concurrent calls to a backend. A caller waits for a slot at
// most wait (0: not at all), then gets ErrBusy; ctx ends the wait early.
type limiter struct {
	slots chan struct{} // nil: unlimited
	wait  time.Duration
}

func newLimiter(n int, wait time.Duration) *limiter {
	l := &limiter{wait: wait}
	if n > 0 {
		l.slots = make(chan struct{}, n)
	}
	return l
}

func (l *limiter) acquire(ctx context.Context) error {
	if l.slots == nil {
		return ctx.Err()
	}
	select {
	case l.slots <- struct{}{}:
		return nil
	default:
	}
	if l.wait <= 0 {
		return ErrBusy
	}
	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-t.C:
		return ErrBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *limiter) release() {
	if l.slots != nil {
		<-l.slots
	}
}

// withDeadline applies req.Deadline to ctx.
func withDeadline(ctx context.Context, req Request) (context.Context, context.CancelFunc) {
	if req.Deadline.IsZero() {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, req.Deadline)
}
