package llama

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/ardanlabs/jinja"
	"github.com/mwpeer/mwpeer/inference"
)

// Chat templates. A GGUF file carries its model's chat template as Jinja
// source (tokenizer.chat_template), the one Hugging Face's
// apply_chat_template runs. The engine renders it with
// github.com/ardanlabs/jinja, a pure-Go Jinja made for the templates of
// GGUF files (it applies HF's trim_blocks and lstrip_blocks and has the
// Python string methods, namespace() and raise_exception() they use).
//
// The template sees messages (role and content of each), add_generation_prompt
// (true: the prompt ends where the assistant's answer starts), bos_token and
// eos_token. llama.cpp adds the BOS token itself when the vocabulary asks for
// it, as it does for a raw prompt, so a rendered prompt that starts with the
// BOS text loses it rather than starting with two.
//
// A model without a template gets the plain format of PlainPrompt.

// chatTemplate is a vocabulary's compiled template, compiled on first use.
type chatTemplate struct {
	src  string
	once sync.Once
	tmpl *jinja.Template
	err  error
}

// ChatTemplate returns the Jinja source of the model's chat template, "" if it has none.
func (v *Vocab) ChatTemplate() string {
	if v.chat == nil {
		return ""
	}
	return v.chat.src
}

// RenderChat renders messages with the model's chat template, ending with
// the start of the assistant's turn when addGenerationPrompt is set. It
// fails if the model has no template or the template fails.
func (v *Vocab) RenderChat(messages []inference.Message, addGenerationPrompt bool) (string, error) {
	return v.RenderChatTools(messages, nil, addGenerationPrompt)
}

// RenderChatTools is RenderChat with the functions the model may call:
// tools is a JSON array in OpenAI's shape (nil or empty: none), which the
// template sees as tools, each as the request wrote it (key order kept, as
// Hugging Face's tojson keeps a dict's). An assistant message's tool calls
// reach the template as tool_calls (id, type "function", function with name
// and arguments, an object), a tool message's call as tool_call_id and name.
func (v *Vocab) RenderChatTools(messages []inference.Message, tools json.RawMessage, addGenerationPrompt bool) (string, error) {
	c := v.chat
	if c == nil || c.src == "" {
		return "", fmt.Errorf("chat template: %w: the model has none", ErrUnsupported)
	}
	c.once.Do(func() { c.tmpl, c.err = jinja.Compile(c.src) })
	if c.err != nil {
		return "", fmt.Errorf("chat template: %w", c.err)
	}
	msgs := make([]jinja.Value, len(messages))
	for i, m := range messages {
		msgs[i] = messageValue(m)
	}
	data := map[string]jinja.Value{
		"messages":              jinja.NewList(msgs),
		"add_generation_prompt": jinja.NewBool(addGenerationPrompt),
		"bos_token":             jinja.NewString(v.special(v.BOS)),
		"eos_token":             jinja.NewString(v.special(v.EOS)),
	}
	if len(tools) > 0 {
		tv, err := jsonValue(tools)
		if err != nil || !tv.IsList() {
			return "", fmt.Errorf("chat template: %w: tools are not a JSON array", inference.ErrInvalidRequest)
		}
		if tv.AsList().Len() > 0 {
			data["tools"] = tv
		}
	}
	out, err := c.tmpl.RenderValues(data)
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	if bos := v.special(v.BOS); v.AddBOS && bos != "" {
		out = strings.TrimPrefix(out, bos)
	}
	return out, nil
}

// messageValue is m as a chat template sees it.
func messageValue(m inference.Message) jinja.Value {
	d := jinja.NewDict()
	dict := d.AsDict()
	dict.Set("role", jinja.NewString(m.Role))
	dict.Set("content", jinja.NewString(m.Content))
	if len(m.ToolCalls) > 0 {
		calls := make([]jinja.Value, len(m.ToolCalls))
		for i, tc := range m.ToolCalls {
			fn := jinja.NewDict()
			fn.AsDict().Set("name", jinja.NewString(tc.Name))
			// Arguments are an object, as Hugging Face's templates expect;
			// text that is not JSON goes as a string, which templates
			// write as it is.
			args, err := jsonValue(json.RawMessage(tc.Arguments))
			if err != nil {
				args = jinja.NewString(tc.Arguments)
			}
			fn.AsDict().Set("arguments", args)
			call := jinja.NewDict()
			if tc.ID != "" {
				call.AsDict().Set("id", jinja.NewString(tc.ID))
			}
			call.AsDict().Set("type", jinja.NewString("function"))
			call.AsDict().Set("function", fn)
			calls[i] = call
		}
		dict.Set("tool_calls", jinja.NewList(calls))
	}
	if m.ToolCallID != "" {
		dict.Set("tool_call_id", jinja.NewString(m.ToolCallID))
	}
	if m.ToolName != "" {
		dict.Set("name", jinja.NewString(m.ToolName))
	}
	return d
}

