package llama

import (
	"github.com/x448/float16"

	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// GGML tensor types this package reads.
const (
	typeF32  = 0
	typeF16  = 1
	typeQ4_0 = 2
	typeQ8_0 = 8
	typeQ4_K = 12
	typeQ6_K = 14
)

// typeName returns GGML's name of a tensor type.
func typeName(t uint32) string {
	names := map[uint32]string{0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
		10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 30: "BF16", 39: "MXFP4"}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type %d", t)
}

// blockLayout returns the elements per block and bytes per block of a supported type.
func blockLayout(t uint32) (elems, bytes int, ok bool) {
	switch t {
	case typeF32:
		return 1, 4, true
	case typeF16:
		return 1, 2, true
	case typeQ4_0:
		return 32, 18, true
	case typeQ8_0:
		return 32, 34, true
	case typeQ4_K:
		return 256, 144, true
	case typeQ6_K:
		return 256, 210, true
	}
	return 0, 0, false
}

// matrix is a rows×cols weight matrix, row-major (a GGUF tensor [cols, rows]),
// kept in its storage type and dequantized row by row when used.
type matrix struct {
	typ        uint32
	rows, cols int
	f32        []float32 // typ F32
	raw        []byte    // other types
	rowBytes   int
}

func newMatrix(typ uint32, rows, cols int, data []byte) (*matrix, error) {
	elems, bytes, ok := blockLayout(typ)
	if !ok {
		return nil, fmt.Errorf("unsupported tensor type %s", typeName(typ))
	}
	if cols%elems != 0 {
		return nil, fmt.Errorf("row length %d is not a multiple of the %s block size %d", cols, typeName(typ), elems)
	}
	m := &matrix{typ: typ, rows: rows, cols: cols, rowBytes: cols / elems * bytes}
	if len(data) != rows*m.rowBytes {
		return nil, fmt.Errorf("%d bytes of data for %d×%d %s", len(data), rows, cols, typeName(typ))
	}
	if typ == typeF32 {
		m.f32 = make([]float32, rows*cols)
		for i := range m.f32 {
			m.f32[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
	} else {
		m.raw = data
	}
	return m, nil
}

// row writes row r of m, dequantized, into dst (len cols).
func (m *matrix) row(r int, dst []float32) {
	if m.typ == typeF32 {
		copy(dst, m.f32[r*m.cols:(r+1)*m.cols])
		return
	}
	src := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
	switch m.typ {
	case typeF16:
		for i := range dst {
			dst[i] = f16to32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case typeQ8_0:
		dequantQ8_0(src, dst)
	case typeQ4_0:
		dequantQ4_0(src, dst)
	case typeQ4_K:
		dequantQ4_K(src, dst)
	case typeQ6_K:
		dequantQ6_K(src, dst)
	}
}

// workers is the number of goroutines a large matrix product is split over.
var workers = runtime.GOMAXPROCS(0)

// mul sets out[b] = m · in[b] for every row b of the batch. The weight row is
// dequantized once and used for the whole batch; rows are split over workers
// when the product is large enough to pay for it.
func (m *matrix) mul(out, in [][]float32) {
	if m.typ != typeF32 {
		// llama.cpp converts the activations to the weights' dot-product type
		// (F16, Q8_0 or Q8_K) before multiplying; do the same on a copy.
		in = m.activations(in)
	}
	n := workers
	if work := m.rows * m.cols * len(in); work < 1<<16 || n < 2 {
		n = 1
	}
	if n == 1 {
		m.mulRange(out, in, 0, m.rows, nil)
		return
	}
	var wg sync.WaitGroup
	per := (m.rows + n - 1) / n
	for lo := 0; lo < m.rows; lo += per {
		hi := min(lo+per, m.rows)
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.mulRange(out, in, lo, hi, nil)
		}()
	}
	wg.Wait()
}

var rowPool = sync.Pool{New: func() any { s := make([]float32, 0, 1024); return &s }}

func (m *matrix) mulRange(out, in [][]float32, lo, hi int, _ []float32) {
	var buf []float32
	var bp *[]float32
	if m.typ != typeF32 {
		bp = rowPool.Get().(*[]float32)
		if cap(*bp) < m.cols {
			*bp = make([]float32, m.cols)
		}
		buf = (*bp)[:m.cols]
		defer rowPool.Put(bp)
	}
	for r := lo; r < hi; r++ {
		w := buf
		if m.typ == typeF32 {
			w = m.f32[r*m.cols : (r+1)*m.cols]
		} else {
			m.row(r, w)
		}
		for b, x := range in {
			out[b][r] = dot(w, x)
		}
	}
}

// activations returns in converted as llama.cpp's CPU backend converts
// activations before a dot product with weights of m's type.
func (m *matrix) activations(in [][]float32) [][]float32 {
	cp := make([][]float32, len(in))
	for b, x := range in {
		y := make([]float32, len(x))
		copy(y, x)
		switch m.typ {
		case typeF16:
			roundF16(y)
		case typeQ8_0, typeQ4_0:
			roundQ8_0(y)
		case typeQ4_K, typeQ6_K:
			roundQ8_K(y)
		}
		cp[b] = y
	}
	return cp
}

// roundQ8_0 replaces x by its Q8_0 quantization, dequantized (as ggml's x86 quantize_row_q8_0).
func roundQ8_0(x []float32) {
	for b := 0; b+32 <= len(x); b += 32 {
		blk := x[b : b+32]
		var amax float32
		for _, v := range blk {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := amax / 127
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		dh := f16table[f32to16(d)]
		for i, v := range blk {
			blk[i] = dh * float32(math.RoundToEven(float64(v*id)))
		}
	}
}

// roundQ8_K replaces x by its Q8_K quantization, dequantized (as ggml's quantize_row_q8_K_ref).
func roundQ8_K(x []float32) {
	for b := 0; b+256 <= len(x); b += 256 {
		blk := x[b : b+256]
		var amax, vmax float32
		for _, v := range blk {
			if a := float32(math.Abs(float64(v))); a > amax {
				amax, vmax = a, v
			}
		}
		if amax == 0 {
			clear(blk)
			continue
		}
		iscale := -127 / vmax
		d := 1 / iscale
		for i, v := range blk {
			q := min(127, math.RoundToEven(float64(iscale*v)))
			blk[i] = d * float32(q)
		}
	}
}

// dot returns the inner product of a and b (same length), summed in four lanes.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// f16table maps every binary16 encoding to its float32 value.
var f16table = func() []float32 {
	t := make([]float32, 1<<16)
	for h := range t {
		t[h] = f16value(uint16(h))
	}
	return t
}()

func f16to32(h uint16) float32 { return f16table[h] }

func f16value(h uint16) float32 { return float16.Frombits(h).Float32() }

// f32to16 returns the binary16 encoding of f, rounded to nearest even.
func f32to16(f float32) uint16 { return float16.Fromfloat32(f).Bits() }

// roundF16 rounds every element of x to the nearest binary16 value.
func roundF16(x []float32) {
	for i, v := range x {
		x[i] = f16table[f32to16(v)]
	}
}

func dequantQ8_0(src []byte, dst []float32) {
	for b := 0; b < len(dst)/32; b++ {
		blk := src[b*34:]
		d := f16to32(binary.LittleEndian.Uint16(blk))
		for i := range 32 {
			dst[b*32+i] = d * float32(int8(blk[2+i]))
		}
	}
}

func dequantQ4_0(src []byte, dst []float32) {
	for b := 0; b < len(dst)/32; b++ {
		blk := src[b*18:]
		d := f16to32(binary.LittleEndian.Uint16(blk))
		for i := range 16 {
			q := blk[2+i]
			dst[b*32+i] = d * float32(int(q&0x0f)-8)
			dst[b*32+i+16] = d * float32(int(q>>4)-8)
		}
	}
}

// scaleMinK4 unpacks the 6-bit scale and min j of a Q4_K block (llama.cpp's get_scale_min_k4).
func scaleMinK4(j int, q []byte) (d, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return (q[j+4] & 0xf) | ((q[j-4] >> 6) << 4), (q[j+4] >> 4) | ((q[j] >> 6) << 4)
}

func dequantQ4_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/256; b++ {
		blk := src[b*144:]
		d := f16to32(binary.LittleEndian.Uint16(blk))
		dmin := f16to32(binary.LittleEndian.Uint16(blk[2:]))
		scales := blk[4:16]
		q := blk[16:144]
		y := dst[b*256:]
		is := 0
		for j := 0; j < 256; j += 64 {
			sc, m := scaleMinK4(is, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = scaleMinK4(is+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			for l := range 32 {
				y[j+l] = d1*float32(q[l]&0xf) - m1
			}
			for l := range 32 {
				y[j+32+l] = d2*float32(q[l]>>4) - m2
			}
			q = q[32:]
			is += 2
		}
	}
}

func dequantQ6_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/256; b++ {
		blk := src[b*210:]
		ql := blk[0:128]
		qh := blk[128:192]
		sc := blk[192:208]
		d := f16to32(binary.LittleEndian.Uint16(blk[208:]))
		y := dst[b*256:]
		for n := 0; n < 256; n += 128 {
			for l := range 32 {
				is := l / 16
				q1 := int8((ql[l]&0xf)|((qh[l]>>0)&3)<<4) - 32
				q2 := int8((ql[l+32]&0xf)|((qh[l]>>2)&3)<<4) - 32
				q3 := int8((ql[l]>>4)|((qh[l]>>4)&3)<<4) - 32
				q4 := int8((ql[l+32]>>4)|((qh[l]>>6)&3)<<4) - 32
				y[n+l] = d * float32(int8(sc[is])) * float32(q1)
				y[n+l+32] = d * float32(int8(sc[is+2])) * float32(q2)
				y[n+l+64] = d * float32(int8(sc[is+4])) * float32(q3)
				y[n+l+96] = d * float32(int8(sc[is+6])) * float32(q4)
			}
			ql = ql[64:]
			qh = qh[32:]
			sc = sc[8:]
		}
	}
}
