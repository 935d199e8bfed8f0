package llama

import (
	"bytes"
	"encoding/binary"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/mwpeer/mwpeer/internal/ollamatest"
	fsggml "github.com/ollama/ollama/fs/ggml"
)

// Ollama v0.17.4's create refuses quantize "q5_K_M" (it offers F32, F16,
// Q4_K_S, Q4_K_M and Q8_0), so the Q5_K_M files of the anchors are made
// from the Q4_K_M file Ollama makes: every Q4_K tensor dequantized and
// quantized again to Q5_K (quantizeQ5_K), the Q6_K and F32 tensors kept, as
// llama.cpp's Q5_K_M mixes Q5_K with Q6_K. Both engines then read the same
// bytes, which is what the anchors compare.

// quantizeQ5_K packs x (a multiple of 256 values) into 176-byte Q5_K blocks:
// per sub-block of 32, the range [min(0, lo), hi] split into 31 steps, the
// scales and mins in 6 bits of the block's d and dmin. This is a plain
// min/max choice, not ggml's iterative make_qkx2_quants search; the layout
// is ggml's block_q5_K.
func quantizeQ5_K(x []float32) []byte {
	out := make([]byte, len(x)/256*176)
	for b := range len(x) / 256 {
		xs, blk := x[b*256:(b+1)*256], out[b*176:(b+1)*176]
		var scale, mins [8]float32
		var maxScale, maxMin float32
		for j := range 8 {
			lo, hi := float32(0), float32(0)
			for _, v := range xs[j*32 : (j+1)*32] {
				lo, hi = min(lo, v), max(hi, v)
			}
			scale[j], mins[j] = (hi-lo)/31, -lo
			maxScale, maxMin = max(maxScale, scale[j]), max(maxMin, mins[j])
		}
		dh, mh := f32to16(maxScale/63), f32to16(maxMin/63)
		binary.LittleEndian.PutUint16(blk[0:], dh)
		binary.LittleEndian.PutUint16(blk[2:], mh)
		d, dmin := f16table[dh], f16table[mh]
		var ls, lm [8]uint8
		for j := range 8 {
			if d > 0 {
				ls[j] = uint8(min(63, math.Round(float64(scale[j]/d))))
			}
			if dmin > 0 {
				lm[j] = uint8(min(63, math.Round(float64(mins[j]/dmin))))
			}
		}
		sc := blk[4:16]
		for j := range 8 { // ggml's packing of 6-bit scales and mins
			if j < 4 {
				sc[j], sc[j+4] = ls[j], lm[j]
			} else {
				sc[j+4] = ls[j]&0xf | (lm[j]&0xf)<<4
				sc[j-4] |= (ls[j] >> 4) << 6
				sc[j] |= (lm[j] >> 4) << 6
			}
		}
		qh, ql := blk[16:48], blk[48:176]
		var l [256]uint8
		for j := range 8 {
			dl, ml := d*float32(ls[j]), dmin*float32(lm[j])
			if dl == 0 {
				continue
			}
			for i := j * 32; i < (j+1)*32; i++ {
				l[i] = uint8(max(0, min(31, math.Round(float64((xs[i]+ml)/dl)))))
			}
		}
		for n := range 4 {
			for i := range 32 {
				l1, l2 := l[64*n+i], l[64*n+32+i]
				if l1 > 15 {
					l1 -= 16
					qh[i] |= 1 << (2 * n)
				}
				if l2 > 15 {
					l2 -= 16
					qh[i] |= 1 << (2*n + 1)
				}
				ql[32*n+i] = l1 | l2<<4
			}
		}
	}
	return out
}

// TestQuantizeQ5_KRoundTrips: dequantQ5_K gives back what quantizeQ5_K
// packed, within half a step of each sub-block (plus the 6-bit rounding of
// its scale and min), so the test files' Q5_K tensors carry the weights.
func TestQuantizeQ5_KRoundTrips(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	x := randomRows(rng, 1, 256*9)[0]
	y := make([]float32, len(x))
	dequantQ5_K(quantizeQ5_K(x), y)
	for b := range len(x) / 32 {
		lo, hi := float32(0), float32(0)
		for _, v := range x[b*32 : (b+1)*32] {
			lo, hi = min(lo, v), max(hi, v)
		}
		blockMax := float32(0)
		for _, v := range x[b/8*256 : (b/8+1)*256] {
			blockMax = max(blockMax, abs32(v))
		}
		// Half a step of 31, and the 6-bit scale and min each off by half of 1/63 of the block's range.
		bound := (hi-lo)/62 + 2*blockMax/63 + 1e-6
		for i := b * 32; i < (b+1)*32; i++ {
			if d := abs32(x[i] - y[i]); d > bound {
				t.Fatalf("element %d: %g became %g (off by %g, bound %g)", i, x[i], y[i], d, bound)
			}
		}
	}
}

