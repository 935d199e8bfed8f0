package llama

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
)

// JSON output by constrained decoding.
//
// A JSONGrammar is a pushdown automaton over bytes that accepts exactly the
// prefixes of JSON texts (valid against a schema, when it has one). At each
// step of a generation the engine samples a token as usual and keeps it when
// its bytes keep the output such a prefix; otherwise it masks every token
// whose bytes do not (their logits become -Inf) and samples again. The
// result is exactly a sample from the masked distribution (the first draw is
// rejection sampling's first round), and the full mask, which costs a pass
// over the vocabulary, is paid only when the model's own choice would break
// the JSON. When what is left of max_tokens is no more than the bytes needed
// to close the text (the shortest completion: closing quotes and brackets,
// required properties with their shortest values), the engine writes that
// completion itself, so an answer cut by max_tokens still parses.
//
// Schemas: type (one or a list of object, array, string, number, integer,
// boolean, null), properties (then only those keys, each at most once),
// required, items, enum (of any JSON values) and const. Other keywords that
// would constrain the text (anyOf, oneOf, allOf, not, $ref, pattern, ...)
// are refused with ErrUnsupportedSchema; descriptive ones (title,
// description, default, additionalProperties, $schema, ...) are ignored.

// ErrUnsupportedSchema: the JSON schema uses a keyword the engine cannot
// enforce.
var ErrUnsupportedSchema = errors.New("unsupported JSON schema")

// Limits of the constrained output.
const (
	maxJSONDepth      = 32 // nested objects and arrays
	maxJSONWhitespace = 16 // whitespace bytes in a row
	maxJSONNumber     = 16 // bytes of one number: integers stay within 2^53, as JSON readers need
	maxJSONExponent   = 2  // digits of an exponent: within float64's range
	maxJSONEnum       = 64 // values of one enum
	maxJSONProps      = 64 // properties of one object schema
)

// Types of a schema node, as bits.
const (
	tObject uint8 = 1 << iota
	tArray
	tString
	tNumber
	tInteger
	tBoolean
	tNull
	tAny = tObject | tArray | tString | tNumber | tInteger | tBoolean | tNull
)

type schemaNode struct {
	types    uint8
	props    []schemaProp // when set, the only keys allowed
	required uint64       // bits over props
	items    *schemaNode  // nil: any
	enum     []string     // compact JSON texts of the allowed values
}

type schemaProp struct {
	name string
	node *schemaNode
}

var anyNode = &schemaNode{types: tAny}

// JSONGrammar constrains a generation to one JSON text.
type JSONGrammar struct {
	root *schemaNode
}

