package infer

import (
	"context"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wire"
	"github.com/mwpeer/mwpeer/receipt"
)

// Error codes of error frames.
const (
	CodeUnknownModel   = "unknown_model"   // inference.ErrUnknownModel
	CodeBusy           = "busy"            // inference.ErrBusy
	CodeRefused        = "refused"         // inference.ErrRefused
	CodeConsent        = "consent_refused" // inference.ErrConsentRefused
	CodeQuota          = "quota_exceeded"  // inference.ErrQuotaExceeded
	CodeInvalidRequest = "invalid_request" // inference.ErrInvalidRequest
	CodeTimeout        = "timeout"         // context.DeadlineExceeded
	CodeUnsupported    = "unsupported"     // inference.ErrUnsupported
	CodeInternal       = wire.CodeInternal // anything else
)

// codes maps error codes to the sentinels they stand for.
var codes = wire.Codes{
	CodeUnknownModel:   inference.ErrUnknownModel,
	CodeBusy:           inference.ErrBusy,
	CodeRefused:        inference.ErrRefused,
	CodeConsent:        inference.ErrConsentRefused,
	CodeQuota:          inference.ErrQuotaExceeded,
	CodeInvalidRequest: inference.ErrInvalidRequest,
	CodeTimeout:        context.DeadlineExceeded,
	CodeUnsupported:    inference.ErrUnsupported,
}

// request is the request frame.
type request struct {
	Model       string    `json:"model"`
	Messages    []message `json:"messages,omitempty"`
	Prompt      string    `json:"prompt,omitempty"`
	Raw         bool      `json:"raw,omitempty"`
	MaxTokens   int       `json:"max_tokens,omitempty"`
	Temperature *float64  `json:"temperature,omitempty"`
	TopP        *float64  `json:"top_p,omitempty"`
	Stop        []string  `json:"stop,omitempty"`
	Seed        *int64    `json:"seed,omitempty"`
	Logprobs    bool      `json:"logprobs,omitempty"`
	TopLogprobs int       `json:"top_logprobs,omitempty"`
	Continue    string    `json:"continue,omitempty"`
	// Tools (a JSON array), ToolChoice, Format (JSON) and Input are
	// inference.Request's fields of the same names (version 1.0.0 peers
	// that predate them ignore them, which is why routing sends such
	// requests only to peers announcing the capability they need).
	Tools      json.RawMessage `json:"tools,omitempty"`
	ToolChoice string          `json:"tool_choice,omitempty"`
	Format     json.RawMessage `json:"format,omitempty"`
	Input      []string        `json:"input,omitempty"`
	// TimeoutMS is what is left of the caller's deadline (0: none).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// Grant and Cert are the caller's credentials (inference.Credentials),
	// base64 in JSON, at most inference.MaxCredential bytes each.
	Grant []byte `json:"grant,omitempty"`
	Cert  []byte `json:"cert,omitempty"`
}

type message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Images     [][]byte   `json:"images,omitempty"` // base64 in JSON
	ToolCalls  []toolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	ToolName   string     `json:"tool_name,omitempty"`
}

