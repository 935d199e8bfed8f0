package llama

import (
	"errors"
	"fmt"
	"sync"
)

// Expert is the feed-forward network of one expert of one MoE layer:
// down(silu(gate·x) ⊙ up·x). It is read-only and safe for concurrent use.
type Expert struct {
	gate, up, down *matrix
	embedding, ff  int
}

// ErrNoExpert is wrapped when a model does not hold the weights of an expert.
var ErrNoExpert = errors.New("expert not held")

// ExpertTensor is one of an expert's three weight matrices as stored in a
// GGUF file: its GGML type and raw bytes, rows × cols with cols the fast axis.
type ExpertTensor struct {
	Type uint32
	Data []byte
}

// NewExpert builds an expert of a model shaped c from its gate and up
// (FeedForward × Embedding) and down (Embedding × FeedForward) tensors.
func NewExpert(c Config, gate, up, down ExpertTensor) (*Expert, error) {
	if c.Embedding <= 0 || c.FeedForward <= 0 {
		return nil, fmt.Errorf("bad expert shape %d×%d", c.FeedForward, c.Embedding)
	}
	g, err := newMatrix(gate.Type, c.FeedForward, c.Embedding, gate.Data)
	if err != nil {
		return nil, fmt.Errorf("gate: %w", err)
	}
	u, err := newMatrix(up.Type, c.FeedForward, c.Embedding, up.Data)
	if err != nil {
		return nil, fmt.Errorf("up: %w", err)
	}
	d, err := newMatrix(down.Type, c.Embedding, c.FeedForward, down.Data)
	if err != nil {
		return nil, fmt.Errorf("down: %w", err)
	}
	return &Expert{gate: g, up: u, down: d, embedding: c.Embedding, ff: c.FeedForward}, nil
}

// Expert returns expert e of layer l, or an error wrapping ErrNoExpert when
// the model was read without its experts.
func (m *Model) Expert(l, e int) (*Expert, error) {
	if l < 0 || l >= len(m.layers) || e < 0 || e >= m.Config.Experts {
		return nil, fmt.Errorf("no expert %d in layer %d of %s", e, l, m.Config.Name)
	}
	ly := &m.layers[l]
	if ly.gateExp == nil {
		return nil, fmt.Errorf("layer %d expert %d: %w", l, e, ErrNoExpert)
	}
	return &Expert{gate: ly.gateExp[e], up: ly.upExp[e], down: ly.downEx[e], embedding: m.Config.Embedding, ff: m.Config.FeedForward}, nil
}

// Embedding returns the length of the rows the expert takes and gives.
func (x *Expert) Embedding() int { return x.embedding }

// Bytes returns the size of the expert's weights as stored.
func (x *Expert) Bytes() int {
	return x.gate.rows*x.gate.rowBytes + x.up.rows*x.up.rowBytes + x.down.rows*x.down.rowBytes
}

// workspaces are the buffers of Apply calls made outside a State.
var workspaces = sync.Pool{New: func() any { return newWorkspace(defaultWorkers()) }}

// Apply sets out[i] = expert(in[i]) for every row; every row must have the
// model's embedding length. Each row's result is bitwise the same whatever
// other rows are in the call and however many cores compute it. Apply is
// safe for concurrent use; it uses all cores and starts and stops its own
// helper goroutines.
func (x *Expert) Apply(in, out [][]float32) error {
	if len(in) != len(out) {
		return fmt.Errorf("%d input rows, %d output rows", len(in), len(out))
	}
	for i := range in {
		if len(in[i]) != x.embedding || len(out[i]) != x.embedding {
			return fmt.Errorf("row %d has length %d/%d, want %d", i, len(in[i]), len(out[i]), x.embedding)
		}
	}
	if len(in) == 0 {
		return nil
	}
	w := workspaces.Get().(*workspace)
	defer workspaces.Put(w)
	w.team.start()
	defer w.team.stop()
	w.swiglu(x.gate, x.up, x.down, in, out)
	w.use(nil)
	return nil
}