// CompileJSON compiles a format as Ollama takes it: the JSON string "json"
// (any JSON object) or a JSON schema.
func CompileJSON(format json.RawMessage) (*JSONGrammar, error) {
	format = bytes.TrimSpace(format)
	var s string
	if json.Unmarshal(format, &s) == nil {
		if s != "json" {
			return nil, fmt.Errorf("%w: format %q (want \"json\" or a schema)", ErrUnsupportedSchema, s)
		}
		return &JSONGrammar{root: &schemaNode{types: tObject}}, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(format, &raw); err != nil {
		return nil, fmt.Errorf("%w: format is neither \"json\" nor a schema object: %v", ErrUnsupportedSchema, err)
	}
	root, err := compileSchema(raw, 0)
	if err != nil {
		return nil, err
	}
	return &JSONGrammar{root: root}, nil
}

func compileSchema(raw map[string]json.RawMessage, depth int) (*schemaNode, error) {
	if depth > maxJSONDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", ErrUnsupportedSchema, maxJSONDepth)
	}
	for _, k := range []string{"anyOf", "oneOf", "allOf", "not", "$ref", "pattern", "patternProperties", "if", "minLength", "maxLength",
		"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems", "maxItems", "uniqueItems", "format",
		"minProperties", "maxProperties", "prefixItems", "contains", "dependentRequired", "dependentSchemas"} {
		if _, ok := raw[k]; ok {
			return nil, fmt.Errorf("%w: keyword %q", ErrUnsupportedSchema, k)
		}
	}
	n := &schemaNode{}
	if t, ok := raw["type"]; ok {
		var names []string
		var one string
		if json.Unmarshal(t, &one) == nil {
			names = []string{one}
		} else if err := json.Unmarshal(t, &names); err != nil {
			return nil, fmt.Errorf("%w: type must be a string or a list of strings", ErrUnsupportedSchema)
		}
		for _, name := range names {
			bit, ok := map[string]uint8{"object": tObject, "array": tArray, "string": tString, "number": tNumber | tInteger,
				"integer": tInteger, "boolean": tBoolean, "null": tNull}[name]
			if !ok {
				return nil, fmt.Errorf("%w: type %q", ErrUnsupportedSchema, name)
			}
			n.types |= bit
		}
	}
	if p, ok := raw["properties"]; ok {
		var props map[string]json.RawMessage
		if err := json.Unmarshal(p, &props); err != nil {
			return nil, fmt.Errorf("%w: properties must be an object", ErrUnsupportedSchema)
		}
		if len(props) > maxJSONProps {
			return nil, fmt.Errorf("%w: more than %d properties", ErrUnsupportedSchema, maxJSONProps)
		}
		// In the schema's order, so that the shortest completion follows it.
		names := keysInOrder(p)
		for _, name := range names {
			var sub map[string]json.RawMessage
			if err := json.Unmarshal(props[name], &sub); err != nil {
				return nil, fmt.Errorf("%w: property %q: not a schema object", ErrUnsupportedSchema, name)
			}
			node, err := compileSchema(sub, depth+1)
			if err != nil {
				return nil, fmt.Errorf("property %q: %w", name, err)
			}
			n.props = append(n.props, schemaProp{name: name, node: node})
		}
		if n.types == 0 {
			n.types = tObject
		}
		if n.props == nil {
			n.props = []schemaProp{} // no key at all
		}
	}
	if r, ok := raw["required"]; ok {
		var req []string
		if err := json.Unmarshal(r, &req); err != nil {
			return nil, fmt.Errorf("%w: required must be a list of names", ErrUnsupportedSchema)
		}
		for _, name := range req {
			i := slices.IndexFunc(n.props, func(p schemaProp) bool { return p.name == name })
			if i < 0 {
				return nil, fmt.Errorf("%w: required property %q is not among the properties", ErrUnsupportedSchema, name)
			}
			n.required |= 1 << i
		}
	}
	if it, ok := raw["items"]; ok {
		var sub map[string]json.RawMessage
		if err := json.Unmarshal(it, &sub); err != nil {
			return nil, fmt.Errorf("%w: items must be a schema object", ErrUnsupportedSchema)
		}
		node, err := compileSchema(sub, depth+1)
		if err != nil {
			return nil, fmt.Errorf("items: %w", err)
		}
		n.items = node
		if n.types == 0 {
			n.types = tArray
		}
	}
	var values []json.RawMessage
	if e, ok := raw["enum"]; ok {
		if err := json.Unmarshal(e, &values); err != nil || len(values) == 0 || len(values) > maxJSONEnum {
			return nil, fmt.Errorf("%w: enum must list 1 to %d values", ErrUnsupportedSchema, maxJSONEnum)
		}
	}
	if c, ok := raw["const"]; ok {
		values = []json.RawMessage{c}
	}
	for _, v := range values {
		var b bytes.Buffer
		if err := json.Compact(&b, v); err != nil {
			return nil, fmt.Errorf("%w: enum value: %v", ErrUnsupportedSchema, err)
		}
		n.enum = append(n.enum, b.String())
	}
	if n.types == 0 {
		n.types = tAny
	}
	return n, nil
}

// keysInOrder lists the keys of a JSON object in the order they appear.
func keysInOrder(obj json.RawMessage) []string {
	dec := json.NewDecoder(bytes.NewReader(obj))
	var keys []string
	if _, err := dec.Token(); err != nil { // {
		return nil
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return keys
		}
		keys = append(keys, t.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return keys
		}
	}
	return keys
}

// Container states.
const (
	objOpen      uint8 = iota // after '{'
	objKey                    // inside a key
	objColon                  // after a key
	objValue                  // inside a value
	objAfter                  // after a value
	objNeedKey                // after ','
	arrOpen                   // after '['
	arrValue                  // inside an item
	arrAfter                  // after an item
	arrNeedValue              // after ','
)

