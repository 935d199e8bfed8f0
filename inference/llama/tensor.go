package llama

import (
	"github.com/x448/float16"

	"encoding/binary"
	"fmt"
	"math"
)

// GGML tensor types this package reads.
const (
	typeF32  = 0
	typeF16  = 1
	typeQ4_0 = 2
	typeQ8_0 = 8
	typeQ4_K = 12
	typeQ5_K = 13
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
	case typeQ5_K:
		return 256, 176, true
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
		m.f32 = float32s(data) // a view of data where aligned (mmap.go)
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
	case typeQ5_K:
		dequantQ5_K(src, dst)
	case typeQ6_K:
		dequantQ6_K(src, dst)
	}
}

// actKind is the form llama.cpp's CPU backend converts activations to before
// a dot product with weights of a type (the type's vec_dot_type).
type actKind int

const (
	actF32  actKind = iota // F32 weights: activations as they are
	actF16                 // F16 weights: activations rounded to binary16
	actQ8_0                // Q8_0 and Q4_0 weights: blocks of 32 int8 and an F16 scale
	actQ8_K                // Q4_K, Q5_K and Q6_K weights: blocks of 256 int8, an F32 scale and sums of 16
	actKinds
)

func (m *matrix) kind() actKind {
	switch m.typ {
	case typeF16:
		return actF16
	case typeQ8_0, typeQ4_0:
		return actQ8_0
	case typeQ4_K, typeQ5_K, typeQ6_K:
		return actQ8_K
	}
	return actF32
}

// acts is a batch of activation rows converted for one actKind. Every row is
// converted on its own, so a row's form does not depend on the batch.
type acts struct {
	kind    actKind
	n, cols int
	in      [][]float32 // actF32: the rows themselves
	f       []float32   // actF16: n×cols
	q       []int8      // actQ8_0, actQ8_K: n×cols
	d       []float32   // scales: n×cols/32 (Q8_0, F16 values) or n×cols/256 (Q8_K)
	bsum    []int32     // actQ8_K: n×cols/16 sums of q
}

// view returns the rows [lo, hi) of a as acts of their own, sharing a's buffers.
func (a *acts) view(lo, hi int) acts {
	v, c := acts{kind: a.kind, n: hi - lo, cols: a.cols}, a.cols
	switch a.kind {
	case actF32:
		v.in = a.in[lo:hi]
	case actF16:
		v.f = a.f[lo*c : hi*c]
	case actQ8_0:
		v.q, v.d = a.q[lo*c:hi*c], a.d[lo*c/32:hi*c/32]
	case actQ8_K:
		v.q, v.d, v.bsum = a.q[lo*c:hi*c], a.d[lo*c/256:hi*c/256], a.bsum[lo*c/16:hi*c/16]
	}
	return v
}

// grow returns s with length n, reallocated only when too small.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// prepare converts in (rows of equal length) to kind.
func (a *acts) prepare(kind actKind, in [][]float32) {
	n, cols := len(in), len(in[0])
	a.kind, a.n, a.cols, a.in = kind, n, cols, nil
	switch kind {
	case actF32:
		a.in = in
	case actF16:
		a.f = grow(a.f, n*cols)
		for b, x := range in {
			y := a.f[b*cols : (b+1)*cols]
			copy(y, x)
			roundF16(y)
		}
	case actQ8_0:
		a.q = grow(a.q, n*cols)
		a.d = grow(a.d, n*cols/32)
		quantize := quantizeQ8_0
		if useSIMD {
			quantize = quantizeQ8_0Native
		}
		for b, x := range in {
			quantize(x, a.q[b*cols:(b+1)*cols], a.d[b*cols/32:(b+1)*cols/32])
		}
	case actQ8_K:
		a.q = grow(a.q, n*cols)
		a.d = grow(a.d, n*cols/256)
		a.bsum = grow(a.bsum, n*cols/16)
		quantize := quantizeQ8_K
		if useSIMD {
			quantize = quantizeQ8_KNative
		}
		for b, x := range in {
			quantize(x, a.q[b*cols:(b+1)*cols], a.d[b*cols/256:(b+1)*cols/256], a.bsum[b*cols/16:(b+1)*cols/16])
		}
	}
}

