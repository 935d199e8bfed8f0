package llama

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/mwpeer/mwpeer/inference"
)

// Tool calls. A model whose chat template takes tools and writes its calls
// in Qwen's (and Hermes') format,
//
//	<tool_call>
//	{"name": "get_weather", "arguments": {"city": "Paris"}}
//	</tool_call>
//
// is offered a request's tools through its template (RenderChatTools), and
// the engine reads the calls back out of the text it generates: the text
// before a call streams as content, each closed <tool_call> block becomes an
// inference.ToolCall, and the answer finishes with tool_calls. This is what
// Ollama's qwen3 parsers do.
//
// With tool_choice naming a function, the engine writes the frame of the
// call itself (<tool_call>, the name, </tool_call>) and the model writes the
// arguments, constrained to the function's parameter schema (JSONGrammar);
// with "required", the model writes the whole object, its name constrained
// to the offered functions. Those are the answers a client that names a
// function can rely on, as llama.cpp's grammar-constrained tool calls are.

const (
	toolOpenTag  = "<tool_call>"
	toolCloseTag = "</tool_call>"
)

// toolsVariable finds a template that reads the variable tools.
var toolsVariable = regexp.MustCompile(`\btools\b`)

// CallsTools reports whether the model's chat template offers a request's
// tools and writes tool calls in the format the engine reads (<tool_call>).
func (v *Vocab) CallsTools() bool {
	src := v.ChatTemplate()
	return toolsVariable.MatchString(src) && strings.Contains(src, toolOpenTag)
}

// offeredTools returns the tools of req the model sees, narrowed by its tool
// choice ("none": none, a name: that function only, as Ollama narrows them),
// and the names of the functions offered.
func offeredTools(req inference.Request) (json.RawMessage, []string, error) {
	if len(req.Tools) == 0 || req.ToolChoice == "none" {
		return nil, nil, nil
	}
	var tools []json.RawMessage
	if err := json.Unmarshal(req.Tools, &tools); err != nil {
		return nil, nil, fmt.Errorf("%w: tools: %v", inference.ErrInvalidRequest, err)
	}
	var kept []json.RawMessage
	var names []string
	for _, t := range tools {
		var tool struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if err := json.Unmarshal(t, &tool); err != nil || tool.Function.Name == "" {
			return nil, nil, fmt.Errorf("%w: tools: each needs function.name", inference.ErrInvalidRequest)
		}
		switch req.ToolChoice {
		case "", "auto", "required", tool.Function.Name:
			kept = append(kept, t)
			names = append(names, tool.Function.Name)
		}
	}
	if len(kept) == 0 {
		return nil, nil, fmt.Errorf("%w: tool_choice names %q, which is not among the tools", inference.ErrInvalidRequest, req.ToolChoice)
	}
	out, err := json.Marshal(kept)
	if err != nil {
		return nil, nil, fmt.Errorf("tools: %w", err)
	}
	return out, names, nil
}

// forcedCall is how the engine makes a model call a function: it writes
// prefix (the start of the call) after the prompt, lets the model write one
// JSON value under grammar, then adds suffix.
type forcedCall struct {
	prefix, suffix string
	grammar        *JSONGrammar
}

