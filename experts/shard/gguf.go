package shard

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// A small GGUF (v2/v3, little-endian) reader and writer. Split copies the
// key-value section of the source byte for byte, so every value type GGUF has
// survives, including those ggml.WriteGGUF cannot write (8- and 16-bit
// integers, float64, nested arrays) — and nothing is added, such as the
// general.parameter_count that ggml.Decode synthesizes.

// GGUF value types.
const (
	ggufUint8 = iota
	ggufInt8
	ggufUint16
	ggufInt16
	ggufUint32
	ggufInt32
	ggufFloat32
	ggufBool
	ggufString
	ggufArray
	ggufUint64
	ggufInt64
	ggufFloat64
)

// Limits on a GGUF header.
const (
	maxGGUFString = 64 << 20
	maxGGUFArray  = 1 << 24
	maxGGUFKV     = 1 << 16
	maxGGUFHeader = 512 << 20
	maxArrayDepth = 4
)

// ggufFile is the header of a GGUF file.
type ggufFile struct {
	version  uint32
	nKV      uint64
	kvStart  int64 // the key-value section, to copy as is
	kvEnd    int64
	kv       map[string]any // scalar values only (arrays are skipped)
	tensors  []ggufTensor
	align    int64
	dataBase int64 // offset of the tensor data section
	fileSize int64
}

type ggufTensor struct {
	name   string
	kind   uint32
	shape  []uint64
	offset uint64 // from dataBase
	size   int64
}

func (g *ggufFile) uint(key string) (uint64, bool) {
	switch v := g.kv[key].(type) {
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	case int8:
		return uint64(v), v >= 0
	case int16:
		return uint64(v), v >= 0
	case int32:
		return uint64(v), v >= 0
	case int64:
		return uint64(v), v >= 0
	}
	return 0, false
}

func (g *ggufFile) string(key string) string {
	s, _ := g.kv[key].(string)
	return s
}

// countingReader reads r, counting bytes, and fails past max.
type countingReader struct {
	r   *bufio.Reader
	n   int64
	max int64
	err error
}

func (c *countingReader) read(p []byte) {
	if c.err != nil {
		return
	}
	if c.n+int64(len(p)) > c.max {
		c.err = fmt.Errorf("header larger than %d bytes", c.max)
		return
	}
	k, err := io.ReadFull(c.r, p)
	c.n += int64(k)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		c.err = err
	}
}

