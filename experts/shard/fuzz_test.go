package shard

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
)

// fuzzModel is a small real MoE model (about 40 KB).
func fuzzModel(tb testing.TB) []byte {
	var b bytes.Buffer
	c := randmodel.Config{Embedding: 32, Layers: 2, FeedForward: 32, Heads: 2, Experts: 2, ExpertsUsed: 1, Type: randmodel.F32, Seed: 1}
	if err := randmodel.Write(&b, c); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// FuzzParse parses manifests as a Store does from a file or a peer: one
// is refused with ErrInvalid, or it is canonical (its bytes are its
// encoding, so a model has one ID), within every limit, and its tensors
// lie inside their shards.
func FuzzParse(f *testing.F) {
	src := f.TempDir() + "/model.gguf"
	if err := os.WriteFile(src, fuzzModel(f), 0o644); err != nil {
		f.Fatal(err)
	}
	m, err := SplitWith(src, f.TempDir(), SplitOptions{PieceSize: MinPieceSize})
	if err != nil {
		f.Fatal(err)
	}
	fuzzcorpus.Add(f, m.Bytes())
	indented, _ := json.MarshalIndent(m, "", " ")
	fuzzcorpus.Add(f, indented)
	fuzzcorpus.Add(f, bytes.Replace(m.Bytes(), []byte(`"version":1`), []byte(`"version":2`), 1))
	fuzzcorpus.Add(f, []byte(`{"version":1,"name":"x","architecture":"llama","shape":{"embedding":1,"layers":1024,"feed_forward":1,"experts":1024,"experts_used":1},"piece_size":4096,"shards":[]}`))
	fuzzcorpus.Add(f, []byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := Parse(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("refused with %v, want ErrInvalid", err)
			}
			return
		}
		again, err := json.Marshal(m)
		if err != nil || !bytes.Equal(again, raw) || !bytes.Equal(m.Bytes(), raw) {
			t.Fatalf("accepted a manifest that is not canonical")
		}
		if m2, err := Parse(again); err != nil || m2.ID() != m.ID() {
			t.Fatalf("parse again: %v", err)
		}
		s := m.Shape
		if len(m.Shards) != 1+s.Layers*s.Experts || m.Dense().Role != RoleDense {
			t.Fatalf("%d shards for %d×%d", len(m.Shards), s.Layers, s.Experts)
		}
		for l := range s.Layers {
			for e := range s.Experts {
				sh, ok := m.Expert(l, e)
				if !ok || sh.Layer != l || sh.Expert != e {
					t.Fatalf("expert %d/%d: %v %v", l, e, sh, ok)
				}
			}
		}
		for _, sh := range m.Shards {
			for _, tn := range sh.Tensors {
				if tn.Offset < 0 || tn.Size <= 0 || tn.Offset+tn.Size > sh.Size {
					t.Fatalf("tensor %s at %d+%d of a %d-byte shard", tn.Name, tn.Offset, tn.Size, sh.Size)
				}
			}
			for i := range sh.Pieces {
				off, n := m.Piece(sh, i)
				if off < 0 || n <= 0 || off+n > sh.Size {
					t.Fatalf("piece %d at %d+%d of a %d-byte shard", i, off, n, sh.Size)
				}
			}
		}
	})
}

// FuzzGGUF reads GGUF headers and plans a split as Split does: any bytes
// give an error or a header whose tensors lie inside the file, and a plan
// whose manifest has the header's shape; a small file never makes it
// allocate what it only claims.
func FuzzGGUF(f *testing.F) {
	model := fuzzModel(f)
	fuzzcorpus.Add(f, model)
	fuzzcorpus.Add(f, model[:1000])
	fuzzcorpus.Add(f, []byte("GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\x03\x00\x00\x00\x00"))
	fuzzcorpus.Add(f, []byte("GGUF\x02\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := readGGUF(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if g.kvStart > g.kvEnd || g.kvEnd > int64(len(data)) || g.align <= 0 || g.align&(g.align-1) != 0 {
			t.Fatalf("header sections %d..%d, alignment %d, of a %d-byte file", g.kvStart, g.kvEnd, g.align, len(data))
		}
		for _, tn := range g.tensors {
			if tn.size < 0 || g.dataBase+int64(tn.offset)+tn.size > int64(len(data)) {
				t.Fatalf("tensor %s (%d bytes at %d) beyond a %d-byte file", tn.name, tn.size, tn.offset, len(data))
			}
		}
		m, experts, keep, err := plan(g)
		if err != nil {
			return
		}
		if len(experts) != m.Shape.Layers || len(keep)+3*m.Shape.Layers != len(g.tensors) {
			t.Fatalf("plan of %d layers: %d expert triples, %d dense tensors, of %d", m.Shape.Layers, len(experts), len(keep), len(g.tensors))
		}
	})
}