// Scalars in progress.
const (
	scNone uint8 = iota
	scString
	scNumber
	scLiteral
	scEnum
)

// Number states; the ones marked complete may end the number.
const (
	nSign     uint8 = iota // after '-'
	nZero                  // complete
	nInt                   // complete
	nDot                   // after '.'
	nFrac                  // complete
	nExp                   // after 'e'
	nExpSign               // after 'e-'
	nExpDigit              // complete
)

type jsonFrame struct {
	node  *schemaNode
	st    uint8
	seen  uint64      // object: properties written
	cands uint64      // object: properties a key being written may still be
	value *schemaNode // object: the schema of the value after the key
	n     int32       // members or items written
}

// jsonState is where a generation is in its JSON text. Its only slice is
// the stack, so that a copy into a scratch state is cheap.
type jsonState struct {
	stack []jsonFrame
	want  *schemaNode // a value is expected with this schema (nil: none)
	done  bool        // the text is complete

	sc     uint8 // the scalar in progress
	key    bool  // the string is a key
	esc    uint8 // string: 1 after '\', 2..5 hex digits to come + 1
	u8     uint8 // string: UTF-8 continuation bytes to come
	u8lo   byte  // ... and the range of the next one
	u8hi   byte
	num    uint8 // number state
	numInt bool  // integer only
	expN   uint8 // digits of the exponent so far
	pos    int32 // bytes of the literal, enum value, key or number so far
	lit    string
	cands  uint64      // enum: values still possible
	node   *schemaNode // enum: whose values
	ws     uint8       // whitespace bytes in a row
}

func (g *JSONGrammar) start() *jsonState {
	return &jsonState{want: g.root, stack: make([]jsonFrame, 0, 8)}
}

func (s *jsonState) copyTo(d *jsonState) {
	st := append(d.stack[:0], s.stack...)
	*d = *s
	d.stack = st
}

func isWS(b byte) bool { return b == ' ' || b == '\n' || b == '\t' || b == '\r' }

func (s *jsonState) space(b byte) bool {
	if !isWS(b) || s.ws >= maxJSONWhitespace {
		return false
	}
	s.ws++
	return true
}

// feed advances by one byte; false means b cannot follow.
func (s *jsonState) feed(b byte) bool {
	for {
		again, ok := s.step(b)
		if !again {
			return ok
		}
	}
}

// step consumes b, or returns again when a complete scalar ended before b
// and b must be read by what encloses it.
func (s *jsonState) step(b byte) (again, ok bool) {
	if s.done {
		return false, false
	}
	if !isWS(b) {
		s.ws = 0
	}
	switch s.sc {
	case scString:
		return false, s.stringByte(b)
	case scNumber:
		if s.numberByte(b) {
			return false, true
		}
		if s.num == nZero || s.num == nInt || s.num == nFrac || s.num == nExpDigit {
			s.sc = scNone
			s.valueDone()
			return true, true
		}
		return false, false
	case scLiteral:
		if int(s.pos) < len(s.lit) && s.lit[s.pos] == b {
			s.pos++
			if int(s.pos) == len(s.lit) {
				s.sc = scNone
				s.valueDone()
			}
			return false, true
		}
		return false, false
	case scEnum:
		var next uint64
		complete := false
		for i, v := range s.node.enum {
			if s.cands&(1<<i) == 0 {
				continue
			}
			if int(s.pos) < len(v) && v[s.pos] == b {
				next |= 1 << i
			}
			if int(s.pos) == len(v) {
				complete = true
			}
		}
		if next != 0 {
			s.cands = next
			s.pos++
			return false, true
		}
		if complete {
			s.sc = scNone
			s.valueDone()
			return true, true
		}
		return false, false
	}
	if s.want != nil {
		return false, s.valueStart(b)
	}
	if len(s.stack) == 0 {
		return false, false
	}
	f := &s.stack[len(s.stack)-1]
	switch f.st {
	case objOpen, objNeedKey:
		switch {
		case s.space(b):
			return false, true
		case b == '"':
			f.st = objKey
			s.sc, s.key, s.esc, s.u8, s.pos = scString, true, 0, 0, 0
			f.cands = 0
			if f.node.props != nil {
				for i := range f.node.props {
					if f.seen&(1<<i) == 0 {
						f.cands |= 1 << i
					}
				}
				if f.cands == 0 {
					return false, false
				}
			}
			return false, true
		case b == '}' && f.st == objOpen && f.node.required == 0:
			s.pop()
			return false, true
		}
	case objColon:
		switch {
		case s.space(b):
			return false, true
		case b == ':':
			f.st = objValue
			s.want = f.value
			return false, true
		}
	case objAfter:
		switch {
		case s.space(b):
			return false, true
		case b == ',':
			if f.node.props != nil && len(f.node.props) == bitsCount(f.seen) {
				return false, false // no key left to write
			}
			f.st = objNeedKey
			return false, true
		case b == '}' && f.seen&f.node.required == f.node.required:
			s.pop()
			return false, true
		}
	case arrOpen:
		switch {
		case s.space(b):
			return false, true
		case b == ']':
			s.pop()
			return false, true
		}
		f.st = arrValue
		s.want = itemsOf(f.node)
		return true, true
	case arrAfter:
		switch {
		case s.space(b):
			return false, true
		case b == ',':
			f.st = arrNeedValue
			s.want = itemsOf(f.node)
			return false, true
		case b == ']':
			s.pop()
			return false, true
		}
	}
	return false, false
}

