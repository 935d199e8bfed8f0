package shard

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ollama/ollama/fs/ggml"
	"github.com/x448/float16"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// genModel writes the generated model c to a file in a temporary directory;
// with q8 its matrices are then quantized to Q8_0.
func genModel(t testing.TB, c randmodel.Config, q8 bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.gguf")
	if err := randmodel.WriteFile(path, c); err != nil {
		t.Fatal(err)
	}
	if q8 {
		path = quantizeQ8(t, path)
	}
	return path
}

// quantizeQ8 rewrites the F32 GGUF at path with every matrix in Q8_0 (norms
// stay F32), keeping its key-value pairs as they are.
func quantizeQ8(t testing.TB, path string) string {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := readGGUF(bytes.NewReader(src), int64(len(src)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w := &ggufWriter{w: &out}
	w.write([]byte("GGUF"))
	w.u32(3)
	w.u64(uint64(len(g.tensors)))
	w.u64(g.nKV)
	w.write(src[g.kvStart:g.kvEnd])
	datas := make([][]byte, len(g.tensors))
	var off int64
	for i, tn := range g.tensors {
		if tn.kind != uint32(ggml.TensorTypeF32) {
			t.Fatalf("tensor %s is not F32", tn.name)
		}
		data := src[g.dataBase+int64(tn.offset) : g.dataBase+int64(tn.offset)+tn.size]
		kind := tn.kind
		if len(tn.shape) > 1 {
			data, kind = q8(data), uint32(ggml.TensorTypeQ8_0)
		}
		datas[i] = data
		w.str(tn.name)
		w.u32(uint32(len(tn.shape)))
		for _, d := range tn.shape {
			w.u64(d)
		}
		w.u32(kind)
		w.u64(uint64(off))
		off = alignUp(off+int64(len(data)), g.align)
	}
	w.pad(g.align)
	for _, d := range datas {
		w.write(d)
		w.pad(g.align)
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	q := strings.TrimSuffix(path, ".gguf") + "-q8_0.gguf"
	if err := os.WriteFile(q, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return q
}

// q8 quantizes little-endian float32s to Q8_0 blocks.
func q8(f32 []byte) []byte {
	n := len(f32) / 4
	out := make([]byte, 0, n/32*34)
	for b := 0; b < n; b += 32 {
		var x [32]float32
		amax := float32(0)
		for j := range x {
			x[j] = math.Float32frombits(binary.LittleEndian.Uint32(f32[4*(b+j):]))
			amax = max(amax, float32(math.Abs(float64(x[j]))))
		}
		d := amax / 127
		out = binary.LittleEndian.AppendUint16(out, float16.Fromfloat32(d).Bits())
		for j := range x {
			q := 0.0
			if d != 0 {
				q = math.Round(float64(x[j] / d))
			}
			out = append(out, byte(int8(q)))
		}
	}
	return out
}

// tensorBytes returns the tensors of the GGUF file raw by name, with their bytes.
func tensorBytes(t testing.TB, raw []byte) map[string]TensorData {
	t.Helper()
	g, err := readGGUF(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	ts := make(map[string]TensorData, len(g.tensors))
	for _, tn := range g.tensors {
		off := g.dataBase + int64(tn.offset)
		ts[tn.name] = TensorData{Tensor: tensorOf(tn, off), Data: raw[off : off+tn.size]}
	}
	return ts
}

func TestSplitKeepsEveryByte(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  randmodel.TensorType
		q8   bool
	}{
		{"F32", randmodel.F32, false},
		{"F16", randmodel.F16, false},
		{"Q8_0", randmodel.F32, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := randmodel.Tiny()
			c.Type = tc.typ
			src := genModel(t, c, tc.q8)
			raw, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			full := tensorBytes(t, raw)
			dir := t.TempDir()
			m, err := SplitWith(src, dir, SplitOptions{PieceSize: 16 << 10})
			if err != nil {
				t.Fatal(err)
			}
			if want := 1 + c.Layers*c.Experts; len(m.Shards) != want {
				t.Fatalf("%d shards, want %d", len(m.Shards), want)
			}
			s, err := OpenStore(dir)
			if err != nil {
				t.Fatal(err)
			}

			// The dense shard holds every tensor of the source but the
			// experts', byte for byte.
			f, size, err := s.OpenDense(m.ID())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			denseRaw, err := io.ReadAll(f) // from the start
			if err != nil {
				t.Fatal(err)
			}
			if size != m.Dense().Size || int64(len(denseRaw)) != size {
				t.Fatalf("dense shard: size %d, read %d bytes, manifest says %d", size, len(denseRaw), m.Dense().Size)
			}
			dense := tensorBytes(t, denseRaw)
			if want := len(full) - 3*c.Layers; len(dense) != want {
				t.Errorf("dense shard has %d tensors, want %d", len(dense), want)
			}
			for name, d := range dense {
				w, ok := full[name]
				if !ok || strings.Contains(name, "_exps.") {
					t.Errorf("dense shard holds %s", name)
					continue
				}
				if d.TypeID != w.TypeID || !reflect.DeepEqual(d.Shape, w.Shape) || !bytes.Equal(d.Data, w.Data) {
					t.Errorf("dense %s differs from the source's", name)
				}
			}

			// Each expert shard holds its slice of the source's stacked
			// gate, up and down tensors.
			for l := range c.Layers {
				for e := range c.Experts {
					ts, shape, err := s.ReadExpert(m.ID(), l, e)
					if err != nil {
						t.Fatal(err)
					}
					if shape != m.Shape {
						t.Errorf("layer %d expert %d: shape %+v, want the manifest's %+v", l, e, shape, m.Shape)
					}
					for i, kind := range []string{"gate", "up", "down"} {
						stacked := full[fmt.Sprintf("blk.%d.ffn_%s_exps.weight", l, kind)]
						n := stacked.Size / int64(c.Experts)
						got := ts[i]
						if got.Name != expertTensorNames(l, e)[i] || got.TypeID != stacked.TypeID ||
							!reflect.DeepEqual(got.Shape, stacked.Shape[:2]) {
							t.Errorf("layer %d expert %d: tensor %d is %s %s %v, want a slice of %s",
								l, e, i, got.Name, got.Type, got.Shape, stacked.Name)
						}
						if !bytes.Equal(got.Data, stacked.Data[int64(e)*n:int64(e+1)*n]) {
							t.Fatalf("layer %d expert %d: %s bytes differ from the source's slice", l, e, kind)
						}
					}
				}
			}
		})
	}
}

func TestDenseShardKeepsMetadata(t *testing.T) {
	c := randmodel.Tiny()
	c.Words = []string{"▁the", "▁a"}
	src := genModel(t, c, false)
	dir := t.TempDir()
	m, err := Split(src, dir)
	if err != nil {
		t.Fatal(err)
	}
	decode := func(path string) (ggml.KV, []*ggml.Tensor) {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		g, err := ggml.Decode(f, -1)
		if err != nil {
			t.Fatal(err)
		}
		return g.KV(), g.Tensors().Items()
	}
	kvSrc, tsSrc := decode(src)
	kvDense, tsDense := decode(filepath.Join(dir, blobsDir, blobPrefix+m.Dense().Hash))
	delete(kvSrc, "general.parameter_count") // synthesized by ggml.Decode from the tensors
	delete(kvDense, "general.parameter_count")
	if !reflect.DeepEqual(kvSrc, kvDense) {
		t.Errorf("dense shard metadata differs:\n%v\n%v", kvSrc, kvDense)
	}
	for _, k := range []string{"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"} {
		if !reflect.DeepEqual(kvSrc[k], kvDense[k]) || kvDense[k] == nil {
			t.Errorf("%s differs or is missing", k)
		}
	}
	want := 0
	for _, ts := range tsSrc {
		if !strings.Contains(ts.Name, "_exps.") {
			want++
		}
	}
	if len(tsDense) != want || len(m.Dense().Tensors) != want {
		t.Errorf("dense shard has %d tensors (manifest %d), want %d", len(tsDense), len(m.Dense().Tensors), want)
	}
}

func TestModelIDIsStable(t *testing.T) {
	src := genModel(t, randmodel.Tiny(), false)
	a, err := Split(src, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Split(src, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() != b.ID() || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatalf("two splits of one file: IDs %s and %s", a.ID(), b.ID())
	}
	c := randmodel.Tiny()
	c.Seed = 2
	other, err := Split(genModel(t, c, false), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if other.ID() == a.ID() {
		t.Fatal("different weights, same model ID")
	}
}

func TestSplitRefusesWhatItCannotCut(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.gguf")
	os.WriteFile(garbage, []byte("GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), 0o644)
	notGGUF := filepath.Join(dir, "text.gguf")
	os.WriteFile(notGGUF, []byte("hello"), 0o644)
	moe := genModel(t, randmodel.Tiny(), false)
	data, _ := os.ReadFile(moe)
	truncated := filepath.Join(dir, "truncated.gguf")
	os.WriteFile(truncated, data[:len(data)-100], 0o644)

	for _, tc := range []struct {
		name, path string
		is         error
		msg        string
	}{
		{"dense model", genModel(t, randmodel.TinyDense(), false), ErrNotMoE, "expert_count"},
		{"not GGUF", notGGUF, nil, "not a GGUF file"},
		{"huge counts", garbage, nil, "too many"},
		{"truncated", truncated, nil, "beyond the end"},
		{"missing file", filepath.Join(dir, "nope.gguf"), os.ErrNotExist, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Split(tc.path, filepath.Join(dir, "out"))
			if err == nil {
				t.Fatal("split succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
}

func TestVerifyFindsCorruptAndMissingShards(t *testing.T) {
	src := genModel(t, randmodel.Tiny(), false)
	dir := t.TempDir()
	m, err := Split(src, dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Count(StatusOK) != len(m.Shards) {
		t.Fatalf("fresh split: %d ok of %d", r.Count(StatusOK), len(m.Shards))
	}

	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ReadExpert(m.ID(), 1, 2); err != nil { // cached as verified
		t.Fatal(err)
	}
	flipped, _ := m.Expert(1, 2)
	path := filepath.Join(dir, blobsDir, blobPrefix+flipped.Hash)
	data, _ := os.ReadFile(path)
	data[len(data)/2] ^= 1
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	gone, _ := m.Expert(0, 3)
	os.Remove(filepath.Join(dir, blobsDir, blobPrefix+gone.Hash))

	if _, _, err := s.ReadExpert(m.ID(), 1, 2); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reading a flipped expert: %v, want ErrCorrupt", err)
	}
	r, err = Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() || r.Count(StatusCorrupt) != 1 || r.Count(StatusMissing) != 1 || r.Count(StatusOK) != len(m.Shards)-2 {
		t.Fatalf("after a flip and a removal: %d ok, %d corrupt, %d missing", r.Count(StatusOK), r.Count(StatusCorrupt), r.Count(StatusMissing))
	}
	for _, st := range r.Shards {
		switch st.Status {
		case StatusCorrupt:
			if st.Shard.Hash != flipped.Hash {
				t.Errorf("corrupt: %s, want %s", st.Shard, flipped)
			}
		case StatusMissing:
			if st.Shard.Hash != gone.Hash {
				t.Errorf("missing: %s, want %s", st.Shard, gone)
			}
		}
	}

	// A damaged manifest file is reported, not fatal.
	os.WriteFile(filepath.Join(dir, manifestsDir, strings.Repeat("0", 64)+".json"), []byte("{"), 0o644)
	r, err = Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.BadManifests) != 1 {
		t.Errorf("%d bad manifests reported, want 1", len(r.BadManifests))
	}
}

func TestParseRejectsBadManifests(t *testing.T) {
	src := genModel(t, randmodel.Tiny(), false)
	good, err := SplitWith(src, t.TempDir(), SplitOptions{PieceSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(good.Bytes()); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(m *Manifest)) []byte {
		var m Manifest
		if err := json.Unmarshal(good.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		f(&m)
		raw, err := json.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	indented, _ := json.MarshalIndent(good, "", " ")
	for _, tc := range []struct {
		name string
		raw  []byte
		msg  string
	}{
		{"empty", nil, "EOF"},
		{"not JSON", []byte("hello"), "invalid"},
		{"indented", indented, "canonical"},
		{"unknown field", append(bytes.TrimSuffix(bytes.Clone(good.Bytes()), []byte("}")), []byte(`,"extra":1}`)...), "unknown field"},
		{"trailing data", append(bytes.Clone(good.Bytes()), ' '), "canonical"},
		{"too large", make([]byte, MaxManifestSize+1), "cap"},
		{"version", mutate(func(m *Manifest) { m.Version = 2 }), "version"},
		{"architecture", mutate(func(m *Manifest) { m.Architecture = "qwen2" }), "architecture"},
		{"experts used", mutate(func(m *Manifest) { m.Shape.ExpertsUsed = 5 }), "experts used"},
		{"piece size", mutate(func(m *Manifest) { m.PieceSize = 3000 }), "piece size"},
		{"no dense", mutate(func(m *Manifest) { m.Shards[0] = m.Shards[1] }), "dense"},
		{"missing expert", mutate(func(m *Manifest) { m.Shards = m.Shards[:len(m.Shards)-1] }), "shards, want"},
		{"expert twice", mutate(func(m *Manifest) { m.Shards[2] = m.Shards[1] }), "layer 0 expert 1"},
		{"two dense", mutate(func(m *Manifest) { m.Shards[1] = m.Shards[0] }), "layer 0 expert 0"},
		{"bad hash", mutate(func(m *Manifest) { m.Shards[3].Hash = strings.ToUpper(m.Shards[3].Hash) }), "hex SHA-256"},
		{"bad piece hash", mutate(func(m *Manifest) { m.Shards[3].Pieces[0] = "00" }), "piece 0"},
		{"piece count", mutate(func(m *Manifest) { m.Shards[3].Pieces = m.Shards[3].Pieces[1:] }), "piece hashes"},
		{"size", mutate(func(m *Manifest) { m.Shards[3].Size += 5 }), "piece hashes"},
		{"tensor shape", mutate(func(m *Manifest) { m.Shards[3].Tensors[0].Shape = []uint64{128, 64} }), "shape"},
		{"tensor type", mutate(func(m *Manifest) { m.Shards[3].Tensors[0].Type = "F16" }), "type"},
		{"unknown type", mutate(func(m *Manifest) { m.Shards[0].Tensors[0].TypeID = 99 }), "unknown tensor type"},
		{"tensor outside", mutate(func(m *Manifest) { m.Shards[0].Tensors[0].Offset = m.Shards[0].Size }), "outside"},
		{"tensor name", mutate(func(m *Manifest) { m.Shards[3].Tensors[1].Name = "blk.0.ffn_up.9.weight" }), "want blk.0.ffn_up.2.weight"},
		{"duplicate tensor", mutate(func(m *Manifest) { m.Shards[0].Tensors[1] = m.Shards[0].Tensors[0] }), "twice"},
		{"huge shape", mutate(func(m *Manifest) { m.Shards[0].Tensors[0].Shape = []uint64{1 << 40, 1 << 40} }), "out of range"},
		{"no name", mutate(func(m *Manifest) { m.Name = "" }), "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.raw)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v is not ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
}
