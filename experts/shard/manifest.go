package shard

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/ollama/ollama/fs/ggml"
)

// Version is the manifest format this package writes and reads.
const Version = 1

// Shard roles.
const (
	RoleDense  = "dense"
	RoleExpert = "expert"
)

// Limits on a manifest read from a file or a peer.
const (
	MaxManifestSize = 32 << 20 // bytes: pieces of ~500 GB of shards at 1 MiB
	MaxLayers       = 1024
	MaxExperts      = 1024
	MaxTensors      = 1 << 16 // in the dense shard
	MaxShardSize    = 1 << 40
	MaxPieces       = 1 << 20 // over all shards
	MaxName         = 256     // model and tensor names, in bytes

	MinPieceSize     = 4 << 10
	MaxPieceSize     = 64 << 20
	DefaultPieceSize = 1 << 20
)

// ErrInvalid is wrapped by every error about a malformed or inconsistent manifest.
var ErrInvalid = errors.New("invalid manifest")

// Manifest describes a model cut into shards. Get one from Parse, Split or a
// Store; its ID and Bytes are those of the exact stored form. It is read-only.
type Manifest struct {
	Version      int     `json:"version"`
	Name         string  `json:"name"`
	Architecture string  `json:"architecture"`
	Shape        Shape   `json:"shape"`
	PieceSize    int64   `json:"piece_size"`
	Shards       []Shard `json:"shards"` // the dense shard, then experts by layer, then expert

	raw []byte
	id  string
}

// Shape is the part of a model's shape that shards depend on.
type Shape struct {
	Embedding   int `json:"embedding"`
	Layers      int `json:"layers"`
	FeedForward int `json:"feed_forward"`
	Experts     int `json:"experts"`
	ExpertsUsed int `json:"experts_used"`
}

// Shard is one file of a model.
type Shard struct {
	Hash    string   `json:"sha256"` // hex SHA-256 of the file
	Size    int64    `json:"size"`
	Role    string   `json:"role"`   // RoleDense or RoleExpert
	Layer   int      `json:"layer"`  // expert shards; 0 for the dense shard
	Expert  int      `json:"expert"` // expert shards; 0 for the dense shard
	Tensors []Tensor `json:"tensors"`
	Pieces  []string `json:"pieces"` // hex SHA-256 of each PieceSize bytes of the file; the last may be short
}

// Tensor is one tensor inside a shard file.
type Tensor struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"`    // GGML type name, e.g. "Q8_0"
	TypeID uint32   `json:"type_id"` // GGML type number
	Shape  []uint64 `json:"shape"`   // GGUF order, innermost dimension first
	Offset int64    `json:"offset"`  // from the start of the shard file
	Size   int64    `json:"size"`
}

// ID returns the model ID: the hex SHA-256 of the manifest's bytes.
func (m *Manifest) ID() string { return m.id }

// Bytes returns the manifest's exact stored bytes. Do not modify them.
func (m *Manifest) Bytes() []byte { return m.raw }

// Dense returns the dense shard.
func (m *Manifest) Dense() Shard { return m.Shards[0] }

// Expert returns the shard of expert e of layer l.
func (m *Manifest) Expert(l, e int) (Shard, bool) {
	if l < 0 || l >= m.Shape.Layers || e < 0 || e >= m.Shape.Experts {
		return Shard{}, false
	}
	return m.Shards[1+l*m.Shape.Experts+e], true
}

// Size returns the total size of the model's shards.
func (m *Manifest) Size() int64 {
	var n int64
	for _, s := range m.Shards {
		n += s.Size
	}
	return n
}

// Piece returns the offset and length of piece i of a shard in m.
func (m *Manifest) Piece(s Shard, i int) (off, n int64) {
	off = int64(i) * m.PieceSize
	return off, min(m.PieceSize, s.Size-off)
}