func itemsOf(n *schemaNode) *schemaNode {
	if n.items == nil {
		return anyNode
	}
	return n.items
}

func bitsCount(x uint64) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

// valueStart reads the first byte of a value with schema s.want.
func (s *jsonState) valueStart(b byte) bool {
	n := s.want
	if s.space(b) {
		return true
	}
	if n.enum != nil {
		s.want = nil
		s.sc, s.node, s.pos = scEnum, n, 0
		s.cands = 1<<len(n.enum) - 1
		if len(n.enum) == 64 {
			s.cands = math.MaxUint64
		}
		if _, ok := s.step(b); !ok {
			return false
		}
		return true
	}
	switch {
	case b == '{' && n.types&tObject != 0:
		if len(s.stack) >= maxJSONDepth {
			return false
		}
		s.want = nil
		s.stack = append(s.stack, jsonFrame{node: n, st: objOpen})
	case b == '[' && n.types&tArray != 0:
		if len(s.stack) >= maxJSONDepth {
			return false
		}
		s.want = nil
		s.stack = append(s.stack, jsonFrame{node: n, st: arrOpen})
	case b == '"' && n.types&tString != 0:
		s.want = nil
		s.sc, s.key, s.esc, s.u8 = scString, false, 0, 0
	case (b == '-' || b >= '0' && b <= '9') && n.types&(tNumber|tInteger) != 0:
		s.want = nil
		s.sc, s.numInt, s.pos = scNumber, n.types&tNumber == 0, 1
		switch b {
		case '-':
			s.num = nSign
		case '0':
			s.num = nZero
		default:
			s.num = nInt
		}
	case b == 't' && n.types&tBoolean != 0:
		s.want = nil
		s.sc, s.lit, s.pos = scLiteral, "true", 1
	case b == 'f' && n.types&tBoolean != 0:
		s.want = nil
		s.sc, s.lit, s.pos = scLiteral, "false", 1
	case b == 'n' && n.types&tNull != 0:
		s.want = nil
		s.sc, s.lit, s.pos = scLiteral, "null", 1
	default:
		return false
	}
	return true
}

func (s *jsonState) numberByte(b byte) bool {
	if s.pos >= maxJSONNumber {
		return false
	}
	digit := b >= '0' && b <= '9'
	switch s.num {
	case nSign:
		switch {
		case b == '0':
			s.num = nZero
		case digit:
			s.num = nInt
		default:
			return false
		}
	case nZero, nInt:
		switch {
		case digit && s.num == nInt:
			s.num = nInt
		case b == '.' && !s.numInt:
			s.num = nDot
		case (b == 'e' || b == 'E') && !s.numInt:
			s.num = nExp
		default:
			return false
		}
	case nDot, nFrac:
		switch {
		case digit:
			s.num = nFrac
		case (b == 'e' || b == 'E') && s.num == nFrac:
			s.num = nExp
		default:
			return false
		}
	case nExp:
		switch {
		case b == '+' || b == '-':
			s.num = nExpSign
		case digit:
			s.num = nExpDigit
		default:
			return false
		}
	case nExpSign, nExpDigit:
		if !digit || s.num == nExpDigit && s.expN >= maxJSONExponent {
			return false
		}
		s.num = nExpDigit
	}
	if s.num == nExpDigit {
		s.expN++
	} else {
		s.expN = 0
	}
	s.pos++
	return true
}

