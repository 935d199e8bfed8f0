package inference

import (
	"fmt"
	"slices"
)

// Capabilities a model can have, as Ollama's /api/show names them, plus
// CapJSON. A peer announces them for every model it serves; routing sends a
// request only to peers whose model has every capability it needs (Needs).
const (
	CapCompletion = "completion" // text generation
	CapTools      = "tools"      // function calling (Request.Tools)
	CapVision     = "vision"     // images in messages
	CapEmbedding  = "embedding"  // embeddings (Request.Input)
	CapThinking   = "thinking"   // a separate reasoning trace
	CapJSON       = "json"       // JSON output, free or by schema (Request.Format)
)

// KnownCapabilities lists every capability mwpeer understands; announcements
// carry no others.
var KnownCapabilities = []string{CapCompletion, CapTools, CapVision, CapEmbedding, CapThinking, CapJSON}

// Needs lists the capabilities req needs, the request parameter that needs
// each, in the same order: an embedding request needs CapEmbedding; any other
// needs CapCompletion, and CapTools for tools (unless tool_choice is "none"),
// CapVision for images, CapJSON for a format.
func Needs(req Request) (caps, params []string) {
	if len(req.Input) > 0 {
		return []string{CapEmbedding}, []string{"input"}
	}
	caps, params = []string{CapCompletion}, []string{"model"}
	if len(req.Tools) > 0 && req.ToolChoice != "none" {
		caps, params = append(caps, CapTools), append(params, "tools")
	}
	for _, m := range req.Messages {
		if len(m.Images) > 0 {
			caps, params = append(caps, CapVision), append(params, "messages")
			break
		}
	}
	if len(req.Format) > 0 {
		caps, params = append(caps, CapJSON), append(params, "response_format")
	}
	return caps, params
}

// Can reports whether a model with capabilities have (nil: CapCompletion
// only) can serve req; if not, it returns the first capability missing and
// the request parameter that needs it.
func Can(have []string, req Request) (ok bool, missing, param string) {
	if have == nil {
		have = []string{CapCompletion}
	}
	caps, params := Needs(req)
	for i, c := range caps {
		if !slices.Contains(have, c) {
			return false, c, params[i]
		}
	}
	return true, "", ""
}

// UnsupportedError says that a model cannot do what a request asks; it
// wraps ErrUnsupported. The HTTP layer answers it with a 400 naming Param.
type UnsupportedError struct {
	Model      string
	Capability string // the capability missing
	Param      string // the request parameter that needs it (tools, messages, response_format, input)
	Engine     string // the engine that refused, if one did
	Detail     string // why, when the capability is there but not for this request
}

func (e *UnsupportedError) Error() string {
	what := map[string]string{
		CapTools:      "cannot call tools",
		CapVision:     "cannot read images",
		CapJSON:       "cannot constrain its output to JSON",
		CapEmbedding:  "is not an embedding model",
		CapCompletion: "cannot generate text (it is an embedding model: use /v1/embeddings)",
	}[e.Capability]
	if what == "" {
		what = "lacks the capability " + e.Capability
	}
	by := ""
	if e.Engine != "" {
		by = " (engine " + e.Engine + ")"
	}
	if e.Detail != "" {
		what = "cannot do this: " + e.Detail
	}
	return fmt.Sprintf("%s: model %q%s %s: %s (GET /v1/models lists what each model can do under mwpeer.capabilities)", e.Param, e.Model, by, what, ErrUnsupported)
}

func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

// Check returns an *UnsupportedError when a model with capabilities have
// cannot serve req, nil when it can; engine names the refusing engine.
func Check(have []string, engine string, req Request) error {
	if ok, c, p := Can(have, req); !ok {
		return &UnsupportedError{Model: req.Model, Capability: c, Param: p, Engine: engine}
	}
	return nil
}