type toolCall struct {
	Index     int    `json:"index"`
	ID        string `json:"id,omitempty"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

func toWireToolCalls(tcs []inference.ToolCall) []toolCall {
	if tcs == nil {
		return nil
	}
	out := make([]toolCall, len(tcs))
	for i, t := range tcs {
		out[i] = toolCall{Index: t.Index, ID: t.ID, Name: t.Name, Arguments: t.Arguments}
	}
	return out
}

func fromWireToolCalls(tcs []toolCall) []inference.ToolCall {
	if tcs == nil {
		return nil
	}
	out := make([]inference.ToolCall, len(tcs))
	for i, t := range tcs {
		out[i] = inference.ToolCall{Index: t.Index, ID: t.ID, Name: t.Name, Arguments: t.Arguments}
	}
	return out
}

// frame is a server frame: exactly one field is set.
type frame struct {
	Chunk *chunk      `json:"chunk,omitempty"`
	Final *final      `json:"final,omitempty"`
	Error *errorFrame `json:"error,omitempty"`
	// Receipt is a receipt.Signed in its binary form with the server's
	// signature only (base64 in JSON). It follows a final, never anything
	// else.
	Receipt []byte `json:"receipt,omitempty"`
}

// answer is the requester's reply to a receipt frame: exactly one field is
// set.
type answer struct {
	// Countersign is the requester's signature of the receipt (base64 in
	// JSON): it accepted it.
	Countersign []byte `json:"countersign,omitempty"`
	// Refuse says why the requester did not sign.
	Refuse string `json:"refuse,omitempty"`
}

// Size caps of the receipt exchange. A receipt frame holds at most
// receipt.MaxSize bytes in base64; an answer holds a signature (receipt's
// cap is 1 KiB) or a reason of at most MaxRefuseReason bytes, which JSON may
// escape to six times that.
const (
	MaxReceiptFrameSize = len(`{"receipt":""}`) + (receipt.MaxSize+2)/3*4
	MaxAnswerFrameSize  = 4 << 10
	MaxRefuseReason     = 256
)

type chunk struct {
	Text      string         `json:"text"`
	Logprobs  []tokenLogprob `json:"logprobs,omitempty"`
	ToolCalls []toolCall     `json:"tool_calls,omitempty"`
	Embedding []float32      `json:"embedding,omitempty"`
}

type tokenLogprob struct {
	Token   string       `json:"token"`
	Logprob float64      `json:"logprob"`
	Top     []topLogprob `json:"top,omitempty"`
}

type topLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
}

// final closes an answer. Durations are nanoseconds.
type final struct {
	FinishReason     string  `json:"finish_reason"`
	PromptTokens     int     `json:"prompt_tokens"`
	CompletionTokens int     `json:"completion_tokens"`
	TTFTNS           int64   `json:"ttft_ns"`
	DurationNS       int64   `json:"duration_ns"`
	MeanLogprob      float64 `json:"mean_logprob,omitempty"`
	HasLogprob       bool    `json:"has_logprob,omitempty"`
}

type errorFrame struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func toWireRequest(r inference.Request) request {
	w := request{
		Model: r.Model, Prompt: r.Prompt, Raw: r.Raw,
		MaxTokens: r.MaxTokens, Temperature: r.Temperature, TopP: r.TopP, Stop: r.Stop, Seed: r.Seed,
		Logprobs: r.Logprobs, TopLogprobs: r.TopLogprobs, Continue: r.Continue,
		Tools: r.Tools, ToolChoice: r.ToolChoice, Format: r.Format, Input: r.Input,
	}
	if r.Messages != nil {
		w.Messages = make([]message, len(r.Messages))
		for i, m := range r.Messages {
			w.Messages[i] = message{Role: m.Role, Content: m.Content, Images: m.Images,
				ToolCalls: toWireToolCalls(m.ToolCalls), ToolCallID: m.ToolCallID, ToolName: m.ToolName}
		}
	}
	return w
}

// request returns w as an inference.Request (without a deadline: the
// service sets its own from TimeoutMS and its limits).
func (w *request) request() inference.Request {
	r := inference.Request{
		Model: w.Model, Prompt: w.Prompt, Raw: w.Raw,
		MaxTokens: w.MaxTokens, Temperature: w.Temperature, TopP: w.TopP, Stop: w.Stop, Seed: w.Seed,
		Logprobs: w.Logprobs, TopLogprobs: w.TopLogprobs, Continue: w.Continue,
		Tools: w.Tools, ToolChoice: w.ToolChoice, Format: w.Format, Input: w.Input,
	}
	if w.Messages != nil {
		r.Messages = make([]inference.Message, len(w.Messages))
		for i, m := range w.Messages {
			r.Messages[i] = inference.Message{Role: m.Role, Content: m.Content, Images: m.Images,
				ToolCalls: fromWireToolCalls(m.ToolCalls), ToolCallID: m.ToolCallID, ToolName: m.ToolName}
		}
	}
	return r
}

func toWireChunk(c inference.Chunk) *chunk {
	w := &chunk{Text: jsonText(c.Text), ToolCalls: toWireToolCalls(c.ToolCalls), Embedding: c.Embedding}
	if c.Logprobs != nil {
		w.Logprobs = make([]tokenLogprob, len(c.Logprobs))
		for i, lp := range c.Logprobs {
			w.Logprobs[i] = tokenLogprob{Token: lp.Token, Logprob: lp.Logprob}
			if lp.Top != nil {
				w.Logprobs[i].Top = make([]topLogprob, len(lp.Top))
				for j, t := range lp.Top {
					w.Logprobs[i].Top[j] = topLogprob{Token: t.Token, Logprob: t.Logprob}
				}
			}
		}
	}
	return w
}

func (w *chunk) chunk() inference.Chunk {
	c := inference.Chunk{Text: w.Text, ToolCalls: fromWireToolCalls(w.ToolCalls), Embedding: w.Embedding}
	if w.Logprobs != nil {
		c.Logprobs = make([]inference.TokenLogprob, len(w.Logprobs))
		for i, lp := range w.Logprobs {
			c.Logprobs[i] = inference.TokenLogprob{Token: lp.Token, Logprob: lp.Logprob}
			if lp.Top != nil {
				c.Logprobs[i].Top = make([]inference.TopLogprob, len(lp.Top))
				for j, t := range lp.Top {
					c.Logprobs[i].Top[j] = inference.TopLogprob{Token: t.Token, Logprob: t.Logprob}
				}
			}
		}
	}
	return c
}

func toWireFinal(f inference.Final) *final {
	return &final{
		FinishReason: f.FinishReason, PromptTokens: f.PromptTokens, CompletionTokens: f.CompletionTokens,
		TTFTNS: int64(f.TTFT), DurationNS: int64(f.Duration), MeanLogprob: f.MeanLogprob, HasLogprob: f.HasLogprob,
	}
}

func (w *final) final() inference.Final {
	return inference.Final{
		FinishReason: w.FinishReason, PromptTokens: w.PromptTokens, CompletionTokens: w.CompletionTokens,
		TTFT: time.Duration(w.TTFTNS), Duration: time.Duration(w.DurationNS), MeanLogprob: w.MeanLogprob, HasLogprob: w.HasLogprob,
	}
}

// jsonText is s as a JSON frame carries it: encoding/json replaces each byte
// that is not valid UTF-8 by U+FFFD. The server sends and hashes this text,
// so its answer hash is that of the text the client reads.
func jsonText(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