func (s *jsonState) stringByte(b byte) bool {
	f := (*jsonFrame)(nil)
	closed := false // a key of an object with properties: no escapes, names only
	if s.key {
		f = &s.stack[len(s.stack)-1]
		closed = f.node.props != nil
	}
	switch {
	case s.u8 > 0:
		if b < s.u8lo || b > s.u8hi {
			return false
		}
		s.u8--
		s.u8lo, s.u8hi = 0x80, 0xBF
	case s.esc == 1:
		switch b {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			s.esc = 0
		case 'u':
			s.esc = 5
		default:
			return false
		}
		return true
	case s.esc > 1:
		if !(b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F') {
			return false
		}
		s.esc--
		if s.esc == 1 {
			s.esc = 0
		}
		return true
	case b == '"':
		s.sc = scNone
		if s.key {
			return s.keyDone(f)
		}
		s.valueDone()
		return true
	case b == '\\':
		if closed {
			return false
		}
		s.esc = 1
		return true
	case b < 0x20:
		return false
	case b >= 0x80:
		switch {
		case b >= 0xC2 && b <= 0xDF:
			s.u8, s.u8lo, s.u8hi = 1, 0x80, 0xBF
		case b == 0xE0:
			s.u8, s.u8lo, s.u8hi = 2, 0xA0, 0xBF
		case b == 0xED:
			s.u8, s.u8lo, s.u8hi = 2, 0x80, 0x9F
		case b >= 0xE1 && b <= 0xEF:
			s.u8, s.u8lo, s.u8hi = 2, 0x80, 0xBF
		case b == 0xF0:
			s.u8, s.u8lo, s.u8hi = 3, 0x90, 0xBF
		case b == 0xF4:
			s.u8, s.u8lo, s.u8hi = 3, 0x80, 0x8F
		case b >= 0xF1 && b <= 0xF3:
			s.u8, s.u8lo, s.u8hi = 3, 0x80, 0xBF
		default:
			return false
		}
	}
	if closed {
		var next uint64
		for i, p := range f.node.props {
			if f.cands&(1<<i) != 0 && int(s.pos) < len(p.name) && p.name[s.pos] == b {
				next |= 1 << i
			}
		}
		if next == 0 {
			return false
		}
		f.cands = next
	}
	s.pos++
	return true
}

// keyDone ends a key of the object f.
func (s *jsonState) keyDone(f *jsonFrame) bool {
	f.st = objColon
	if f.node.props == nil {
		f.value = anyNode
		return true
	}
	for i, p := range f.node.props {
		if f.cands&(1<<i) != 0 && len(p.name) == int(s.pos) {
			f.seen |= 1 << i
			f.value = p.node
			return true
		}
	}
	return false
}

// valueDone ends a value: the enclosing container moves past it.
func (s *jsonState) valueDone() {
	if len(s.stack) == 0 {
		s.done = true
		return
	}
	f := &s.stack[len(s.stack)-1]
	f.n++
	if f.st == objValue {
		f.st = objAfter
	} else {
		f.st = arrAfter
	}
}

func (s *jsonState) pop() {
	s.stack = s.stack[:len(s.stack)-1]
	s.valueDone()
}

// canEnd reports whether the text may end here.
func (s *jsonState) canEnd() bool {
	if s.done {
		return true
	}
	if len(s.stack) > 0 || s.want != nil {
		return false
	}
	switch s.sc {
	case scNumber:
		return s.num == nZero || s.num == nInt || s.num == nFrac || s.num == nExpDigit
	case scEnum:
		for i, v := range s.node.enum {
			if s.cands&(1<<i) != 0 && len(v) == int(s.pos) {
				return true
			}
		}
	}
	return false
}