// quantizeQ8_0 quantizes x to blocks of 32 int8 q and scales d (F16 values),
// as ggml's quantize_row_q8_0_ref, which the x86 build without AVX uses.
func quantizeQ8_0(x []float32, q []int8, d []float32) {
	for blk := range d {
		xs, qs := x[blk*32:blk*32+32], q[blk*32:blk*32+32]
		var amax float32
		for _, v := range xs {
			amax = max(amax, abs32(v))
		}
		dv := amax / 127
		var id float32
		if dv != 0 {
			id = 1 / dv
		}
		d[blk] = f16table[f32to16(dv)]
		for i, v := range xs {
			qs[i] = int8(math.Round(float64(v * id))) // roundf: halves away from zero
		}
	}
}

// quantizeQ8_K quantizes x to blocks of 256 int8 q, scales d and sums of 16
// bsum, as ggml's quantize_row_q8_K_ref in llama.cpp's portable build.
func quantizeQ8_K(x []float32, q []int8, d []float32, bsum []int32) {
	quantizeQ8_KWith(x, q, d, bsum, false)
}

// quantizeQ8_KNative is quantizeQ8_K as llama.cpp's builds with FMA (x86
// -march=native, which the SIMD kernels follow) compute it: there the
// compiler fuses nearest_int's fval + 12582912.f with the product
// iscale·x[j] (-ffp-contract=fast), so each value is the exact product
// rounded to the nearest integer, ties to even, not the product rounded to
// float32 first. Measured: on the peaked Q5_K_M model this alone takes the
// SIMD engine from log-probabilities 0.39 apart from native (2 tokens of 96
// different) to bitwise equal ones.
func quantizeQ8_KNative(x []float32, q []int8, d []float32, bsum []int32) {
	quantizeQ8_KWith(x, q, d, bsum, true)
}

