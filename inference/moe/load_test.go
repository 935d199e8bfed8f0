package moe

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// storeExperts runs experts loaded from a store.
type storeExperts map[[2]int]*llama.Expert

func (s storeExperts) Apply(_ context.Context, l, e int, in, out [][]float32) error {
	x, ok := s[[2]int{l, e}]
	if !ok {
		return fmt.Errorf("no expert %d/%d", l, e)
	}
	return x.Apply(in, out)
}

// TestShardsLoadBitwiseEqual: a model split into shards and loaded back, the
// dense shard plus every expert shard, computes exactly what the whole model
// computes, expert by expert and over a forward pass.
func TestShardsLoadBitwiseEqual(t *testing.T) {
	for _, typ := range []randmodel.TensorType{randmodel.F32, randmodel.F16} {
		t.Run(typ.String(), func(t *testing.T) {
			c := randmodel.Tiny()
			c.Type = typ
			src := filepath.Join(t.TempDir(), "model.gguf")
			if err := randmodel.WriteFile(src, c); err != nil {
				t.Fatal(err)
			}
			full, err := llama.Load(src)
			if err != nil {
				t.Fatal(err)
			}
			defer full.Close()
			dir := t.TempDir()
			m, err := shard.SplitWith(src, dir, shard.SplitOptions{PieceSize: 16 << 10})
			if err != nil {
				t.Fatal(err)
			}
			s, err := shard.OpenStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			dense, err := LoadDense(s, m.ID())
			if err != nil {
				t.Fatal(err)
			}
			defer dense.Close()
			if dense.Config != full.Config {
				t.Errorf("dense config %+v, want %+v", dense.Config, full.Config)
			}
			if !reflect.DeepEqual(dense.Vocab, full.Vocab) {
				t.Error("dense vocabulary differs from the source's")
			}
			if _, err := dense.Expert(0, 0); !errors.Is(err, llama.ErrNoExpert) {
				t.Errorf("dense shard holds experts: %v", err)
			}

			rng := rand.New(rand.NewPCG(1, 2))
			rows := func(n int) [][]float32 {
				r := make([][]float32, n)
				for i := range r {
					r[i] = make([]float32, c.Embedding)
					for j := range r[i] {
						r[i][j] = float32(rng.NormFloat64())
					}
				}
				return r
			}
			experts := make(storeExperts)
			for l := range c.Layers {
				for e := range c.Experts {
					x, err := LoadExpert(s, m.ID(), l, e)
					if err != nil {
						t.Fatal(err)
					}
					experts[[2]int{l, e}] = x
					want, err := full.Expert(l, e)
					if err != nil {
						t.Fatal(err)
					}
					in := rows(5)
					got, exp := rows(5), rows(5)
					if err := x.Apply(in, got); err != nil {
						t.Fatal(err)
					}
					if err := want.Apply(in, exp); err != nil {
						t.Fatal(err)
					}
					if !bitsEqual(got, exp) {
						t.Fatalf("layer %d expert %d: output differs from the full model's", l, e)
					}
				}
			}

			// The whole forward pass, dense shard plus expert shards, equals the full model's.
			ctx := context.Background()
			a, b := full.NewState(64, nil), dense.NewState(64, experts)
			for _, toks := range [][]int{{1, 72, 101, 108}, {108, 111}} {
				la, err := a.Forward(ctx, toks)
				if err != nil {
					t.Fatal(err)
				}
				lb, err := b.Forward(ctx, toks)
				if err != nil {
					t.Fatal(err)
				}
				if !bitsEqual([][]float32{la}, [][]float32{lb}) {
					t.Fatal("logits of dense shard + expert shards differ from the full model's")
				}
			}
		})
	}
}

// TestLoadKeepsStoreErrors: what the store refuses, loading refuses with the
// store's sentinel.
func TestLoadKeepsStoreErrors(t *testing.T) {
	src := filepath.Join(t.TempDir(), "model.gguf")
	if err := randmodel.WriteFile(src, randmodel.Tiny()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	m, err := shard.Split(src, dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := shard.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	unknown := fmt.Sprintf("%064x", 0)
	if _, err := LoadDense(s, unknown); !errors.Is(err, shard.ErrNotFound) {
		t.Errorf("dense shard of an unknown model: %v, want ErrNotFound", err)
	}
	if _, err := LoadExpert(s, m.ID(), 0, 99); !errors.Is(err, shard.ErrNotFound) {
		t.Errorf("expert 99: %v, want ErrNotFound", err)
	}
	sh, _ := m.Expert(1, 2)
	path := filepath.Join(dir, "blobs", "sha256-"+sh.Hash)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadExpert(s, m.ID(), 1, 2); !errors.Is(err, shard.ErrCorrupt) {
		t.Errorf("a flipped expert: %v, want ErrCorrupt", err)
	}
}

func bitsEqual(a, b [][]float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
				return false
			}
		}
	}
	return true
}