// closing returns the shortest bytes that complete the text (nil when it is
// complete).
func (s *jsonState) closing() []byte {
	if s.canEnd() {
		return nil
	}
	var out []byte
	var c jsonState
	s.copyTo(&c)
	stack := c.stack
	top := func() *jsonFrame { return &stack[len(stack)-1] }
	afterValue := false // a value just ended inside top()
	switch c.sc {
	case scString:
		if c.esc == 1 {
			out = append(out, 'n')
		}
		for ; c.esc > 1; c.esc-- {
			out = append(out, '0')
		}
		for ; c.u8 > 0; c.u8-- {
			out = append(out, c.u8lo)
			c.u8lo = 0x80
		}
		if c.key {
			f := top()
			if f.node.props != nil {
				// The key whose completion is shortest: a required one
				// costs nothing extra (it is written anyway), another
				// its name and shortest value.
				best, bestCost := -1, 0
				for i, p := range f.node.props {
					if f.cands&(1<<i) == 0 {
						continue
					}
					cost := len(p.name) + len(minValue(nil, p.node)) + 4 // "":,
					if f.node.required&(1<<i) != 0 {
						cost = len(p.name) - 1<<20
					}
					if best < 0 || cost < bestCost {
						best, bestCost = i, cost
					}
				}
				if best < 0 { // cannot happen: a key byte needs a candidate
					return append(out, '"', ':', '0', '}')
				}
				out = append(out, f.node.props[best].name[c.pos:]...)
				f.seen |= 1 << best
				f.value = f.node.props[best].node
			} else {
				f.value = anyNode
			}
			out = append(out, '"', ':')
			out = minValue(out, f.value)
		} else {
			out = append(out, '"')
		}
		afterValue = true
	case scNumber:
		switch c.num {
		case nSign, nDot, nExp, nExpSign:
			out = append(out, '0')
		}
		afterValue = true
	case scLiteral:
		out = append(out, c.lit[c.pos:]...)
		afterValue = true
	case scEnum:
		best := ""
		found := false
		for i, v := range c.node.enum {
			if c.cands&(1<<i) != 0 && (!found || len(v) < len(best)) {
				best, found = v, true
			}
		}
		out = append(out, best[c.pos:]...)
		afterValue = true
	default:
		if c.want != nil {
			out = minValue(out, c.want)
			afterValue = true
		}
	}
	for len(stack) > 0 {
		f := top()
		if afterValue {
			switch f.st {
			case objKey, objValue:
				f.st = objAfter
			case arrValue, arrNeedValue:
				f.st = arrAfter
			}
			afterValue = false
		}
		switch f.st {
		case objColon:
			out = append(out, ':')
			out = minValue(out, f.value)
			f.st = objAfter
			continue
		case objNeedKey:
			out, f.seen = writeMember(out, f)
			f.st = objAfter
			continue
		case objOpen, objAfter:
			first := f.st == objOpen
			for i, p := range f.node.props {
				if f.node.required&(1<<i) != 0 && f.seen&(1<<i) == 0 {
					if !first {
						out = append(out, ',')
					}
					first = false
					out = append(out, '"')
					out = append(out, p.name...)
					out = append(out, '"', ':')
					out = minValue(out, p.node)
					f.seen |= 1 << i
				}
			}
			out = append(out, '}')
		case arrOpen, arrAfter:
			out = append(out, ']')
		}
		stack = stack[:len(stack)-1]
		afterValue = true
	}
	return out
}

// writeMember writes the shortest member the object f still needs (after a
// ','): its first missing required property, else its first property not
// written, else an empty key.
func writeMember(out []byte, f *jsonFrame) ([]byte, uint64) {
	seen := f.seen
	if f.node.props == nil {
		return append(out, '"', '"', ':', '0'), seen
	}
	pick := -1
	for i := range f.node.props {
		if seen&(1<<i) == 0 && (pick < 0 || f.node.required&(1<<i) != 0 && f.node.required&(1<<pick) == 0) {
			pick = i
		}
	}
	if pick < 0 {
		return out, seen
	}
	p := f.node.props[pick]
	out = append(out, '"')
	out = append(out, p.name...)
	out = append(out, '"', ':')
	return minValue(out, p.node), seen | 1<<pick
}