// forceCall returns the forced call for req's tool choice: nil unless it is
// "required" or names a function. tools are the offered tools (offeredTools).
func forceCall(req inference.Request, tools json.RawMessage, names []string) (*forcedCall, error) {
	switch req.ToolChoice {
	case "", "auto", "none":
		return nil, nil
	case "required":
		enum, err := json.Marshal(names)
		if err != nil {
			return nil, err
		}
		schema := `{"type":"object","properties":{"name":{"enum":` + string(enum) + `},"arguments":{"type":"object"}},"required":["name","arguments"]}`
		g, err := CompileJSON(json.RawMessage(schema))
		if err != nil {
			return nil, err
		}
		return &forcedCall{prefix: toolOpenTag + "\n", suffix: "\n" + toolCloseTag, grammar: g}, nil
	}
	var offered []struct {
		Function struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"function"`
	}
	if err := json.Unmarshal(tools, &offered); err != nil || len(offered) != 1 {
		return nil, fmt.Errorf("%w: tool_choice %q", inference.ErrInvalidRequest, req.ToolChoice)
	}
	params := offered[0].Function.Parameters
	if len(params) == 0 || string(params) == "null" {
		params = json.RawMessage(`{"type":"object"}`)
	}
	g, err := CompileJSON(params)
	if err != nil {
		return nil, fmt.Errorf("parameters of %s: %w", req.ToolChoice, err)
	}
	name, err := json.Marshal(req.ToolChoice)
	if err != nil {
		return nil, err
	}
	return &forcedCall{
		prefix:  toolOpenTag + "\n{\"name\": " + string(name) + ", \"arguments\": ",
		suffix:  "}\n" + toolCloseTag,
		grammar: g,
	}, nil
}

// toolParser splits generated text into content and tool calls as it
// streams: content goes out as soon as it cannot be the start of a call
// (text that could begin <tool_call>, and the whitespace before it, waits),
// a call once its closing tag has come. As in Ollama's parser, whitespace
// next to a call is not content.
type toolParser struct {
	buf      strings.Builder
	inCall   bool // between <tool_call> and </tool_call>
	afterEnd bool // a call just closed: whitespace is not content yet
	calls    int  // calls read so far, which numbers the next
}

// add takes the next piece of generated text and returns the content and
// the calls it completes.
func (p *toolParser) add(s string) (content string, calls []inference.ToolCall) {
	p.buf.WriteString(s)
	var out strings.Builder
	for {
		text := p.buf.String()
		if p.inCall {
			end := strings.Index(text, toolCloseTag)
			if end < 0 {
				break
			}
			if tc, ok := p.parse(text[:end]); ok {
				calls = append(calls, tc)
			} else {
				// Not a call after all: the model's text, kept as content.
				out.WriteString(toolOpenTag + text[:end+len(toolCloseTag)])
			}
			p.buf.Reset()
			p.buf.WriteString(text[end+len(toolCloseTag):])
			p.inCall, p.afterEnd = false, true
			continue
		}
		if p.afterEnd {
			// The whitespace after a call, however it comes, is dropped.
			text = strings.TrimLeftFunc(text, unicode.IsSpace)
			p.buf.Reset()
			p.buf.WriteString(text)
			if text == "" {
				break
			}
			p.afterEnd = false
		}
		if i := strings.Index(text, toolOpenTag); i >= 0 {
			out.WriteString(strings.TrimRightFunc(text[:i], unicode.IsSpace))
			p.buf.Reset()
			p.buf.WriteString(text[i+len(toolOpenTag):])
			p.inCall = true
			continue
		}
		hold := len(text) - partialSuffix(text, toolOpenTag)
		hold -= len(text[:hold]) - len(strings.TrimRightFunc(text[:hold], unicode.IsSpace))
		out.WriteString(text[:hold])
		p.buf.Reset()
		p.buf.WriteString(text[hold:])
		break
	}
	return out.String(), calls
}

// finish returns what the parser still holds, as content: whitespace and
// the start of a tag that never came, or a call that was never closed (cut
// by max_tokens or a stop).
func (p *toolParser) finish() string {
	rest := p.buf.String()
	p.buf.Reset()
	if p.inCall {
		p.inCall = false
		return toolOpenTag + rest
	}
	return rest
}

// parse reads the JSON object of one call; ok is false if it is not one.
func (p *toolParser) parse(body string) (inference.ToolCall, bool) {
	var call struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(body)), &call); err != nil || call.Name == "" {
		return inference.ToolCall{}, false
	}
	args := call.Arguments
	var s string
	if json.Unmarshal(args, &s) == nil {
		args = json.RawMessage(s) // arguments written as a JSON string
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, args); err != nil || !isObject(compact.Bytes()) {
		if len(args) != 0 && string(args) != "null" {
			return inference.ToolCall{}, false
		}
		compact.Reset()
		compact.WriteString("{}")
	}
	tc := inference.ToolCall{Index: p.calls, ID: fmt.Sprintf("call_%d", p.calls), Name: call.Name, Arguments: compact.String()}
	p.calls++
	return tc, true
}

func isObject(b []byte) bool { return len(b) > 0 && b[0] == '{' }

// partialSuffix returns the length of the longest suffix of s that is a
// proper prefix of tag.
func partialSuffix(s, tag string) int {
	for n := min(len(s), len(tag)-1); n > 0; n-- {
		if strings.HasSuffix(s, tag[:n]) {
			return n
		}
	}
	return 0
}

// capabilities is what the engine can do with model m.
func capabilities(m *Model) []string {
	caps := slices.Clone(Capabilities)
	if m.Vocab != nil && m.Vocab.CallsTools() {
		caps = append(caps, inference.CapTools)
	}
	slices.Sort(caps)
	return caps
}