// Tensor returns the tensor of s named name.
func (s Shard) Tensor(name string) (Tensor, bool) {
	for _, t := range s.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// String names the shard for people: "dense" or "layer 3 expert 5".
func (s Shard) String() string {
	if s.Role == RoleExpert {
		return fmt.Sprintf("layer %d expert %d", s.Layer, s.Expert)
	}
	return s.Role
}

// expertTensorNames returns the names of the gate, up and down tensors of
// expert e of layer l inside its shard.
func expertTensorNames(l, e int) [3]string {
	return [3]string{
		fmt.Sprintf("blk.%d.ffn_gate.%d.weight", l, e),
		fmt.Sprintf("blk.%d.ffn_up.%d.weight", l, e),
		fmt.Sprintf("blk.%d.ffn_down.%d.weight", l, e),
	}
}

// encode returns m's canonical bytes and sets its ID. It validates m first.
func (m *Manifest) encode() error {
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	p, err := Parse(raw)
	if err != nil {
		return err
	}
	*m = *p
	return nil
}

// Parse reads and validates a manifest from its stored bytes, which must be
// exactly what json.Marshal writes for it (so that a model has one ID).
func Parse(raw []byte) (*Manifest, error) {
	if len(raw) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte cap", ErrInvalid, len(raw), MaxManifestSize)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if m.Version != Version {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrInvalid, m.Version, Version)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	again, err := json.Marshal(&m)
	if err != nil || !bytes.Equal(again, raw) {
		return nil, fmt.Errorf("%w: not in canonical form (compact JSON, fields in order, nothing extra)", ErrInvalid)
	}
	sum := sha256.Sum256(raw)
	m.raw = bytes.Clone(raw)
	m.id = hex.EncodeToString(sum[:])
	return &m, nil
}

var hashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidHash reports whether h is a lowercase hex SHA-256.
func ValidHash(h string) bool { return len(h) == 64 && hashRE.MatchString(h) }

// Architectures are the model architectures whose experts Split can cut
// out: llama (Mixtral-style), qwen2moe and qwen3moe. Their routed experts
// are ffn_{gate,up,down}_exps; everything else, a qwen2moe's shared expert
// included, stays in the dense shard, since every token needs it.
var Architectures = map[string]bool{"llama": true, "qwen2moe": true, "qwen3moe": true}

func (m *Manifest) validate() error {
	s := m.Shape
	switch {
	case m.Name == "" || len(m.Name) > MaxName:
		return fmt.Errorf("model name must be 1..%d bytes", MaxName)
	case !Architectures[m.Architecture]:
		return fmt.Errorf("architecture %q (not llama, qwen2moe or qwen3moe)", m.Architecture)
	case s.Embedding <= 0 || s.Embedding > 1<<20 || s.FeedForward <= 0 || s.FeedForward > 1<<22:
		return fmt.Errorf("bad shape: embedding %d, feed-forward %d", s.Embedding, s.FeedForward)
	case s.Layers <= 0 || s.Layers > MaxLayers:
		return fmt.Errorf("%d layers (1..%d)", s.Layers, MaxLayers)
	case s.Experts <= 0 || s.Experts > MaxExperts:
		return fmt.Errorf("%d experts (1..%d)", s.Experts, MaxExperts)
	case s.ExpertsUsed <= 0 || s.ExpertsUsed > s.Experts:
		return fmt.Errorf("%d of %d experts used", s.ExpertsUsed, s.Experts)
	case m.PieceSize < MinPieceSize || m.PieceSize > MaxPieceSize || m.PieceSize&(m.PieceSize-1) != 0:
		return fmt.Errorf("piece size %d is not a power of two in %d..%d", m.PieceSize, MinPieceSize, MaxPieceSize)
	}
	if want := 1 + s.Layers*s.Experts; len(m.Shards) != want {
		return fmt.Errorf("%d shards, want %d (one dense and one per layer and expert)", len(m.Shards), want)
	}
	pieces := 0
	for i, sh := range m.Shards {
		if err := m.validateShard(i, sh); err != nil {
			return fmt.Errorf("shard %d (%s): %w", i, sh.String(), err)
		}
		pieces += len(sh.Pieces)
		if pieces > MaxPieces {
			return fmt.Errorf("more than %d pieces", MaxPieces)
		}
	}
	return nil
}

func (m *Manifest) validateShard(i int, sh Shard) error {
	if !ValidHash(sh.Hash) {
		return fmt.Errorf("hash %.80q is not a lowercase hex SHA-256", sh.Hash)
	}
	if sh.Size <= 0 || sh.Size > MaxShardSize {
		return fmt.Errorf("size %d not in 1..%d", sh.Size, int64(MaxShardSize))
	}
	if want := (sh.Size + m.PieceSize - 1) / m.PieceSize; int64(len(sh.Pieces)) != want {
		return fmt.Errorf("%d piece hashes for %d bytes in pieces of %d, want %d", len(sh.Pieces), sh.Size, m.PieceSize, want)
	}
	for j, p := range sh.Pieces {
		if !ValidHash(p) {
			return fmt.Errorf("piece %d hash %.80q is not a lowercase hex SHA-256", j, p)
		}
	}
	if i == 0 {
		if sh.Role != RoleDense || sh.Layer != 0 || sh.Expert != 0 {
			return fmt.Errorf("the first shard must be the dense one (role %q, layer 0, expert 0)", RoleDense)
		}
		if len(sh.Tensors) == 0 || len(sh.Tensors) > MaxTensors {
			return fmt.Errorf("%d tensors (1..%d)", len(sh.Tensors), MaxTensors)
		}
		names := make(map[string]bool, len(sh.Tensors))
		for _, t := range sh.Tensors {
			if err := validTensor(t, sh.Size); err != nil {
				return err
			}
			if names[t.Name] {
				return fmt.Errorf("tensor %s listed twice", t.Name)
			}
			names[t.Name] = true
		}
		return nil
	}
	l, e := (i-1)/m.Shape.Experts, (i-1)%m.Shape.Experts
	if sh.Role != RoleExpert || sh.Layer != l || sh.Expert != e {
		return fmt.Errorf("shard %d must be layer %d expert %d (role %q), got role %q layer %d expert %d",
			i, l, e, RoleExpert, sh.Role, sh.Layer, sh.Expert)
	}
	if len(sh.Tensors) != 3 {
		return fmt.Errorf("%d tensors, want gate, up and down", len(sh.Tensors))
	}
	emb, ff := uint64(m.Shape.Embedding), uint64(m.Shape.FeedForward)
	shapes := [3][]uint64{{emb, ff}, {emb, ff}, {ff, emb}}
	var end int64
	for j, name := range expertTensorNames(l, e) {
		t := sh.Tensors[j]
		if t.Name != name {
			return fmt.Errorf("tensor %d is %.80q, want %s", j, t.Name, name)
		}
		if fmt.Sprint(t.Shape) != fmt.Sprint(shapes[j]) {
			return fmt.Errorf("tensor %s has shape %v, want %v", name, t.Shape, shapes[j])
		}
		if err := validTensor(t, sh.Size); err != nil {
			return err
		}
		if t.Offset != end {
			return fmt.Errorf("tensor %s at offset %d, want %d (gate, up, down back to back)", name, t.Offset, end)
		}
		end += t.Size
	}
	if end != sh.Size {
		return fmt.Errorf("tensors hold %d bytes of a %d-byte shard", end, sh.Size)
	}
	return nil
}

// validTensor checks t's type, shape and size, and that it lies inside a file of size bytes.
func validTensor(t Tensor, size int64) error {
	if t.Name == "" || len(t.Name) > MaxName {
		return fmt.Errorf("tensor name %.80q must be 1..%d bytes", t.Name, MaxName)
	}
	want, err := tensorSize(t.TypeID, t.Shape)
	if err != nil {
		return fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	if name := ggml.TensorType(t.TypeID).String(); t.Type != name {
		return fmt.Errorf("tensor %s: type %.32q does not match type id %d (%s)", t.Name, t.Type, t.TypeID, name)
	}
	if t.Size != want {
		return fmt.Errorf("tensor %s: size %d, want %d for %s %v", t.Name, t.Size, want, t.Type, t.Shape)
	}
	if t.Offset < 0 || t.Offset > size || t.Size > size-t.Offset {
		return fmt.Errorf("tensor %s: bytes %d+%d outside the %d-byte shard", t.Name, t.Offset, t.Size, size)
	}
	return nil
}

// tensorSize returns the bytes of a GGML tensor of type typ and GGUF shape,
// refusing unknown types, shapes that do not fill whole blocks and sizes
// beyond MaxShardSize.
func tensorSize(typ uint32, shape []uint64) (int64, error) {
	tt := ggml.TensorType(typ)
	block, bsize := tt.BlockSize(), tt.TypeSize()
	if bsize == 0 || tt.String() == "unknown" {
		return 0, fmt.Errorf("unknown tensor type %d", typ)
	}
	if len(shape) == 0 || len(shape) > 4 {
		return 0, fmt.Errorf("%d dimensions (1..4)", len(shape))
	}
	if shape[0]%block != 0 {
		return 0, fmt.Errorf("row of %d elements is not a whole number of %s blocks of %d", shape[0], tt, block)
	}
	n := uint64(1)
	for _, d := range shape {
		if d == 0 || d > MaxShardSize || n > MaxShardSize/d {
			return 0, fmt.Errorf("shape %v out of range", shape)
		}
		n *= d
	}
	if n/block > MaxShardSize/bsize {
		return 0, fmt.Errorf("shape %v out of range", shape)
	}
	return int64(n / block * bsize), nil
}

// typeName returns GGML's name of a tensor type.
func typeName(k uint32) string { return ggml.TensorType(k).String() }