// minValue appends the shortest value n allows.
func minValue(out []byte, n *schemaNode) []byte {
	if n.enum != nil {
		best := n.enum[0]
		for _, v := range n.enum[1:] {
			if len(v) < len(best) {
				best = v
			}
		}
		return append(out, best...)
	}
	switch {
	case n.types&(tNumber|tInteger) != 0:
		return append(out, '0')
	case n.types&tString != 0:
		return append(out, '"', '"')
	case n.types&tArray != 0:
		return append(out, '[', ']')
	case n.types&tObject != 0:
		out = append(out, '{')
		first := true
		for i, p := range n.props {
			if n.required&(1<<i) != 0 {
				if !first {
					out = append(out, ',')
				}
				first = false
				out = append(out, '"')
				out = append(out, p.name...)
				out = append(out, '"', ':')
				out = minValue(out, p.node)
			}
		}
		return append(out, '}')
	case n.types&tBoolean != 0:
		return append(out, "true"...)
	}
	return append(out, "null"...)
}

// jsonVocab is what the grammar keeps of a vocabulary: each token's bytes
// and the token that spells each single byte.
type jsonVocab struct {
	pieces [][]byte
	order  []int    // token IDs by piece, so that shared prefixes are walked once
	lcp    []int    // bytes the piece of order[k] shares with that of order[k-1]
	sorted [][]byte // pieces[order[k]], and whether it is plain, in that order
	splain []bool
	plain  []bool   // the piece is printable ASCII without '"' or '\\': inside a string it changes nothing
	byByte [256]int // -1: none
}

var jsonVocabs sync.Map // *Vocab -> *jsonVocab

func vocabBytes(v *Vocab) *jsonVocab {
	if jv, ok := jsonVocabs.Load(v); ok {
		return jv.(*jsonVocab)
	}
	jv := &jsonVocab{pieces: make([][]byte, v.Len()), plain: make([]bool, v.Len())}
	for i := range jv.byByte {
		jv.byByte[i] = v.bytes[i]
	}
	for id := range jv.pieces {
		p := v.Piece(id)
		jv.pieces[id] = []byte(p)
		jv.plain[id] = len(p) > 0
		for i := 0; i < len(p); i++ {
			if p[i] < 0x20 || p[i] > 0x7E || p[i] == '"' || p[i] == '\\' {
				jv.plain[id] = false
				break
			}
		}
		if len(p) == 1 && jv.byByte[p[0]] < 0 {
			jv.byByte[p[0]] = id
		}
	}
	jv.order = make([]int, 0, len(jv.pieces))
	for id, p := range jv.pieces {
		if len(p) > 0 {
			jv.order = append(jv.order, id)
		}
	}
	slices.SortFunc(jv.order, func(a, b int) int { return bytes.Compare(jv.pieces[a], jv.pieces[b]) })
	jv.lcp = make([]int, len(jv.order))
	for _, id := range jv.order {
		jv.sorted = append(jv.sorted, jv.pieces[id])
		jv.splain = append(jv.splain, jv.plain[id])
	}
	for k := 1; k < len(jv.order); k++ {
		a, b := jv.pieces[jv.order[k-1]], jv.pieces[jv.order[k]]
		n := 0
		for n < len(a) && n < len(b) && a[n] == b[n] {
			n++
		}
		jv.lcp[k] = n
	}
	got, _ := jsonVocabs.LoadOrStore(v, jv)
	return got.(*jsonVocab)
}

// JSONConstraint applies a JSONGrammar to one generation.
type JSONConstraint struct {
	s       *jsonState
	scratch jsonState
	vocab   *jsonVocab
	eos     int
	// Near the end of the budget (tight), a token is allowed only if the
	// text can still be completed in the tokens left after it (left-1,
	// at one byte token a byte).
	tight bool
	left  int
	// levels are the automaton's states along a piece (see mask).
	levels []jsonState
	ok     []bool
	// Masks counts the steps that needed the full mask, Steps all steps.
	Masks, Steps int
}

