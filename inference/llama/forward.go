package llama

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
)

// Experts applies the FFN experts of a Mixture-of-Experts layer. The forward
// pass groups the rows (hidden states after the FFN norm) routed to one expert
// and asks for them in one call: out[i] must receive expert(in[i]), where
// len(out[i]) == len(in[i]) is the embedding size. Implementations may run the
// expert anywhere; Local runs it in this process. Calls for different experts
// of one layer may be concurrent.
type Experts interface {
	Apply(ctx context.Context, layer, expert int, in, out [][]float32) error
}

// Local returns the Experts that run m's own expert weights.
func (m *Model) Local() Experts { return localExperts{m} }

type localExperts struct{ m *Model }

func (l localExperts) Apply(_ context.Context, layer, expert int, in, out [][]float32) error {
	e, err := l.m.Expert(layer, expert)
	if err != nil {
		return err
	}
	return e.Apply(in, out)
}

// swiglu sets out = down(silu(gate·in) * up·in).
func swiglu(gate, up, down *matrix, in, out [][]float32, ff int) {
	g := make2(len(in), ff)
	u := make2(len(in), ff)
	gate.mul(g, in)
	up.mul(u, in)
	for b := range g {
		for i, x := range g[b] {
			g[b][i] = x / (1 + float32(math.Exp(float64(-x)))) * u[b][i]
		}
	}
	down.mul(out, g)
}

func make2(n, m int) [][]float32 {
	back := make([]float32, n*m)
	rows := make([][]float32, n)
	for i := range rows {
		rows[i] = back[i*m : (i+1)*m]
	}
	return rows
}

// State is one sequence being generated: its KV cache and position. It is not
// safe for concurrent use.
type State struct {
	m       *Model
	experts Experts
	ctxLen  int
	k, v    [][]float32 // per layer: ctxLen × kvDim, rounded to F16 as llama.cpp's cache
	pos     int
}

// BatchSize is the largest number of prompt tokens run through the model at once.
const BatchSize = 64

// NewState returns an empty sequence of at most ctxLen tokens (0: the model's
// context length). experts nil means m.Local().
func (m *Model) NewState(ctxLen int, experts Experts) *State {
	if ctxLen <= 0 || ctxLen > m.Config.ContextLength {
		ctxLen = m.Config.ContextLength
	}
	if experts == nil {
		experts = m.Local()
	}
	kvDim := m.Config.KVHeads * m.Config.HeadDim
	s := &State{m: m, experts: experts, ctxLen: ctxLen, k: make([][]float32, m.Config.Layers), v: make([][]float32, m.Config.Layers)}
	for i := range s.k {
		s.k[i] = make([]float32, ctxLen*kvDim)
		s.v[i] = make([]float32, ctxLen*kvDim)
	}
	return s
}

// Pos returns the number of tokens in the sequence.
func (s *State) Pos() int { return s.pos }

// Forward appends tokens to the sequence and returns the logits that follow
// the last of them.
func (s *State) Forward(ctx context.Context, tokens []int) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("no tokens")
	}
	if s.pos+len(tokens) > s.ctxLen {
		return nil, fmt.Errorf("%d tokens exceed the context of %d", s.pos+len(tokens), s.ctxLen)
	}
	for _, t := range tokens {
		if t < 0 || t >= s.m.Config.Vocab {
			return nil, fmt.Errorf("token %d outside the vocabulary", t)
		}
	}
	var logits []float32
	for len(tokens) > 0 {
		n := min(len(tokens), BatchSize)
		var err error
		logits, err = s.batch(ctx, tokens[:n])
		if err != nil {
			return nil, err
		}
		tokens = tokens[n:]
	}
	return logits, nil
}

// batch runs tokens at positions s.pos... and returns the last one's logits.
func (s *State) batch(ctx context.Context, tokens []int) ([]float32, error) {
	m, c := s.m, s.m.Config
	n := len(tokens)
	kvDim := c.KVHeads * c.HeadDim
	x := make2(n, c.Embedding)
	for b, t := range tokens {
		m.embed.row(t, x[b])
	}
	h := make2(n, c.Embedding)
	q := make2(n, c.Embedding)
	k := make2(n, kvDim)
	v := make2(n, kvDim)
	att := make2(n, c.Embedding)
	o := make2(n, c.Embedding)
	for li := range m.layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l := &m.layers[li]
		for b := range x {
			rmsNorm(h[b], x[b], l.attnNorm, c.NormEpsilon)
		}
		l.wq.mul(q, h)
		l.wk.mul(k, h)
		l.wv.mul(v, h)
		for b := range n {
			pos := s.pos + b
			rope(q[b], c.Heads, c.HeadDim, c.RopeDim, pos, c.RopeBase)
			rope(k[b], c.KVHeads, c.HeadDim, c.RopeDim, pos, c.RopeBase)
			roundF16(k[b])
			roundF16(v[b])
			copy(s.k[li][pos*kvDim:], k[b])
			copy(s.v[li][pos*kvDim:], v[b])
		}
		s.attention(li, q, att)
		l.wo.mul(o, att)
		for b := range x {
			for i := range x[b] {
				x[b][i] += o[b][i]
			}
			rmsNorm(h[b], x[b], l.ffnNorm, c.NormEpsilon)
		}
		if c.Experts == 0 {
			swiglu(l.gate, l.up, l.down, h, o, c.FeedForward)
		} else if err := s.moe(ctx, li, h, o); err != nil {
			return nil, err
		}
		for b := range x {
			for i := range x[b] {
				x[b][i] += o[b][i]
			}
		}
	}
	s.pos += n
	last := x[n-1]
	rmsNorm(last, last, m.outputNorm, c.NormEpsilon)
	logits := make([]float32, c.Vocab)
	m.output.mul([][]float32{logits}, [][]float32{last})
	return logits, nil
}

