package shard

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// SplitOptions change how Split cuts a model.
type SplitOptions struct {
	// PieceSize is the unit of verification and resumption of a fetch, a
	// power of two in MinPieceSize..MaxPieceSize; 0 means DefaultPieceSize.
	PieceSize int64
}

// ErrNotMoE is wrapped when Split is given a model it cannot cut: not of an
// architecture in Architectures, or without experts.
var ErrNotMoE = errors.New("not a Mixture-of-Experts model of a known architecture")

// Split cuts the MoE GGUF file src (an architecture of Architectures) into a dense shard and
// one shard per (layer, expert), stores them and their manifest in the store
// directory outDir (created if missing), and returns the manifest.
func Split(src, outDir string) (*Manifest, error) {
	return SplitWith(src, outDir, SplitOptions{})
}

// SplitWith is Split with options.
func SplitWith(src, outDir string, opts SplitOptions) (*Manifest, error) {
	if opts.PieceSize == 0 {
		opts.PieceSize = DefaultPieceSize
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	g, err := readGGUF(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("split %s: %w", src, err)
	}
	m, experts, keep, err := plan(g)
	if err != nil {
		return nil, fmt.Errorf("split %s: %w", src, err)
	}
	m.PieceSize = opts.PieceSize
	s, err := OpenStore(outDir)
	if err != nil {
		return nil, err
	}

	// The dense shard.
	b, err := s.newBlob(m.PieceSize)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(b, 1<<20)
	tensors, err := writeDense(bw, f, g, keep)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		b.abort()
		return nil, fmt.Errorf("split %s: write dense shard: %w", src, err)
	}
	dense := Shard{Role: RoleDense, Tensors: tensors}
	if dense.Hash, dense.Size, dense.Pieces, err = b.commit(); err != nil {
		return nil, fmt.Errorf("split %s: %w", src, err)
	}
	m.Shards = append(m.Shards, dense)

	// One shard per expert: its slice of each stacked tensor.
	E := int64(m.Shape.Experts)
	for l := range m.Shape.Layers {
		for e := range m.Shape.Experts {
			b, err := s.newBlob(m.PieceSize)
			if err != nil {
				return nil, err
			}
			sh := Shard{Role: RoleExpert, Layer: l, Expert: e}
			var off int64
			for i, name := range expertTensorNames(l, e) {
				t := experts[l][i]
				n := t.size / E
				shape := []uint64{t.shape[0], t.shape[1]}
				_, err = io.Copy(b, io.NewSectionReader(f, g.dataBase+int64(t.offset)+int64(e)*n, n))
				if err != nil {
					break
				}
				sh.Tensors = append(sh.Tensors, Tensor{Name: name, Type: typeName(t.kind), TypeID: t.kind, Shape: shape, Offset: off, Size: n})
				off += n
			}
			if err != nil {
				b.abort()
				return nil, fmt.Errorf("split %s: write %s: %w", src, sh, err)
			}
			if sh.Hash, sh.Size, sh.Pieces, err = b.commit(); err != nil {
				return nil, fmt.Errorf("split %s: %w", src, err)
			}
			m.Shards = append(m.Shards, sh)
		}
	}
	if err := m.encode(); err != nil {
		return nil, fmt.Errorf("split %s: %w", src, err)
	}
	if _, err := s.AddManifest(m.Bytes()); err != nil {
		return nil, err
	}
	return m, nil
}

// plan checks that g is a llama MoE model and returns its manifest (without
// shards), its stacked expert tensors per layer (gate, up, down) and the
// tensors of the dense shard.
func plan(g *ggufFile) (*Manifest, [][3]ggufTensor, []ggufTensor, error) {
	arch := g.string("general.architecture")
	if !Architectures[arch] {
		return nil, nil, nil, fmt.Errorf("architecture %q: %w", arch, ErrNotMoE)
	}
	get := func(key string) int {
		v, ok := g.uint(arch + "." + key)
		if !ok || v > 1<<30 {
			return 0
		}
		return int(v)
	}
	expertFF := get("feed_forward_length")
	if arch != "llama" {
		// The Qwen MoE families give their routed experts' size apart
		// (llama.cpp's default for qwen2moe: feed_forward_length/used).
		if expertFF = get("expert_feed_forward_length"); expertFF == 0 && get("expert_used_count") > 0 {
			expertFF = get("feed_forward_length") / get("expert_used_count")
		}
	}
	m := &Manifest{
		Version:      Version,
		Name:         g.string("general.name"),
		Architecture: arch,
		Shape: Shape{
			Embedding:   get("embedding_length"),
			Layers:      get("block_count"),
			FeedForward: expertFF,
			Experts:     get("expert_count"),
			ExpertsUsed: get("expert_used_count"),
		},
	}
	m.Name = strings.ToValidUTF8(m.Name, "?")
	if len(m.Name) > MaxName {
		m.Name = strings.ToValidUTF8(m.Name[:MaxName], "")
	}
	if m.Name == "" {
		m.Name = "llama"
	}
	sh := m.Shape
	if sh.Experts == 0 {
		return nil, nil, nil, fmt.Errorf("no %s.expert_count: %w", arch, ErrNotMoE)
	}
	if sh.Embedding == 0 || sh.Layers == 0 || sh.FeedForward == 0 || sh.ExpertsUsed == 0 ||
		sh.Layers > MaxLayers || sh.Experts > MaxExperts {
		return nil, nil, nil, fmt.Errorf("bad shape: embedding %d, %d layers, feed-forward %d, %d of %d experts used",
			sh.Embedding, sh.Layers, sh.FeedForward, sh.ExpertsUsed, sh.Experts)
	}
	byName := make(map[string]ggufTensor, len(g.tensors))
	for _, t := range g.tensors {
		if _, dup := byName[t.name]; dup {
			return nil, nil, nil, fmt.Errorf("tensor %s appears twice", t.name)
		}
		byName[t.name] = t
	}
	emb, ff, E := uint64(sh.Embedding), uint64(sh.FeedForward), uint64(sh.Experts)
	experts := make([][3]ggufTensor, sh.Layers)
	isExpert := make(map[string]bool)
	for l := range sh.Layers {
		for i, kind := range []string{"gate", "up", "down"} {
			name := fmt.Sprintf("blk.%d.ffn_%s_exps.weight", l, kind)
			t, ok := byName[name]
			if !ok {
				return nil, nil, nil, fmt.Errorf("missing tensor %s: %w", name, ErrNotMoE)
			}
			want := []uint64{emb, ff, E}
			if kind == "down" {
				want = []uint64{ff, emb, E}
			}
			if fmt.Sprint(t.shape) != fmt.Sprint(want) {
				return nil, nil, nil, fmt.Errorf("tensor %s has shape %v, want %v", name, t.shape, want)
			}
			experts[l][i] = t
			isExpert[name] = true
		}
	}
	var keep []ggufTensor
	for _, t := range g.tensors {
		if isExpert[t.name] {
			continue
		}
		if strings.Contains(t.name, "_exps.") {
			return nil, nil, nil, fmt.Errorf("unexpected expert tensor %s", t.name)
		}
		keep = append(keep, t)
	}
	return m, experts, keep, nil
}
