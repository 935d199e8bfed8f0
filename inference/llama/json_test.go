package llama

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

const personSchema = `{"type":"object","properties":{
	"name":{"type":"string"},
	"age":{"type":"integer"},
	"height":{"type":"number"},
	"member":{"type":"boolean"},
	"tags":{"type":"array","items":{"type":"string"}},
	"color":{"enum":["red","green","blue"]},
	"address":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}
},"required":["name","age","color","address"],"additionalProperties":false}`

func grammar(t testing.TB, format string) *JSONGrammar {
	t.Helper()
	g, err := CompileJSON(json.RawMessage(format))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// accepts feeds text to a fresh state: how many bytes it took, and whether
// the text may end there.
func accepts(g *JSONGrammar, text string) (int, bool) {
	s := g.start()
	for i := 0; i < len(text); i++ {
		if !s.feed(text[i]) {
			return i, false
		}
	}
	return len(text), s.canEnd()
}

func TestJSONGrammarAcceptsValidAndRefusesInvalid(t *testing.T) {
	anyObject := grammar(t, `"json"`)
	person := grammar(t, personSchema)
	for _, c := range []struct {
		g    *JSONGrammar
		text string
		ok   bool
	}{
		{anyObject, `{}`, true},
		{anyObject, `{"a": [1, -2.5e3, true, null, "x\u00e9\n"], "b": {"c": {}}}`, true},
		{anyObject, `{"é": "ü€😀"}`, true},
		{anyObject, `[1]`, false},             // json_object: an object
		{anyObject, `{"a":01}`, false},        // leading zero
		{anyObject, `{"a":1,}`, false},        // trailing comma
		{anyObject, `{"a":tru}`, false},       // bad literal
		{anyObject, `{"a":"` + "\x01", false}, // control character in a string
		{anyObject, `{} `, false},             // nothing after the text
		{anyObject, `{"a":1`, false},          // not complete
		{person, `{"name":"Ann","age":41,"color":"red","address":{"city":"Oslo"}}`, true},
		{person, `{"age":41,"name":"Ann","height":1.7,"member":false,"tags":["a","b"],"color":"blue","address":{"city":""}}`, true},
		{person, `{"name":"Ann","age":41.5`, false},                            // integer
		{person, `{"name":"Ann","nick":"A"`, false},                            // unknown key
		{person, `{"name":"Ann","name":"B"`, false},                            // key twice
		{person, `{"name":"Ann","age":41,"color":"pink"`, false},               // not in the enum
		{person, `{"name":"Ann","age":41,"color":"red"}`, false},               // address missing
		{person, `{"name":"Ann","age":41,"color":"red","address":{}}`, false},  // city missing
		{person, `{"name":1`, false},                                           // a number for a string
		{person, `{"name":"Ann","age":41,"color":"red","tags":[1]`, false},     // items are strings
		{person, `{"name":"Ann","age":41,"color":"red","member":"yes"`, false}, // boolean
		{grammar(t, `{"type":"integer"}`), `-120`, true},                       // a number can end the text
		{grammar(t, `{"enum":[1,12,"x"]}`), `1`, true},                         // a prefix of another value
		{grammar(t, `{"enum":[1,12,"x"]}`), `12`, true},                        // and the other
		{grammar(t, `{"type":["string","null"]}`), `null`, true},               // a list of types
		{grammar(t, `{"type":"array","items":{"type":"boolean"}}`), `[ true ,false]`, true},
	} {
		n, ok := accepts(c.g, c.text)
		if ok != c.ok {
			t.Errorf("%s: accepted %v (stopped after %d bytes), want %v", c.text, ok, n, c.ok)
		}
		if ok {
			var v any
			if err := json.Unmarshal([]byte(c.text), &v); err != nil {
				t.Errorf("%s: accepted, but it does not parse: %v", c.text, err)
			}
		}
	}
}

func TestJSONSchemaKeywordsItCannotEnforceAreRefused(t *testing.T) {
	for _, f := range []string{`{"anyOf":[{"type":"string"}]}`, `{"type":"string","pattern":"a+"}`, `{"$ref":"#/x"}`, `"yaml"`, `[1]`,
		`{"type":"object","properties":{"a":{"type":"date"}}}`, `{"required":["a"]}`} {
		if _, err := CompileJSON(json.RawMessage(f)); err == nil {
			t.Errorf("%s compiled", f)
		}
	}
}

// TestJSONClosingCompletesEveryPrefix: the shortest completion of every
// prefix of valid texts is accepted and makes a text that parses and that
// the grammar takes as complete.
func TestJSONClosingCompletesEveryPrefix(t *testing.T) {
	for _, c := range []struct{ format, text string }{
		{`"json"`, `{"a": [1, -2.5e+3, true, null, "x\u00e9\n", {"b": []}], "c": "é€"}`},
		{personSchema, `{"age":41,"name":"Ann","height":1.7e-2,"member":false,"tags":["a","b"],"color":"green","address":{"city":"Oslo"}}`},
		{`{"type":"array","items":{"type":"object","properties":{"x":{"type":"integer"},"y":{"enum":[true,"yes"]}},"required":["y"]}}`, `[{"x":1,"y":"yes"},{"y":true}]`},
	} {
		g := grammar(t, c.format)
		s := g.start()
		for i := 0; i <= len(c.text); i++ {
			tail := s.closing()
			var d jsonState
			s.copyTo(&d)
			for _, b := range tail {
				if !d.feed(b) {
					t.Fatalf("%s: the completion %q of %q is refused", c.format, tail, c.text[:i])
				}
			}
			full := c.text[:i] + string(tail)
			if !d.canEnd() {
				t.Fatalf("completion of %q: %q is not complete", c.text[:i], full)
			}
			var v any
			if err := json.Unmarshal([]byte(full), &v); err != nil {
				t.Fatalf("completion of %q: %q does not parse: %v", c.text[:i], full, err)
			}
			if i < len(c.text) && !s.feed(c.text[i]) {
				t.Fatalf("%q refused at byte %d", c.text, i)
			}
		}
	}
}

// validate checks v against the subset of JSON schema the grammar knows.
func validate(v any, schema map[string]any) error {
	if e, ok := schema["enum"].([]any); ok {
		for _, x := range e {
			if fmt.Sprint(x) == fmt.Sprint(v) {
				return nil
			}
		}
		return fmt.Errorf("%v not in %v", v, e)
	}
	switch schema["type"] {
	case "object":
		o, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%v is not an object", v)
		}
		props, _ := schema["properties"].(map[string]any)
		for k, x := range o {
			ps, ok := props[k].(map[string]any)
			if !ok {
				return fmt.Errorf("unknown key %q", k)
			}
			if err := validate(x, ps); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
		req, _ := schema["required"].([]any)
		for _, k := range req {
			if _, ok := o[k.(string)]; !ok {
				return fmt.Errorf("missing %q", k)
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%v is not an array", v)
		}
		for _, x := range a {
			if err := validate(x, schema["items"].(map[string]any)); err != nil {
				return err
			}
		}
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%v is not a string", v)
		}
	case "integer":
		if f, ok := v.(float64); !ok || f != float64(int64(f)) {
			return fmt.Errorf("%v is not an integer", v)
		}
	case "number":
		if _, ok := v.(float64); !ok {
			return fmt.Errorf("%v is not a number", v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%v is not a boolean", v)
		}
	}
	return nil
}

// TestEmbeddedEngineWritesValidJSON runs the tiny random-weight model with
// a format: whatever its (meaningless) logits prefer, the answer parses and,
// with a schema, validates, for greedy and sampled decoding and for answers
// cut short by max_tokens.
func TestEmbeddedEngineWritesValidJSON(t *testing.T) {
	m := load(t, randmodel.Tiny())
	b := NewModelBackend(m, BackendOptions{Name: "tiny"})
	var schema map[string]any
	if err := json.Unmarshal([]byte(personSchema), &schema); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{`"json"`, personSchema} {
		for _, temp := range []float64{0, 0.7, 1.5} {
			for _, maxTokens := range []int{12, 56, 60, 80, 200} {
				if format == personSchema && maxTokens < 56 {
					continue // its shortest valid text is 55 bytes
				}
				for seed := int64(1); seed <= 4; seed++ {
					req := inference.Request{Model: "tiny", Prompt: "Give me JSON: ", Raw: true, MaxTokens: maxTokens,
						Temperature: &temp, Seed: &seed, Format: json.RawMessage(format)}
					var sb strings.Builder
					f, err := b.Generate(context.Background(), req, func(c inference.Chunk) error { sb.WriteString(c.Text); return nil })
					if err != nil {
						t.Fatal(err)
					}
					name := fmt.Sprintf("format %.10s temperature %v max_tokens %d seed %d", format, temp, maxTokens, seed)
					var v any
					if err := json.Unmarshal([]byte(sb.String()), &v); err != nil {
						t.Fatalf("%s: %q (%s) does not parse: %v", name, sb.String(), f.FinishReason, err)
					}
					if _, ok := v.(map[string]any); !ok {
						t.Fatalf("%s: %q is not an object", name, sb.String())
					}
					if format == personSchema {
						if err := validate(v, schema); err != nil {
							t.Fatalf("%s: %q does not validate: %v", name, sb.String(), err)
						}
					}
					if f.CompletionTokens > maxTokens {
						t.Fatalf("%s: %d tokens", name, f.CompletionTokens)
					}
					if maxTokens == 200 && temp == 0 && seed == 1 {
						t.Logf("%s: %s", name, sb.String())
					}
				}
			}
		}
	}
}

// TestJSONWithMultiByteTokens: a vocabulary with pieces of several bytes,
// some of them JSON punctuation with text around it, still gives JSON that
// validates, also when max_tokens forces the end.
func TestJSONWithMultiByteTokens(t *testing.T) {
	c := randmodel.Tiny()
	c.Name = "tiny-words"
	c.Words = []string{"▁the", "▁name", "{\"", "\":", "\",\"", "\"}", "true", "false", "▁0", "12", "\":\"", "▁\"", "],", "[\"", "red", "▁city", "Oslo"}
	m := load(t, c)
	b := NewModelBackend(m, BackendOptions{Name: "tiny"})
	var schema map[string]any
	if err := json.Unmarshal([]byte(personSchema), &schema); err != nil {
		t.Fatal(err)
	}
	multi := 0
	for _, temp := range []float64{0, 1} {
		for _, maxTokens := range []int{56, 70, 150} {
			for seed := int64(1); seed <= 3; seed++ {
				req := inference.Request{Model: "tiny", Prompt: "the name: ", Raw: true, MaxTokens: maxTokens, Temperature: &temp, Seed: &seed,
					Format: json.RawMessage(personSchema)}
				var sb strings.Builder
				f, err := b.Generate(context.Background(), req, func(c inference.Chunk) error { sb.WriteString(c.Text); return nil })
				if err != nil {
					t.Fatal(err)
				}
				if f.CompletionTokens < len(sb.String()) {
					multi++
				}
				var v any
				if err := json.Unmarshal([]byte(sb.String()), &v); err != nil {
					t.Fatalf("temperature %v max_tokens %d seed %d: %q does not parse: %v", temp, maxTokens, seed, sb.String(), err)
				}
				if err := validate(v, schema); err != nil {
					t.Fatalf("temperature %v max_tokens %d seed %d: %q does not validate: %v", temp, maxTokens, seed, sb.String(), err)
				}
			}
		}
	}
	if multi == 0 {
		t.Fatal("no answer used a token of several bytes: the test tests nothing")
	}
}

// TestJSONLogprobsAreFinite: with a grammar, the alternatives reported
// are tokens it allows, so log-probabilities stay finite (JSON has no
// -Inf).
func TestJSONLogprobsAreFinite(t *testing.T) {
	m := load(t, randmodel.Tiny())
	b := NewModelBackend(m, BackendOptions{Name: "tiny"})
	zero := 0.0
	req := inference.Request{Model: "tiny", Prompt: "x", Raw: true, MaxTokens: 40, Temperature: &zero, Logprobs: true, TopLogprobs: 20,
		Format: json.RawMessage(`{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]}`)}
	_, err := b.Generate(context.Background(), req, func(c inference.Chunk) error {
		if _, err := json.Marshal(c); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestEmbeddedEngineRefusesWhatItCannotDo(t *testing.T) {
	m := load(t, randmodel.Tiny())
	b := NewModelBackend(m, BackendOptions{Name: "tiny"})
	for _, req := range []inference.Request{
		{Model: "tiny", Messages: []inference.Message{{Role: "user", Content: "hi"}}, Tools: json.RawMessage(`[{"type":"function","function":{"name":"f"}}]`)},
		{Model: "tiny", Messages: []inference.Message{{Role: "user", Content: "hi", Images: [][]byte{{1}}}}},
		{Model: "tiny", Input: []string{"embed me"}},
		{Model: "tiny", Prompt: "x", Format: json.RawMessage(`{"anyOf":[]}`)},
	} {
		_, err := b.Generate(context.Background(), req, func(inference.Chunk) error { return nil })
		var ue *inference.UnsupportedError
		if !errorsAs(err, &ue) || ue.Param == "" {
			t.Errorf("%+v: %v, want an UnsupportedError naming the parameter", req, err)
		}
	}
}

// benchVocab is a vocabulary of n tokens shaped like a real one: the 256
// byte tokens, JSON punctuation, and pieces of 2 to 8 bytes of words,
// digits, spaces and punctuation.
func benchVocab(n int) *Vocab {
	v := &Vocab{BOS: 1, EOS: 2, UNK: 0}
	v.tokens = []string{"<unk>", "<s>", "</s>"}
	v.types = []int32{tokUnknown, tokControl, tokControl}
	for i := range v.bytes {
		v.bytes[i] = len(v.tokens)
		v.tokens = append(v.tokens, fmt.Sprintf("<0x%02X>", i))
		v.types = append(v.types, tokByte)
	}
	r := rand.New(rand.NewPCG(1, 2))
	const letters = "etaoinshrdlcumwfgypbvkjxqz"
	parts := []string{"\"", "\":", "\",", "{\"", "}", "]", "[", ", ", ": ", "true", "false", "null", "0", "1", "12", "3.", "e", "\\n", "▁▁", "▁▁▁▁"}
	for len(v.tokens) < n {
		var sb strings.Builder
		if r.IntN(8) == 0 {
			sb.WriteString(parts[r.IntN(len(parts))])
		}
		if r.IntN(2) == 0 {
			sb.WriteString("▁")
		}
		for k := 1 + r.IntN(7); k > 0; k-- {
			sb.WriteByte(letters[min(r.IntN(len(letters)), r.IntN(len(letters)))])
		}
		v.tokens = append(v.tokens, sb.String())
		v.types = append(v.types, tokNormal)
	}
	return v
}

// TestJSONMaskAgreesWithTheAutomaton: the mask's shortcuts allow exactly
// the tokens the automaton does, at points inside keys, strings, numbers
// and between values.
func TestJSONMaskAgreesWithTheAutomaton(t *testing.T) {
	g := grammar(t, personSchema)
	v := benchVocab(4000)
	text := `{"name":"Ann \u00e9 x","age":41,"tags":["a", "b"],"color":"red","address":{"city":"Oslo"}}`
	for i := 0; i <= len(text); i++ {
		c := g.Start(v)
		for j := 0; j < i; j++ {
			c.s.feed(text[j])
		}
		logits := make([]float32, v.Len())
		c.mask(logits)
		for id := range logits {
			if masked := logits[id] < -1e30; masked == c.allowed(id) {
				t.Fatalf("after %q: token %q masked %v, allowed %v", text[:i], v.Piece(id), masked, c.allowed(id))
			}
		}
	}
}

// BenchmarkJSONMask is the cost of constrained decoding per token: "mask"
// is the full pass over the vocabulary (paid when the model's own choice
// would break the JSON), "check" the test of the one token sampled (paid
// at every step), at a point inside an object of the person schema, for a
// byte vocabulary (the built-in model's 259 tokens) and a 32,000-token one
// shaped like Llama's.
func BenchmarkJSONMask(b *testing.B) {
	g := grammar(b, personSchema)
	for _, n := range []int{259, 32000} {
		v := benchVocab(n)
		for _, at := range []string{`{"name":"An`, `{"name":"Ann","age":4`, `{"name":"Ann","age":41,"tags":[`} {
			c := g.Start(v)
			for i := 0; i < len(at); i++ {
				c.s.feed(at[i])
			}
			logits := make([]float32, v.Len())
			b.Run(fmt.Sprintf("vocab=%d/at=%s/mask", n, at), func(b *testing.B) {
				allowed := 0
				for b.Loop() {
					allowed = c.mask(logits)
				}
				b.ReportMetric(float64(allowed), "allowed")
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/token")
			})
			b.Run(fmt.Sprintf("vocab=%d/at=%s/check", n, at), func(b *testing.B) {
				id := 0
				for b.Loop() {
					c.allowed(3 + id%(v.Len()-3))
					id++
				}
			})
		}
	}
}

// BenchmarkJSONGeneration is what constrained decoding adds to a whole
// generation of the built-in model (greedy, 64 tokens at most): ns/op is
// per generated token, free and under the person schema.
func BenchmarkJSONGeneration(b *testing.B) {
	m := load(b, randmodel.Tiny())
	be := NewModelBackend(m, BackendOptions{Name: "tiny"})
	zero := 0.0
	for _, format := range []string{"", personSchema} {
		name := "free"
		if format != "" {
			name = "schema"
		}
		b.Run(name, func(b *testing.B) {
			tokens := 0
			for b.Loop() {
				seed := int64(tokens)
				req := inference.Request{Model: "tiny", Prompt: "JSON: ", Raw: true, MaxTokens: 64, Temperature: &zero, Seed: &seed}
				if format != "" {
					req.Format = json.RawMessage(format)
				}
				f, err := be.Generate(context.Background(), req, func(inference.Chunk) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				tokens += f.CompletionTokens
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(tokens), "µs/token")
		})
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