// quantizeQ8_KWith is quantize_row_q8_K_ref, nearest_int rounding the
// product iscale·x[j] (ties to even) exact (fused) or rounded to float32.
func quantizeQ8_KWith(x []float32, q []int8, d []float32, bsum []int32, fused bool) {
	for blk := range d {
		xs, qs := x[blk*256:blk*256+256], q[blk*256:blk*256+256]
		var amax, vmax float32
		for _, v := range xs {
			if a := abs32(v); a > amax {
				amax, vmax = a, v
			}
		}
		if amax == 0 {
			d[blk] = 0
			clear(qs)
			clear(bsum[blk*16 : blk*16+16])
			continue
		}
		iscale := -127 / vmax
		if fused {
			for i, v := range xs { // a float32 product is exact in float64
				qs[i] = int8(min(127, math.RoundToEven(float64(iscale)*float64(v))))
			}
		} else {
			for i, v := range xs {
				qs[i] = int8(min(127, math.RoundToEven(float64(iscale*v))))
			}
		}
		for j := range 16 {
			var s int32
			for _, v := range qs[j*16 : j*16+16] {
				s += int32(v)
			}
			bsum[blk*16+j] = s
		}
		d[blk] = 1 / iscale
	}
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// scratch is one worker's buffers for unpacking a weight row.
type scratch struct {
	f       []float32 // F16 row as float32
	q       []int8    // K-quant row as int8
	sc, mn  []int32   // K-quant sub-block scales and mins
	d, dmin []float32 // K-quant block scales
	sums    [8]float32
	lanes   [8]int32
}

// mulJob computes out[b][r] = dot(row r of m, row b of a) for a range of r.
type mulJob struct {
	m    *matrix
	out  [][]float32
	a    *acts
	work []scratch // per worker
}

// mul sets out[b] = m · row b of a for every row of the batch, on t's workers.
// Each output element is computed by one dot product whose order of
// operations depends only on the two rows, never on the batch or on how rows
// are split over workers. work holds at least t.workers() scratches.
func (m *matrix) mul(t *team, j *mulJob, out [][]float32, a *acts, work []scratch) {
	*j = mulJob{m: m, out: out, a: a, work: work}
	t.parallel(j, m.rows, m.chunk(a.n))
	*j = mulJob{}
}

// chunk returns the rows of m a worker takes at a time in a product with n
// activation rows: about 64K multiply-adds, at least 4 rows.
func (m *matrix) chunk(n int) int {
	chunk := max(4, (1<<16)/(m.cols*n))
	if useSIMD {
		chunk = (chunk + 5) / 6 * 6 // whole tiles of 3 or 2 rows
	}
	return chunk
}

// mulsJob runs several products as one parallel job, so that the workers
// are handed work once for all of them (the gate and up products of a
// SwiGLU, every expert of a MoE layer, Q, K and V) rather than once per
// product: a decode step's products are small (a 512×512 F16 product takes
// tens of microseconds), and a helper woken for each often started after
// the caller had taken most of the chunks. The job's indices are chunks, each within one
// product and of the size that product alone would have (matrix.chunk);
// every row is computed by mulJob.run as in a product of its own, so the
// results are bitwise those of separate products.
type mulsJob struct {
	segs   []mulSeg
	chunks int
	work   []scratch // per worker
}

// mulSeg is one product of a mulsJob: out = m · a, its chunks numbered from first.
type mulSeg struct {
	m            *matrix
	a            *acts
	out          [][]float32
	chunk, first int
}

// reset empties the job.
func (j *mulsJob) reset(work []scratch) {
	clear(j.segs) // drop references to the previous products' buffers
	j.segs, j.chunks, j.work = j.segs[:0], 0, work
}

// add appends the product out = m · a.
func (j *mulsJob) add(m *matrix, a *acts, out [][]float32) {
	c := m.chunk(a.n)
	j.segs = append(j.segs, mulSeg{m: m, a: a, out: out, chunk: c, first: j.chunks})
	j.chunks += (m.rows + c - 1) / c
}

// run computes the chunks [lo, hi).
func (j *mulsJob) run(lo, hi, worker int) {
	for ci := lo; ci < hi; ci++ {
		s := j.seg(ci)
		r := (ci - s.first) * s.chunk
		mj := mulJob{m: s.m, out: s.out, a: s.a, work: j.work}
		mj.run(r, min(r+s.chunk, s.m.rows), worker)
	}
}

// seg returns the product that chunk ci belongs to.
func (j *mulsJob) seg(ci int) *mulSeg {
	lo, hi := 0, len(j.segs) // the last segment whose first chunk is <= ci
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if j.segs[mid].first <= ci {
			lo = mid
		} else {
			hi = mid
		}
	}
	return &j.segs[lo]
}

