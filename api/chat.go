package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/mwpeer/mwpeer/inference"
)

// This file reads what OpenAI chat requests carry beyond text: content
// parts with images, tools and tool calls, tool results and
// response_format, into inference's terms.

// Limits on what a chat request carries beyond text.
const (
	MaxTools       = 128
	MaxToolCalls   = 128     // per assistant message
	MaxImages      = 16      // per request
	MaxImageBytes  = 2 << 20 // decoded, per image
	MaxSchemaBytes = 64 << 10
)

// chatMessage is one message of a chat request.
type chatMessage struct {
	Role       string         `json:"role"`
	Content    messageContent `json:"content"`
	Name       string         `json:"name"`
	ToolCalls  []toolCallJSON `json:"tool_calls"`
	ToolCallID string         `json:"tool_call_id"`
}

// toolCallJSON is a tool call in OpenAI's shape; in a stream's delta it
// carries an index, and, after the first delta of a call, no id or name.
type toolCallJSON struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// messageContent is a message's content: a string, or an array of parts
// (text; image_url with a data: URL; the Responses API's input_text,
// output_text and input_image). A part it cannot take is kept as err, so
// that the request gets a 400 naming the message rather than "invalid JSON".
type messageContent struct {
	text   string
	images [][]byte
	err    error
}

func (c *messageContent) UnmarshalJSON(b []byte) error {
	*c = messageContent{}
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		c.text = s
		return nil
	}
	var parts []struct {
		Type     string          `json:"type"`
		Text     string          `json:"text"`
		ImageURL json.RawMessage `json:"image_url"` // {"url": ...} or, in the Responses API, a string
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return errors.New("must be a string or an array of content parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		switch p.Type {
		case "text", "input_text", "output_text":
			sb.WriteString(p.Text)
		case "image_url", "input_image":
			img, err := imageData(p.ImageURL)
			if err != nil {
				c.err = err
				continue
			}
			c.images = append(c.images, img)
		default:
			c.err = fmt.Errorf("content part type %q is not supported (text and image_url are)", p.Type)
		}
	}
	c.text = sb.String()
	return nil
}

// imageData decodes an image_url: {"url": "data:image/png;base64,..."} or
// the bare string. Only data URLs: a peer does not fetch URLs for callers.
func imageData(raw json.RawMessage) ([]byte, error) {
	var u struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(raw, &u); err != nil {
		if err := json.Unmarshal(raw, &u.URL); err != nil {
			return nil, errors.New("image_url must be {\"url\": \"data:image/...;base64,...\"}")
		}
	}
	rest, ok := strings.CutPrefix(u.URL, "data:")
	if !ok {
		return nil, errors.New("image_url must be a data: URL (data:image/png;base64,...): a peer does not fetch images from the web")
	}
	meta, data, ok := strings.Cut(rest, ",")
	if !ok || !strings.HasSuffix(meta, ";base64") {
		return nil, errors.New("image_url: a data: URL with base64 content is needed")
	}
	if base64.StdEncoding.DecodedLen(len(data)) > MaxImageBytes {
		return nil, fmt.Errorf("image_url: an image may be at most %d bytes", MaxImageBytes)
	}
	img, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return nil, fmt.Errorf("image_url: bad base64: %v", err)
	}
	return img, nil
}

// messages turns chat messages into inference's, checking roles, tool
// calls and tool results.
func messages(in []chatMessage) ([]inference.Message, error) {
	if len(in) == 0 {
		return nil, bad("messages", "messages must hold at least one message")
	}
	if len(in) > MaxMessages {
		return nil, bad("messages", "at most %d messages", MaxMessages)
	}
	out := make([]inference.Message, 0, len(in))
	toolNames := map[string]string{} // tool call ID -> function name
	images := 0
	for i, m := range in {
		param := fmt.Sprintf("messages[%d]", i)
		if m.Content.err != nil {
			return nil, bad(param+".content", "%s.content: %v", param, m.Content.err)
		}
		msg := inference.Message{Role: m.Role, Content: m.Content.text, Images: m.Content.images}
		switch m.Role {
		case "system", "user", "assistant":
		case "developer":
			msg.Role = "system"
		case "tool":
			if m.ToolCallID == "" {
				return nil, bad(param+".tool_call_id", "a tool message needs the tool_call_id of the call it answers")
			}
			msg.ToolCallID = m.ToolCallID
			msg.ToolName = toolNames[m.ToolCallID]
			if msg.ToolName == "" {
				msg.ToolName = m.Name
			}
		default:
			return nil, bad(param+".role", "role %q is not supported (system, developer, user, assistant or tool)", m.Role)
		}
		if len(msg.Images) > 0 && m.Role != "user" {
			return nil, bad(param+".content", "only user messages may hold images")
		}
		images += len(msg.Images)
		if images > MaxImages {
			return nil, bad(param+".content", "at most %d images in a request", MaxImages)
		}
		if len(m.ToolCalls) > 0 {
			if m.Role != "assistant" {
				return nil, bad(param+".tool_calls", "only assistant messages make tool calls")
			}
			if len(m.ToolCalls) > MaxToolCalls {
				return nil, bad(param+".tool_calls", "at most %d tool calls in a message", MaxToolCalls)
			}
			for j, tc := range m.ToolCalls {
				if tc.Function.Name == "" {
					return nil, bad(fmt.Sprintf("%s.tool_calls[%d].function.name", param, j), "a tool call needs a function name")
				}
				args := tc.Function.Arguments
				if strings.TrimSpace(args) == "" {
					args = "{}"
				}
				var obj map[string]any
				if err := json.Unmarshal([]byte(args), &obj); err != nil {
					return nil, bad(fmt.Sprintf("%s.tool_calls[%d].function.arguments", param, j), "arguments must be a JSON object, as text")
				}
				toolNames[tc.ID] = tc.Function.Name
				msg.ToolCalls = append(msg.ToolCalls, inference.ToolCall{Index: j, ID: tc.ID, Name: tc.Function.Name, Arguments: args})
			}
		}
		out = append(out, msg)
	}
	return out, nil
}

