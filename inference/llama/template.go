package llama

import (
	"fmt"
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
	c := v.chat
	if c == nil || c.src == "" {
		return "", fmt.Errorf("chat template: %w: the model has none", ErrUnsupported)
	}
	c.once.Do(func() { c.tmpl, c.err = jinja.Compile(c.src) })
	if c.err != nil {
		return "", fmt.Errorf("chat template: %w", c.err)
	}
	msgs := make([]any, len(messages))
	for i, m := range messages {
		msgs[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	out, err := c.tmpl.Render(map[string]any{
		"messages":              msgs,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             v.special(v.BOS),
		"eos_token":             v.special(v.EOS),
	})
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	if bos := v.special(v.BOS); v.AddBOS && bos != "" {
		out = strings.TrimPrefix(out, bos)
	}
	return out, nil
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
// or chat messages through the model's chat template (PlainPrompt without
// one), then req.Continue, the text an earlier expert already answered: the
// model goes on inside the same assistant turn.
func (b *Backend) Prompt(req inference.Request) (string, error) {
	p, _, err := b.render(req)
	return p, err
}

// render is Prompt, and for a templated chat the tokens that end the
// answer: the control tokens the rendered template uses (turn markers such
// as <|im_start|> and <|im_end|>), as Ollama's templates list them as stop
// words. The model's end-of-generation tokens end any answer.
func (b *Backend) render(req inference.Request) (string, []int, error) {
	if len(req.Messages) == 0 {
		return req.Prompt + req.Continue, nil, nil
	}
	v := b.model.Vocab
	if v.ChatTemplate() == "" {
		return PlainPrompt(req.Messages) + req.Continue, nil, nil
	}
	p, err := v.RenderChat(req.Messages, true)
	if err != nil {
		return "", nil, err
	}
	var ends []int
	for id, t := range v.tokens {
		if v.types[id] == tokControl && t != "" && strings.Contains(p, t) {
			ends = append(ends, id)
		}
	}
	return p + req.Continue, ends, nil
}