// attention computes causal grouped-query attention of the batch's queries
// (at positions s.pos...) over the cache, into out.
func (s *State) attention(li int, q, out [][]float32) {
	c := s.m.Config
	kvDim := c.KVHeads * c.HeadDim
	group := c.Heads / c.KVHeads
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	qh := make([]float32, c.HeadDim)
	for b := range q {
		end := s.pos + b + 1
		for hd := range c.Heads {
			kvh := hd / group
			copy(qh, q[b][hd*c.HeadDim:(hd+1)*c.HeadDim])
			roundF16(qh) // llama.cpp multiplies the F16 cache by a query rounded to F16
			// Online softmax with an F16 accumulator, as llama.cpp's CPU
			// flash attention (which Ollama enables) does with an F16 cache.
			acc := out[b][hd*c.HeadDim : (hd+1)*c.HeadDim]
			clear(acc)
			mx := float32(math.Inf(-1))
			var sum float32
			for p := range end {
				sc := dot(qh, s.k[li][p*kvDim+kvh*c.HeadDim:][:c.HeadDim]) * scale
				ms, vs := float32(1), float32(1)
				if sc > mx {
					ms = float32(math.Exp(float64(mx - sc)))
					mx = sc
					for i := range acc {
						acc[i] = f16table[f32to16(acc[i]*ms)]
					}
				} else {
					vs = float32(math.Exp(float64(sc - mx)))
				}
				vr := s.v[li][p*kvDim+kvh*c.HeadDim:][:c.HeadDim]
				for i := range acc {
					acc[i] = f16table[f32to16(acc[i]+vr[i]*vs)]
				}
				sum = sum*ms + vs
			}
			inv := 1 / sum
			for i := range acc {
				acc[i] *= inv
			}
		}
	}
}

// moe runs the Mixture-of-Experts FFN of layer li on rows h into out: the
// router's softmax over all experts, the top ExpertsUsed of them, their
// weights renormalized to sum to one (as llama.cpp for Mixtral).
func (s *State) moe(ctx context.Context, li int, h, out [][]float32) error {
	c := s.m.Config
	l := &s.m.layers[li]
	logits := make2(len(h), c.Experts)
	l.gateInp.mul(logits, h)
	type route struct {
		row    int
		weight float32
	}
	routes := make([][]route, c.Experts)
	idx := make([]int, c.Experts)
	for b, lg := range logits {
		softmax(lg)
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(i, j int) bool { return lg[idx[i]] > lg[idx[j]] })
		var sum float32
		for _, e := range idx[:c.ExpertsUsed] {
			sum += lg[e]
		}
		for _, e := range idx[:c.ExpertsUsed] {
			routes[e] = append(routes[e], route{b, lg[e] / sum})
		}
		clear(out[b])
	}
	// Ask for every chosen expert; experts held elsewhere are asked all at
	// once, local ones in turn (each already uses every core). The outputs are
	// summed in expert order whatever order the answers come in, so the
	// result does not depend on where the experts ran.
	res := make([][][]float32, c.Experts)
	errs := make([]error, c.Experts)
	_, local := s.experts.(localExperts)
	var wg sync.WaitGroup
	for e, rs := range routes {
		if len(rs) == 0 {
			continue
		}
		in := make([][]float32, len(rs))
		for i, r := range rs {
			in[i] = h[r.row]
		}
		res[e] = make2(len(rs), c.Embedding)
		if local {
			errs[e] = s.experts.Apply(ctx, li, e, in, res[e])
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[e] = s.experts.Apply(ctx, li, e, in, res[e])
		}()
	}
	wg.Wait()
	for e, rs := range routes {
		if errs[e] != nil {
			return fmt.Errorf("layer %d expert %d: %w", li, e, errs[e])
		}
		for i, r := range rs {
			for j, y := range res[e][i] {
				out[r.row][j] += r.weight * y
			}
		}
	}
	return nil
}

// rmsNorm sets dst = x / rms(x) * w (dst may be x).
func rmsNorm(dst, x, w []float32, eps float32) {
	var sum float64
	for _, v := range x {
		sum += float64(v) * float64(v)
	}
	scale := float32(1 / math.Sqrt(sum/float64(len(x))+float64(eps)))
	for i, v := range x {
		dst[i] = v * scale * w[i]
	}
}

// rope rotates adjacent pairs (2i, 2i+1) of the first ropeDim dimensions of
// each head by pos·base^(-2i/ropeDim): llama.cpp's "normal" RoPE, which it
// uses for the llama architecture.
func rope(x []float32, heads, headDim, ropeDim, pos int, base float32) {
	thetaScale := float32(math.Pow(float64(base), -2/float64(ropeDim)))
	for h := range heads {
		v := x[h*headDim : h*headDim+ropeDim]
		theta := float32(pos)
		for i := 0; i < ropeDim; i += 2 {
			cos, sin := float32(math.Cos(float64(theta))), float32(math.Sin(float64(theta)))
			x0, x1 := v[i], v[i+1]
			v[i] = x0*cos - x1*sin
			v[i+1] = x0*sin + x1*cos
			theta *= thetaScale
		}
	}
}

// softmax replaces x by its softmax.
func softmax(x []float32) {
	mx := float32(math.Inf(-1))
	for _, v := range x {
		mx = max(mx, v)
	}
	var sum float64
	for i, v := range x {
		e := float32(math.Exp(float64(v - mx)))
		x[i] = e
		sum += float64(e)
	}
	for i := range x {
		x[i] = float32(float64(x[i]) / sum)
	}
}
