package randmodel

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
)

// GGUF metadata value types.
const (
	ggufUint32  = 4
	ggufInt32   = 5
	ggufFloat32 = 6
	ggufBool    = 7
	ggufString  = 8
	ggufArray   = 9
)

// encoder writes little-endian GGUF, remembering the first error and the byte count.
type encoder struct {
	w   *bufio.Writer
	n   uint64
	err error
	buf [8]byte
}

func (e *encoder) raw(p []byte) {
	if e.err != nil {
		return
	}
	_, e.err = e.w.Write(p)
	e.n += uint64(len(p))
}

func (e *encoder) u16(v uint16)  { binary.LittleEndian.PutUint16(e.buf[:], v); e.raw(e.buf[:2]) }
func (e *encoder) u32(v uint32)  { binary.LittleEndian.PutUint32(e.buf[:], v); e.raw(e.buf[:4]) }
func (e *encoder) u64(v uint64)  { binary.LittleEndian.PutUint64(e.buf[:], v); e.raw(e.buf[:8]) }
func (e *encoder) f32(v float32) { e.u32(math.Float32bits(v)) }

func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	e.raw([]byte(s))
}

// value writes a metadata value: its type, then its encoding.
func (e *encoder) value(v any) {
	switch v := v.(type) {
	case uint32:
		e.u32(ggufUint32)
		e.u32(v)
	case bool:
		e.u32(ggufBool)
		if v {
			e.raw([]byte{1})
		} else {
			e.raw([]byte{0})
		}
	case float32:
		e.u32(ggufFloat32)
		e.f32(v)
	case string:
		e.u32(ggufString)
		e.str(v)
	case []string:
		e.u32(ggufArray)
		e.u32(ggufString)
		e.u64(uint64(len(v)))
		for _, s := range v {
			e.str(s)
		}
	case []int32:
		e.u32(ggufArray)
		e.u32(ggufInt32)
		e.u64(uint64(len(v)))
		for _, x := range v {
			e.u32(uint32(x))
		}
	case []float32:
		e.u32(ggufArray)
		e.u32(ggufFloat32)
		e.u64(uint64(len(v)))
		for _, x := range v {
			e.f32(x)
		}
	default:
		e.err = fmt.Errorf("unsupported metadata value %T", v)
	}
}

// pad writes zeros up to the next multiple of the alignment.
func (e *encoder) pad() {
	var zeros [alignment]byte
	e.raw(zeros[:align(e.n)-e.n])
}

// tensor writes t's data: norm weights around 1, everything else around 0 with
// standard deviation c.Scale, then the printable channel if c.Printable.
func (e *encoder) tensor(t Tensor, c Config) {
	r := newNormal(c.Seed, t.Name)
	role := printableRole(t.Name)
	for i := range t.Elements() {
		v := float32(r.next())
		if t.isNorm() {
			v = 1 + 0.1*v
		} else {
			v *= c.Scale
		}
		if c.Printable {
			v = printableChannel(role, t.Shape, i, v, c)
		}
		if t.Type == F16 {
			e.u16(float16bits(v))
		} else {
			e.f32(v)
		}
	}
}

// Roles of tensors in the printable channel.
const (
	roleNone   = iota
	roleEmbed  // token_embd: writes the channel
	roleWriter // attn_output, ffn_down, ffn_down_exps: must not write it
	roleOutput // output: reads it
)

func printableRole(name string) int {
	switch {
	case name == "token_embd.weight":
		return roleEmbed
	case name == "output.weight":
		return roleOutput
	case strings.HasSuffix(name, ".attn_output.weight"), strings.HasSuffix(name, ".ffn_down.weight"),
		strings.HasSuffix(name, ".ffn_down_exps.weight"), strings.HasSuffix(name, ".ffn_down_shexp.weight"):
		return roleWriter
	}
	return roleNone
}

// Printable channel constants: the value of hidden dimension 0 in every token
// embedding, and the weight with which the output head reads it for tokens the
// model must not emit. The final RMS norm divides the channel by the size of the
// hidden state, which random layers make large (tens to hundreds), so the weight
// is large too; it stays small enough that products and sums of it fit in F16.
const (
	channelValue    = 4
	channelSuppress = -3000
)

// printableChannel returns the weight v of element i of a tensor with the given
// role and shape, changed so that hidden dimension 0 becomes a bias channel: every
// token embedding holds channelValue there, no layer writes to it (the rows of
// the output projections that feed it are zero), so the final hidden state holds
// channelValue at every position. The output head reads the channel with weight
// channelSuppress for the tokens to suppress and 0 for the others, which puts
// their logits far below the rest whatever the input.
func printableChannel(role int, shape []uint64, i uint64, v float32, c Config) float32 {
	switch role {
	case roleEmbed:
		if i%shape[0] == 0 {
			return channelValue
		}
	case roleWriter:
		if (i/shape[0])%shape[1] == 0 { // output row 0
			return 0
		}
	case roleOutput:
		if i%shape[0] == 0 {
			if int(i/shape[0]) == c.favor && c.Favor != "" {
				return -channelSuppress
			}
			if suppressed(int(i/shape[0]), c) {
				return channelSuppress
			}
			return 0
		}
	}
	return v
}

// suppressed reports whether a Printable model must never emit the token id.
func suppressed(id int, c Config) bool {
	if c.suppress != nil {
		return id >= len(c.suppress) || c.suppress[id]
	}
	if id < 3 {
		return true // <unk>, <s>, </s>
	}
	if b := id - 3; b < 256 {
		return b < 0x20 || b > 0x7e
	}
	return false // a word
}

// normal draws standard normal numbers from splitmix64 with the Box-Muller
// transform. It is defined here, rather than taken from math/rand, so that a
// Config's bytes never change with the Go release.
type normal struct {
	state  uint64
	spare  float64
	spared bool
}

// newNormal returns the stream of the tensor name under seed.
func newNormal(seed int64, name string) *normal {
	h := fnv.New64a()
	h.Write([]byte(name))
	return &normal{state: uint64(seed) ^ h.Sum64()}
}

func (r *normal) uint64() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// uniform returns a number in (0, 1].
func (r *normal) uniform() float64 { return (float64(r.uint64()>>11) + 1) / (1 << 53) }

func (r *normal) next() float64 {
	if r.spared {
		r.spared = false
		return r.spare
	}
	radius := math.Sqrt(-2 * math.Log(r.uniform()))
	angle := 2 * math.Pi * r.uniform()
	r.spare, r.spared = radius*math.Sin(angle), true
	return radius * math.Cos(angle)
}