func (c *countingReader) u32() uint32 {
	var b [4]byte
	c.read(b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (c *countingReader) u64() uint64 {
	var b [8]byte
	c.read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

func (c *countingReader) skip(n uint64) {
	if c.err != nil {
		return
	}
	if n > uint64(c.max-c.n) {
		c.err = fmt.Errorf("header larger than %d bytes", c.max)
		return
	}
	k, err := c.r.Discard(int(n))
	c.n += int64(k)
	if err != nil {
		c.err = io.ErrUnexpectedEOF
	}
}

func (c *countingReader) str() string {
	n := c.u64()
	if c.err != nil {
		return ""
	}
	if n > maxGGUFString {
		c.err = fmt.Errorf("string of %d bytes", n)
		return ""
	}
	if n > uint64(c.max-c.n) {
		// Before allocating: a string the file cannot hold.
		c.err = fmt.Errorf("header larger than %d bytes", c.max)
		return ""
	}
	b := make([]byte, n)
	c.read(b)
	return string(b)
}

// value reads a value of type t; arrays are skipped and read as nil.
func (c *countingReader) value(t uint32, depth int) any {
	var b [8]byte
	switch t {
	case ggufUint8, ggufInt8, ggufBool:
		c.read(b[:1])
		switch t {
		case ggufUint8:
			return b[0]
		case ggufInt8:
			return int8(b[0])
		}
		return b[0] != 0
	case ggufUint16, ggufInt16:
		c.read(b[:2])
		v := binary.LittleEndian.Uint16(b[:])
		if t == ggufInt16 {
			return int16(v)
		}
		return v
	case ggufUint32, ggufInt32, ggufFloat32:
		v := c.u32()
		switch t {
		case ggufInt32:
			return int32(v)
		case ggufFloat32:
			return math.Float32frombits(v)
		}
		return v
	case ggufUint64, ggufInt64, ggufFloat64:
		v := c.u64()
		switch t {
		case ggufInt64:
			return int64(v)
		case ggufFloat64:
			return math.Float64frombits(v)
		}
		return v
	case ggufString:
		return c.str()
	case ggufArray:
		if depth >= maxArrayDepth {
			c.err = fmt.Errorf("arrays nested deeper than %d", maxArrayDepth)
			return nil
		}
		et, n := c.u32(), c.u64()
		if c.err != nil {
			return nil
		}
		if n > maxGGUFArray {
			c.err = fmt.Errorf("array of %d elements", n)
			return nil
		}
		if w := fixedSize(et); w > 0 {
			c.skip(n * w)
			return nil
		}
		for range n {
			if et == ggufString {
				c.skip(c.u64())
			} else {
				c.value(et, depth+1)
			}
			if c.err != nil {
				return nil
			}
		}
		return nil
	}
	if c.err == nil {
		c.err = fmt.Errorf("unknown value type %d", t)
	}
	return nil
}

// fixedSize returns the encoded size of a value of type t, or 0 if it varies.
func fixedSize(t uint32) uint64 {
	switch t {
	case ggufUint8, ggufInt8, ggufBool:
		return 1
	case ggufUint16, ggufInt16:
		return 2
	case ggufUint32, ggufInt32, ggufFloat32:
		return 4
	case ggufUint64, ggufInt64, ggufFloat64:
		return 8
	}
	return 0
}

// CheckGGUF checks the header of the GGUF file r of size bytes, for a
// decoder that trusts the lengths a file states (Ollama's allocates every
// string it is told of): every string, array and tensor it states lies
// within the file and within this package's limits.
func CheckGGUF(r io.ReaderAt, size int64) error {
	_, err := readGGUF(r, size)
	return err
}

// readGGUF reads the header of the GGUF file r of size bytes and checks that
// every tensor lies inside the file.
func readGGUF(r io.ReaderAt, size int64) (*ggufFile, error) {
	c := &countingReader{r: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<16), max: min(size, maxGGUFHeader)}
	var magic [4]byte
	c.read(magic[:])
	if c.err != nil || string(magic[:]) != "GGUF" {
		return nil, errors.New("not a GGUF file")
	}
	g := &ggufFile{version: c.u32(), kv: make(map[string]any), fileSize: size}
	if g.version != 2 && g.version != 3 {
		return nil, fmt.Errorf("GGUF version %d (only 2 and 3, little-endian)", g.version)
	}
	nTensors, nKV := c.u64(), c.u64()
	if c.err == nil && (nKV > maxGGUFKV || nTensors > MaxTensors+MaxLayers*3) {
		return nil, fmt.Errorf("%d key-value pairs and %d tensors: too many", nKV, nTensors)
	}
	g.nKV = nKV
	g.kvStart = c.n
	for range nKV {
		key := c.str()
		t := c.u32()
		if c.err != nil {
			break
		}
		g.kv[key] = c.value(t, 0)
	}
	g.kvEnd = c.n
	g.align = 32
	if c.err == nil {
		if a, ok := g.kv["general.alignment"]; ok {
			v, ok := a.(uint32)
			if !ok || v == 0 || v > 1<<16 || v&(v-1) != 0 {
				return nil, fmt.Errorf("general.alignment %v is not a power of two up to 65536", a)
			}
			g.align = int64(v)
		}
	}
	for range nTensors {
		name := c.str()
		dims := c.u32()
		if c.err != nil {
			break
		}
		if len(name) > MaxName || dims == 0 || dims > 4 {
			return nil, fmt.Errorf("tensor %.80q with %d dimensions", name, dims)
		}
		t := ggufTensor{name: name, shape: make([]uint64, dims)}
		for i := range t.shape {
			t.shape[i] = c.u64()
		}
		t.kind = c.u32()
		t.offset = c.u64()
		if c.err != nil {
			break
		}
		n, err := tensorSize(t.kind, t.shape)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		t.size = n
		g.tensors = append(g.tensors, t)
	}
	if c.err != nil {
		return nil, fmt.Errorf("read GGUF header: %w", c.err)
	}
	g.dataBase = alignUp(c.n, g.align)
	for _, t := range g.tensors {
		if t.offset > uint64(size) || uint64(g.dataBase)+t.offset+uint64(t.size) > uint64(size) {
			return nil, fmt.Errorf("tensor %s (%d bytes at %d) lies beyond the end of the %d-byte file", t.name, t.size, t.offset, size)
		}
	}
	return g, nil
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

// ggufWriter writes a GGUF v3 file whose key-value section is copied from a source.
type ggufWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (w *ggufWriter) write(p []byte) {
	if w.err != nil {
		return
	}
	k, err := w.w.Write(p)
	w.n += int64(k)
	w.err = err
}

func (w *ggufWriter) u32(v uint32) { w.write(binary.LittleEndian.AppendUint32(nil, v)) }
func (w *ggufWriter) u64(v uint64) { w.write(binary.LittleEndian.AppendUint64(nil, v)) }
func (w *ggufWriter) str(s string) { w.u64(uint64(len(s))); w.write([]byte(s)) }
func (w *ggufWriter) pad(a int64) {
	w.write(make([]byte, alignUp(w.n, a)-w.n))
}

func (w *ggufWriter) copy(r io.Reader, n int64) {
	if w.err != nil {
		return
	}
	k, err := io.CopyN(w.w, r, n)
	w.n += k
	w.err = err
}

// writeDense writes a GGUF file with src's key-value pairs and the tensors
// keep of src, in order, and returns them with their offsets in the new file.
func writeDense(w io.Writer, src io.ReaderAt, g *ggufFile, keep []ggufTensor) ([]Tensor, error) {
	gw := &ggufWriter{w: w}
	gw.write([]byte("GGUF"))
	gw.u32(3)
	gw.u64(uint64(len(keep)))
	gw.u64(g.nKV)
	gw.copy(io.NewSectionReader(src, g.kvStart, g.kvEnd-g.kvStart), g.kvEnd-g.kvStart)
	var off int64
	offsets := make([]int64, len(keep))
	for i, t := range keep {
		gw.str(t.name)
		gw.u32(uint32(len(t.shape)))
		for _, d := range t.shape {
			gw.u64(d)
		}
		gw.u32(t.kind)
		gw.u64(uint64(off))
		offsets[i] = off
		off = alignUp(off+t.size, g.align)
	}
	gw.pad(g.align)
	base := gw.n
	out := make([]Tensor, len(keep))
	for i, t := range keep {
		gw.copy(io.NewSectionReader(src, g.dataBase+int64(t.offset), t.size), t.size)
		gw.pad(g.align)
		out[i] = tensorOf(t, base+offsets[i])
	}
	if gw.err != nil {
		return nil, gw.err
	}
	return out, nil
}

func tensorOf(t ggufTensor, offset int64) Tensor {
	return Tensor{Name: t.name, Type: typeName(t.kind), TypeID: t.kind, Shape: t.shape, Offset: offset, Size: t.size}
}