// jsonValue decodes one JSON text into a template value, keeping the order
// of object keys (jinja.FromGoValue would sort them) and integers as
// integers, so that tojson writes it back as Python's json.dumps would.
func jsonValue(text json.RawMessage) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	v, err := decodeValue(dec, 0)
	if err != nil {
		return jinja.Value{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return jinja.Value{}, errors.New("json: text after the value")
	}
	return v, nil
}

// maxJSONValueDepth bounds the nesting jsonValue follows, so that a request
// cannot exhaust the stack.
const maxJSONValueDepth = 64

func decodeValue(dec *json.Decoder, depth int) (jinja.Value, error) {
	if depth > maxJSONValueDepth {
		return jinja.Value{}, errors.New("json: nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		return jinja.Value{}, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '[':
			var items []jinja.Value
			for dec.More() {
				item, err := decodeValue(dec, depth+1)
				if err != nil {
					return jinja.Value{}, err
				}
				items = append(items, item)
			}
			_, err := dec.Token() // ]
			return jinja.NewList(items), err
		case '{':
			d := jinja.NewDict()
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return jinja.Value{}, err
				}
				key, _ := k.(string)
				val, err := decodeValue(dec, depth+1)
				if err != nil {
					return jinja.Value{}, err
				}
				d.AsDict().Set(key, val)
			}
			_, err := dec.Token() // }
			return d, err
		}
		return jinja.Value{}, fmt.Errorf("json: unexpected %v", t)
	default:
		return jinja.FromGoValue(t), nil // nil, bool, json.Number, string
	}
}

// special returns the text of token id, "" if there is none.
func (v *Vocab) special(id int) string {
	if id < 0 || id >= len(v.tokens) {
		return ""
	}
	return v.tokens[id]
}

// PlainPrompt is the format of chat messages for a model without a chat
// template: one "role: content" line per message, then "assistant:".
func PlainPrompt(messages []inference.Message) string {
	var sb strings.Builder
	for _, m := range messages {
		fmt.Fprintf(&sb, "%s: %s\n", m.Role, m.Content)
	}
	sb.WriteString("assistant:")
	return sb.String()
}

// Prompt renders a request as the text the model completes: the raw prompt,
// or chat messages (and the tools offered, for a model that calls tools)
// through the model's chat template (PlainPrompt without one), then
// req.Continue, the text an earlier expert already answered: the model goes
// on inside the same assistant turn.
func (b *Backend) Prompt(req inference.Request) (string, error) {
	r, err := b.render(req)
	return r.prompt, err
}

// rendered is a request made ready for the model.
type rendered struct {
	prompt string
	// ends are the tokens that end the answer: for a templated chat the
	// control tokens the rendered template uses (turn markers such as
	// <|im_start|> and <|im_end|>), as Ollama's templates list them as stop
	// words. The model's end-of-generation tokens end any answer.
	ends []int
	// tools is set when the model was offered tools: its answer is read
	// for tool calls.
	tools bool
	// force, when set, makes the model call a function (tool_choice).
	force *forcedCall
}

func (b *Backend) render(req inference.Request) (rendered, error) {
	if len(req.Messages) == 0 {
		return rendered{prompt: req.Prompt + req.Continue}, nil
	}
	v := b.model.Vocab
	if v.ChatTemplate() == "" {
		return rendered{prompt: PlainPrompt(req.Messages) + req.Continue}, nil
	}
	var r rendered
	var tools json.RawMessage
	if v.CallsTools() {
		var names []string
		var err error
		if tools, names, err = offeredTools(req); err != nil {
			return rendered{}, err
		}
		r.tools = len(tools) > 0
		if r.force, err = forceCall(req, tools, names); err != nil {
			return rendered{}, err
		}
	}
	p, err := v.RenderChatTools(req.Messages, tools, true)
	if err != nil {
		return rendered{}, err
	}
	for id, t := range v.tokens {
		if v.types[id] == tokControl && t != "" && strings.Contains(p, t) {
			r.ends = append(r.ends, id)
		}
	}
	r.prompt = p + req.Continue
	return r, nil
}