func (j *mulJob) run(lo, hi, worker int) {
	if useSIMD {
		j.runSIMD(lo, hi)
		return
	}
	m, a, out := j.m, j.a, j.out
	s := &j.work[worker]
	cols := m.cols
	switch m.typ {
	case typeF32:
		for r := lo; r < hi; r++ {
			w := m.f32[r*cols : (r+1)*cols]
			for b := range out {
				out[b][r] = dotF32(w, a.in[b])
			}
		}
	case typeF16:
		s.f = grow(s.f, cols)
		for r := lo; r < hi; r++ {
			f16row(m.raw[r*m.rowBytes:(r+1)*m.rowBytes], s.f)
			for b := range out {
				out[b][r] = dotF32(s.f, a.f[b*cols:(b+1)*cols])
			}
		}
	case typeQ8_0:
		for r := lo; r < hi; r++ {
			w := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
			for b := range out {
				out[b][r] = dotQ8_0(w, a.q[b*cols:(b+1)*cols], a.d[b*cols/32:(b+1)*cols/32])
			}
		}
	case typeQ4_0:
		for r := lo; r < hi; r++ {
			w := m.raw[r*m.rowBytes : (r+1)*m.rowBytes]
			for b := range out {
				out[b][r] = dotQ4_0(w, a.q[b*cols:(b+1)*cols], a.d[b*cols/32:(b+1)*cols/32])
			}
		}
	case typeQ4_K, typeQ5_K:
		s.q, s.sc, s.mn = grow(s.q, cols), grow(s.sc, cols/32), grow(s.mn, cols/32)
		s.d, s.dmin = grow(s.d, cols/256), grow(s.dmin, cols/256)
		unpack := unpackQ4_K
		if m.typ == typeQ5_K {
			unpack = unpackQ5_K // then the same dot: ggml's generic Q5_K dot is Q4_K's on 5-bit values
		}
		for r := lo; r < hi; r++ {
			unpack(m.raw[r*m.rowBytes:(r+1)*m.rowBytes], s)
			for b := range out {
				out[b][r] = s.dotQ4_K(a.q[b*cols:(b+1)*cols], a.d[b*cols/256:(b+1)*cols/256], a.bsum[b*cols/16:(b+1)*cols/16])
			}
		}
	case typeQ6_K:
		s.q, s.sc, s.d = grow(s.q, cols), grow(s.sc, cols/16), grow(s.d, cols/256)
		for r := lo; r < hi; r++ {
			unpackQ6_K(m.raw[r*m.rowBytes:(r+1)*m.rowBytes], s)
			for b := range out {
				out[b][r] = s.dotQ6_K(a.q[b*cols:(b+1)*cols], a.d[b*cols/256:(b+1)*cols/256])
			}
		}
	}
}

// dotF32 returns the inner product of a and b (same length) as ggml's scalar
// ggml_vec_dot_f32 and ggml_vec_dot_f16 compute it: float32 products summed
// in float64, rounded to float32 at the end. The sum runs in four float64
// lanes; it differs from ggml's single running sum only when the float64
// rounding errors (about 1e-16 relative) straddle a float32 rounding boundary.
func dotF32(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float64(a[i] * b[i])
		s1 += float64(a[i+1] * b[i+1])
		s2 += float64(a[i+2] * b[i+2])
		s3 += float64(a[i+3] * b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float64(a[i] * b[i])
	}
	return float32((s0 + s1) + (s2 + s3))
}

// dotSeq is dotF32 with ggml's single running sum, for short vectors where
// exact agreement is cheap (attention scores).
func dotSeq(a, b []float32) float32 {
	b = b[:len(a)]
	var s float64
	for i, v := range a {
		s += float64(v * b[i])
	}
	return float32(s)
}

// f16row converts a row of binary16 values to float32.
func f16row(src []byte, dst []float32) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = f16table[uint16(src[2*i])|uint16(src[2*i+1])<<8]
	}
}

// Products added to a float sum are wrapped in float32(...) in the pure-Go
// kernels: the Go spec lets a compiler fuse x*y + z into one rounding (arm64,
// ppc64 and s390x do, and amd64 with GOAMD64=v3), and the portable llama.cpp
// build these kernels follow rounds the product first. An explicit
// conversion forbids the fusion, so pure Go gives the same bits on every
// architecture.

// dotQ8_0 is ggml's vec_dot_q8_0_q8_0: an integer sum per block, scaled by
// the product of the two F16 scales.
func dotQ8_0(w []byte, q []int8, d []float32) float32 {
	var sum float32
	for blk := range d {
		x := w[blk*34 : blk*34+34]
		y := q[blk*32 : blk*32+32]
		var si int32
		for i := range 32 {
			si += int32(int8(x[2+i])) * int32(y[i])
		}
		sum += float32(float32(si) * (f16table[uint16(x[0])|uint16(x[1])<<8] * d[blk]))
	}
	return sum
}