var functionName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// tools checks an OpenAI tools array and returns it compacted.
func tools(raw json.RawMessage) (json.RawMessage, []string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil, nil
	}
	var ts []struct {
		Type     string `json:"type"`
		Function *struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &ts); err != nil {
		return nil, nil, bad("tools", "tools must be an array of {\"type\": \"function\", \"function\": {...}}")
	}
	if len(ts) > MaxTools {
		return nil, nil, bad("tools", "at most %d tools", MaxTools)
	}
	var names []string
	for i, t := range ts {
		if t.Type != "function" || t.Function == nil {
			return nil, nil, bad(fmt.Sprintf("tools[%d]", i), "tools[%d]: only tools of type \"function\" are supported", i)
		}
		if !functionName.MatchString(t.Function.Name) {
			return nil, nil, bad(fmt.Sprintf("tools[%d].function.name", i), "a function name is 1 to 64 letters, digits, _ or -")
		}
		if len(t.Function.Parameters) > 0 && string(t.Function.Parameters) != "null" && !bytes.HasPrefix(bytes.TrimSpace(t.Function.Parameters), []byte("{")) {
			return nil, nil, bad(fmt.Sprintf("tools[%d].function.parameters", i), "parameters must be a JSON schema object")
		}
		names = append(names, t.Function.Name)
	}
	if len(ts) == 0 {
		return nil, nil, nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, nil, bad("tools", "tools: %v", err)
	}
	return b.Bytes(), names, nil
}

// toolChoice reads tool_choice: "none", "auto", "required" or
// {"type": "function", "function": {"name": ...}} (the name is returned).
func toolChoice(raw json.RawMessage, names []string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "none", "auto", "required":
			return s, nil
		}
		return "", bad("tool_choice", "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}")
	}
	var c struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
		Name string `json:"name"` // the Responses API's shape
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", bad("tool_choice", "tool_choice must be a string or an object naming a function")
	}
	name := c.Function.Name
	if name == "" {
		name = c.Name
	}
	for _, n := range names {
		if n == name {
			return name, nil
		}
	}
	return "", bad("tool_choice", "tool_choice names the function %q, which is not among the tools", name)
}

// responseFormat reads response_format into inference's Format: "json"
// for json_object, the schema for json_schema, nothing for text.
func responseFormat(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var rf struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Name   string          `json:"name"`
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"`
		Schema json.RawMessage `json:"schema"` // the Responses API's text.format carries it here
	}
	if err := json.Unmarshal(raw, &rf); err != nil {
		return nil, bad("response_format", "response_format must be {\"type\": \"text\" | \"json_object\" | \"json_schema\", ...}")
	}
	switch rf.Type {
	case "text":
		return nil, nil
	case "json_object":
		return json.RawMessage(`"json"`), nil
	case "json_schema":
		schema := rf.Schema
		if rf.JSONSchema != nil {
			schema = rf.JSONSchema.Schema
		}
		if len(schema) == 0 || !bytes.HasPrefix(bytes.TrimSpace(schema), []byte("{")) {
			return nil, bad("response_format.json_schema.schema", "json_schema needs a schema object")
		}
		if len(schema) > MaxSchemaBytes {
			return nil, bad("response_format.json_schema.schema", "a schema may be at most %d bytes", MaxSchemaBytes)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, schema); err != nil {
			return nil, bad("response_format.json_schema.schema", "schema: %v", err)
		}
		return b.Bytes(), nil
	}
	return nil, bad("response_format.type", "response_format.type must be text, json_object or json_schema")
}

// openAIToolCalls is tool calls in OpenAI's shape.
func openAIToolCalls(tcs []inference.ToolCall, withIndex bool) []toolCallJSON {
	out := make([]toolCallJSON, len(tcs))
	for i, tc := range tcs {
		out[i].ID, out[i].Type = tc.ID, "function"
		if out[i].ID == "" {
			out[i].ID = fmt.Sprintf("call_%d", tc.Index)
		}
		out[i].Function.Name, out[i].Function.Arguments = tc.Name, tc.Arguments
		if withIndex {
			idx := tc.Index
			out[i].Index = &idx
		}
	}
	return out
}