// Start returns the constraint for one generation with vocabulary v.
func (g *JSONGrammar) Start(v *Vocab) *JSONConstraint {
	return &JSONConstraint{s: g.start(), vocab: vocabBytes(v), eos: v.EOS, scratch: jsonState{stack: make([]jsonFrame, 0, 8)}}
}

// allowed reports whether token id may come next.
func (c *JSONConstraint) allowed(id int) bool {
	if id == c.eos {
		return c.s.canEnd()
	}
	p := c.vocab.pieces[id]
	if len(p) == 0 {
		return false
	}
	c.s.copyTo(&c.scratch)
	for _, b := range p {
		if !c.scratch.feed(b) {
			return false
		}
	}
	return !c.tight || len(c.scratch.closing()) <= c.left-1
}

// tightMargin is how close to the end of its budget a generation is tight:
// a token can lengthen the shortest completion by a property name and a
// value, which this bounds in practice.
const tightMargin = 48

// Next picks the next token from logits with smp, left tokens before the
// answer must end; it may set logits of tokens it rules out to -Inf. It
// returns the end-of-sequence token once the text is complete.
func (c *JSONConstraint) Next(smp *Sampler, logits []float32, left int) int {
	c.Steps++
	if c.s.done {
		return c.eos
	}
	closing := c.s.closing()
	if len(closing) > 0 && len(closing) >= left {
		if id := c.vocab.byByte[closing[0]]; id >= 0 {
			return id
		}
	}
	c.left, c.tight = left, left <= len(closing)+tightMargin
	if id := smp.Sample(logits); c.allowed(id) {
		return id
	}
	c.Masks++
	if c.mask(logits) == 0 {
		if closing := c.s.closing(); len(closing) > 0 {
			if id := c.vocab.byByte[closing[0]]; id >= 0 {
				return id
			}
		}
		return c.eos
	}
	return smp.Sample(logits)
}

// mask sets the logits of every token that cannot come next to -Inf and
// returns how many can. It walks the vocabulary in the order of its pieces,
// keeping the automaton's state after each byte of the current piece, so a
// prefix shared with the previous piece is not walked again and every piece
// beginning with a refused prefix is refused at once; inside a string (not
// a key), a plain piece is allowed without a walk.
func (c *JSONConstraint) mask(logits []float32) int {
	jv, s := c.vocab, c.s
	inString := s.sc == scString && !s.key && s.esc == 0 && s.u8 == 0 && !c.tight
	if len(c.ok) != len(logits) {
		c.ok = make([]bool, len(logits))
	}
	ok := c.ok
	clear(ok)
	if c.levels == nil {
		c.levels = make([]jsonState, 1)
	}
	s.copyTo(&c.levels[0])
	valid := 0 // c.levels[0..valid] hold the states after that many bytes of the previous piece
	dead := -1 // the previous piece was refused at this byte (-1: it was not)
	for k, id := range jv.order {
		p, l := jv.sorted[k], jv.lcp[k]
		if dead >= 0 && l > dead {
			continue // it begins with the refused prefix
		}
		if inString && jv.splain[k] {
			ok[id] = true
			valid, dead = min(valid, l), -1
			continue
		}
		depth := min(valid, l)
		dead = -1
		for i := depth; i < len(p); i++ {
			if len(c.levels) <= i+1 {
				c.levels = append(c.levels, jsonState{})
			}
			c.levels[i].copyTo(&c.levels[i+1])
			if !c.levels[i+1].feed(p[i]) {
				dead = i
				break
			}
			depth = i + 1
		}
		valid = depth
		if dead < 0 {
			ok[id] = !c.tight || len(c.levels[len(p)].closing()) <= c.left-1
		}
	}
	n := 0
	for id := range logits {
		if id == c.eos {
			ok[id] = s.canEnd()
		}
		if ok[id] {
			n++
		} else {
			logits[id] = float32(math.Inf(-1))
		}
	}
	return n
}

// Accept moves past token id, which Next returned.
func (c *JSONConstraint) Accept(id int) {
	for _, b := range c.vocab.pieces[id] {
		if !c.s.feed(b) {
			return // a forced byte the grammar refuses: cannot happen
		}
	}
}

// Done reports whether the text is complete.
func (c *JSONConstraint) Done() bool { return c.s.canEnd() }