// dotQ4_0 is ggml's vec_dot_q4_0_q8_0.
func dotQ4_0(w []byte, q []int8, d []float32) float32 {
	var sum float32
	for blk := range d {
		x := w[blk*18 : blk*18+18]
		y := q[blk*32 : blk*32+32]
		var s0, s1 int32
		for i := range 16 {
			s0 += (int32(x[2+i]&0x0f) - 8) * int32(y[i])
			s1 += (int32(x[2+i]>>4) - 8) * int32(y[i+16])
		}
		sum += float32(float32(s0+s1) * f16table[uint16(x[0])|uint16(x[1])<<8] * d[blk])
	}
	return sum
}

// unpackQ4_K unpacks a Q4_K row into s: 4-bit values, 6-bit scales and mins
// of 32-element sub-blocks, and block scales.
func unpackQ4_K(src []byte, s *scratch) {
	for blk := range s.d {
		x := src[blk*144 : blk*144+144]
		s.d[blk] = f16table[uint16(x[0])|uint16(x[1])<<8]
		s.dmin[blk] = f16table[uint16(x[2])|uint16(x[3])<<8]
		for j := range 8 {
			sc, mn := scaleMinK4(j, x[4:16])
			s.sc[blk*8+j], s.mn[blk*8+j] = int32(sc), int32(mn)
		}
		qs := x[16:144]
		y := s.q[blk*256 : blk*256+256]
		for j := range 4 {
			for l := range 32 {
				v := qs[j*32+l]
				y[j*64+l] = int8(v & 0x0f)
				y[j*64+32+l] = int8(v >> 4)
			}
		}
	}
}

// unpackQ5_K unpacks a Q5_K row into s as unpackQ4_K does a Q4_K row: the
// block is d, dmin, the same 12 bytes of 6-bit scales and mins, 32 bytes of
// high bits (bit 2j of byte l for element 64j+l, bit 2j+1 for 64j+32+l) and
// 128 bytes of low nibbles. The values run 0..31.
func unpackQ5_K(src []byte, s *scratch) {
	for blk := range s.d {
		x := src[blk*176 : blk*176+176]
		s.d[blk] = f16table[uint16(x[0])|uint16(x[1])<<8]
		s.dmin[blk] = f16table[uint16(x[2])|uint16(x[3])<<8]
		for j := range 8 {
			sc, mn := scaleMinK4(j, x[4:16])
			s.sc[blk*8+j], s.mn[blk*8+j] = int32(sc), int32(mn)
		}
		qh, qs := x[16:48], x[48:176]
		y := s.q[blk*256 : blk*256+256]
		for j := range 4 {
			for l := range 32 {
				v, h := qs[j*32+l], qh[l]>>(2*j)
				y[j*64+l] = int8(v&0x0f | (h&1)<<4)
				y[j*64+32+l] = int8(v>>4 | (h&2)<<3)
			}
		}
	}
}

// dotQ4_K is ggml's vec_dot_q4_K_q8_K (generic): per block, integer sums in
// eight lanes (element index mod 8) scaled into eight float lanes, the mins
// subtracted from a separate sum, the lanes added last.
func (s *scratch) dotQ4_K(q []int8, d []float32, bsum []int32) float32 {
	s.sums = [8]float32{}
	var sum float32
	for blk := range d {
		var mins int32
		for j := range 16 {
			mins += bsum[blk*16+j] * s.mn[blk*8+j/2]
		}
		s.lanes = [8]int32{}
		x := s.q[blk*256 : blk*256+256]
		y := q[blk*256 : blk*256+256]
		for j := range 8 {
			sc := s.sc[blk*8+j]
			var l0, l1, l2, l3, l4, l5, l6, l7 int32
			for g := j * 32; g < j*32+32; g += 8 {
				xs, ys := x[g:g+8], y[g:g+8]
				l0 += int32(xs[0]) * int32(ys[0])
				l1 += int32(xs[1]) * int32(ys[1])
				l2 += int32(xs[2]) * int32(ys[2])
				l3 += int32(xs[3]) * int32(ys[3])
				l4 += int32(xs[4]) * int32(ys[4])
				l5 += int32(xs[5]) * int32(ys[5])
				l6 += int32(xs[6]) * int32(ys[6])
				l7 += int32(xs[7]) * int32(ys[7])
			}
			s.lanes[0] += sc * l0
			s.lanes[1] += sc * l1
			s.lanes[2] += sc * l2
			s.lanes[3] += sc * l3
			s.lanes[4] += sc * l4
			s.lanes[5] += sc * l5
			s.lanes[6] += sc * l6
			s.lanes[7] += sc * l7
		}
		dd := s.d[blk] * d[blk]
		for l, v := range s.lanes {
			s.sums[l] += float32(dd * float32(v))
		}
		sum -= float32(s.dmin[blk] * d[blk] * float32(mins))
	}
	for _, v := range s.sums {
		sum += v
	}
	return sum
}