// writeQ5_K_M writes to dst the file src (Ollama's Q4_K_M) with every Q4_K
// tensor requantized to Q5_K.
func writeQ5_K_M(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	g, err := fsggml.Decode(in, -1)
	if err != nil {
		t.Fatalf("decode %s: %v", src, err)
	}
	kv := maps.Clone(g.KV())
	kv["general.file_type"] = uint32(17) // LLAMA_FTYPE_MOSTLY_Q5_K_M (unexported in Ollama)
	var ts []*fsggml.Tensor
	q5 := 0
	for _, tt := range g.Tensors().Items() {
		data := make([]byte, tt.Size())
		if _, err := in.ReadAt(data, int64(g.Tensors().Offset+tt.Offset)); err != nil {
			t.Fatalf("read %s: %v", tt.Name, err)
		}
		out := &fsggml.Tensor{Name: tt.Name, Kind: tt.Kind, Shape: tt.Shape}
		if tt.Kind == typeQ4_K {
			f := make([]float32, len(data)/144*256)
			dequantQ4_K(data, f)
			data, out.Kind = quantizeQ5_K(f), typeQ5_K
			q5++
		}
		out.WriterTo = bytes.NewReader(data)
		ts = append(ts, out)
	}
	if q5 == 0 {
		t.Fatalf("%s has no Q4_K tensor", src)
	}
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := fsggml.WriteGGUF(f, kv, ts); err != nil {
		t.Fatalf("write %s: %v", dst, err)
	}
}

// createQuantized makes model in srv from the F16 file path quantized to
// quant, and returns the GGUF file Ollama runs. quant "q5_K_M" goes through
// Ollama's Q4_K_M and writeQ5_K_M (see above).
func createQuantized(t testing.TB, srv *ollamatest.Server, model, path, quant string) string {
	t.Helper()
	if quant != "q5_K_M" {
		srv.CreateQuantized(t, model, path, quant)
		return quantizedBlob(t, srv, model)
	}
	srv.CreateQuantized(t, model+"-q4", path, "q4_K_M")
	q5 := filepath.Join(t.TempDir(), model+".gguf")
	writeQ5_K_M(t, quantizedBlob(t, srv, model+"-q4"), q5)
	srv.CreateModel(t, model, q5)
	return q5
}

// TestQuantizeQ8_KNative: the native Q8_K quantization rounds the exact
// product iscale·x (as llama.cpp's FMA-contracted nearest_int), the portable
// one the float32 product; they differ only where the float32 rounding
// crosses a half, which random inputs hit a few times in a million.
func TestQuantizeQ8_KNative(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 16))
	const blocks = 1 << 14
	x := randomRows(rng, 1, 256*blocks)[0]
	qn, qp := make([]int8, len(x)), make([]int8, len(x))
	dn, dp := make([]float32, blocks), make([]float32, blocks)
	bn, bp := make([]int32, blocks*16), make([]int32, blocks*16)
	quantizeQ8_KNative(x, qn, dn, bn)
	quantizeQ8_K(x, qp, dp, bp)
	iscale := make([]float32, blocks)
	for blk := range blocks {
		if dn[blk] != dp[blk] {
			t.Fatalf("block %d: scales %g and %g", blk, dn[blk], dp[blk])
		}
		var vmax float32
		for _, w := range x[blk*256 : blk*256+256] {
			if abs32(w) > abs32(vmax) {
				vmax = w
			}
		}
		iscale[blk] = -127 / vmax
	}
	differ := 0
	for i, v := range x {
		exact := float64(iscale[i/256]) * float64(v)
		if want := int8(min(127, math.RoundToEven(exact))); qn[i] != want {
			t.Fatalf("element %d: native %d, exact product %.17g rounds to %d", i, qn[i], exact, want)
		}
		if qn[i] != qp[i] {
			differ++
			if f := math.Abs(exact - math.Floor(exact) - 0.5); f > 1e-5 {
				t.Fatalf("element %d: native %d, portable %d, but the product %.17g is not near a half", i, qn[i], qp[i], exact)
			}
		}
	}
	t.Logf("%d of %d values round differently", differ, len(x))
	if differ == 0 {
		t.Error("no value rounds differently: the test shows nothing")
	}
}