// unpackQ6_K unpacks a Q6_K row into s: 6-bit values centred on zero, signed
// 8-bit scales of 16-element sub-blocks, and block scales.
func unpackQ6_K(src []byte, s *scratch) {
	for blk := range s.d {
		x := src[blk*210 : blk*210+210]
		ql, qh, sc := x[0:128], x[128:192], x[192:208]
		s.d[blk] = f16table[uint16(x[208])|uint16(x[209])<<8]
		for j := range 16 {
			s.sc[blk*16+j] = int32(int8(sc[j]))
		}
		y := s.q[blk*256 : blk*256+256]
		for n := 0; n < 256; n += 128 {
			for l := range 32 {
				y[n+l] = int8((ql[l]&0xf)|((qh[l]>>0)&3)<<4) - 32
				y[n+l+32] = int8((ql[l+32]&0xf)|((qh[l]>>2)&3)<<4) - 32
				y[n+l+64] = int8((ql[l]>>4)|((qh[l]>>4)&3)<<4) - 32
				y[n+l+96] = int8((ql[l+32]>>4)|((qh[l]>>6)&3)<<4) - 32
			}
			ql, qh = ql[64:], qh[32:]
		}
	}
}

// dotQ6_K is ggml's vec_dot_q6_K_q8_K (generic).
func (s *scratch) dotQ6_K(q []int8, d []float32) float32 {
	s.sums = [8]float32{}
	for blk := range d {
		s.lanes = [8]int32{}
		x := s.q[blk*256 : blk*256+256]
		y := q[blk*256 : blk*256+256]
		for j := range 16 {
			sc := s.sc[blk*16+j]
			xs, ys := x[j*16:j*16+16], y[j*16:j*16+16]
			for l := range 8 {
				s.lanes[l] += sc * (int32(xs[l])*int32(ys[l]) + int32(xs[l+8])*int32(ys[l+8]))
			}
		}
		dd := s.d[blk] * d[blk]
		for l, v := range s.lanes {
			s.sums[l] += float32(dd * float32(v))
		}
	}
	var sum float32
	for _, v := range s.sums {
		sum += v
	}
	return sum
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
	if useSIMD {
		roundF16AVX2(x) // the same values: F16C rounds to nearest even too
		return
	}
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

// dequantQ5_K is ggml's dequantize_row_q5_K.
func dequantQ5_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/256; b++ {
		blk := src[b*176:]
		d := f16to32(binary.LittleEndian.Uint16(blk))
		dmin := f16to32(binary.LittleEndian.Uint16(blk[2:]))
		scales, qh, ql := blk[4:16], blk[16:48], blk[48:176]
		y := dst[b*256:]
		for j := range 4 {
			sc, m := scaleMinK4(2*j, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = scaleMinK4(2*j+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			for l := range 32 {
				y[64*j+l] = d1*float32(int(ql[l]&0xf)+int(qh[l]>>(2*j)&1)*16) - m1
			}
			for l := range 32 {
				y[64*j+32+l] = d2*float32(int(ql[l]>>4)+int(qh[l]>>(2*j+1)&1)*16) - m2
			}
			ql = ql[32:]
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
