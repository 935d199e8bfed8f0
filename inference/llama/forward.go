package llama

import (
	"context"
	"fmt"
	"math"
	"slices"
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

// workspace holds the buffers and workers of forward computations, reused
// from call to call so that decoding a token does not allocate.
type workspace struct {
	team  *team
	src   [][]float32
	acts  [actKinds]acts
	ready [actKinds]bool
	job   mulJob
	work  []scratch // per worker

	x, h, q, k, v, att, o, g, u rows
	router, res                 rows
	shared                      rows        // the shared expert (arch_qwen.go)
	sharedG, sharedY            [][]float32 // its gate and output rows
	qh                          [][]float32 // per worker
	attn                        attnJob
	sel                         []int
	wt                          []float32
	gin, gout                   [][]float32
	logits                      []float32
	logitRows                   [][]float32
	ds2                         deepseek2Scratch // arch_deepseek2.go

	fused          mulsJob // products run as one job (w.begin, w.add, w.run)
	inputs         []input // their inputs
	views          []acts  // row ranges of inputs (addRows)
	eg, eu, sg, su rows    // MoE: the routed experts' gate and up rows (in order), the shared expert's
	order          []int   // MoE: the (row, slot) pairs ordered by expert
	first          []int   // MoE: where each expert's pairs begin in order
}

// input is a batch of rows that fused products take, converted once for
// each kind of weights that multiplies it.
type input struct {
	rows  [][]float32
	acts  [actKinds]acts
	ready [actKinds]bool
}

// begin starts a fused job whose products take up to inputs inputs, and
// up to views row ranges of them (addRows).
func (w *workspace) begin(inputs, views int) {
	if cap(w.inputs) < inputs {
		w.inputs = make([]input, inputs) // only grows: the acts' buffers stay
	}
	w.inputs = w.inputs[:inputs]
	w.views = grow(w.views, views)[:0]
	w.fused.reset(w.work)
}

// input makes rows input i of the fused job.
func (w *workspace) input(i int, rows [][]float32) {
	w.inputs[i].rows = rows
	w.inputs[i].ready = [actKinds]bool{}
}

// converted returns input i converted for m.
func (w *workspace) converted(i int, m *matrix) *acts {
	in := &w.inputs[i]
	k := m.kind()
	if !in.ready[k] {
		in.acts[k].prepare(k, in.rows)
		in.ready[k] = true
	}
	return &in.acts[k]
}

// add queues out = m · input i.
func (w *workspace) add(i int, m *matrix, out [][]float32) {
	w.fused.add(m, w.converted(i, m), out)
}

// addRows queues out = m · rows [lo, hi) of input i: the experts of a MoE
// layer take ranges of one input, converted once, so that the buffers
// stay the size of one batch of (row, expert) pairs.
func (w *workspace) addRows(i, lo, hi int, m *matrix, out [][]float32) {
	w.views = append(w.views, w.converted(i, m).view(lo, hi)) // within begin's capacity: earlier pointers stay valid
	w.fused.add(m, &w.views[len(w.views)-1], out)
}

// run computes the queued products, all in one parallel job, and forgets
// their inputs.
func (w *workspace) run() {
	w.team.parallel(&w.fused, w.fused.chunks, 1)
	w.fused.reset(w.work)
	clear(w.views)
	for i := range w.inputs {
		w.inputs[i].rows = nil
		for k := range w.inputs[i].acts {
			w.inputs[i].acts[k].in = nil
		}
	}
}

func newWorkspace(workers int) *workspace {
	t := newTeam(workers)
	return &workspace{team: t, work: make([]scratch, t.workers())}
}

// use makes in the input of the following products.
func (w *workspace) use(in [][]float32) {
	w.src = in
	w.ready = [actKinds]bool{}
}

// mul sets out = m · in for the rows of the input.
func (w *workspace) mul(m *matrix, out [][]float32) {
	k := m.kind()
	if !w.ready[k] {
		w.acts[k].prepare(k, w.src)
		w.ready[k] = true
	}
	m.mul(w.team, &w.job, out, &w.acts[k], w.work)
}

// swiglu sets out = down(silu(gate·in) * up·in). in and out must not be w's buffers g and u.
func (w *workspace) swiglu(gate, up, down *matrix, in, out [][]float32) {
	g := w.g.get(len(in), gate.rows)
	u := w.u.get(len(in), up.rows)
	w.begin(1, 0)
	w.input(0, in)
	w.add(0, gate, g)
	w.add(0, up, u)
	w.run()
	for b := range g {
		siluMul(g[b], u[b])
	}
	w.use(g)
	w.mul(down, out)
}

// rows is a reusable n×m buffer.
type rows struct {
	back []float32
	r    [][]float32
}

// get returns the buffer as n rows of m, reallocated only when too small.
func (b *rows) get(n, m int) [][]float32 {
	b.back = grow(b.back, n*m)
	b.r = grow(b.r, n)
	for i := range b.r {
		b.r[i] = b.back[i*m : (i+1)*m]
	}
	return b.r
}

// State is one sequence being generated: its KV cache, its position and the
// buffers of its forward pass. It is not safe for concurrent use.
type State struct {
	m       *Model
	experts Experts
	local   bool // experts are m's own
	ctxLen  int
	k, v    [][]uint16 // per layer: ctxLen × kvDim F16 values, as llama.cpp's cache (attention.go)
	pos     int
	ws      *workspace
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
	le, local := experts.(localExperts)
	local = local && le.m == m
	kvDim := m.Config.KVHeads * m.Config.HeadDim
	vDim := kvDim
	if d := m.Config.DeepSeek2; d != nil {
		vDim = m.Config.Heads * d.ValueDim // its value heads are narrower
	}
	s := &State{m: m, experts: experts, local: local, ctxLen: ctxLen,
		k: make([][]uint16, m.Config.Layers), v: make([][]uint16, m.Config.Layers),
		ws: newWorkspace(defaultWorkers())}
	for i := range s.k {
		s.k[i] = make([]uint16, ctxLen*kvDim)
		s.v[i] = make([]uint16, ctxLen*vDim)
	}
	return s
}

// Pos returns the number of tokens in the sequence.
func (s *State) Pos() int { return s.pos }

// logits returns the output layer's logits for last, the last position's
// hidden state as a batch of one (normalised in place), in the workspace's
// logits buffer.
func (s *State) logits(last [][]float32) []float32 {
	m, c, w := s.m, s.m.Config, s.ws
	rmsNorm(last[0], last[0], m.outputNorm, c.NormEpsilon)
	w.logits = grow(w.logits, c.Vocab)
	w.logitRows = append(w.logitRows[:0], w.logits)
	w.use(last)
	w.mul(m.output, w.logitRows)
	return w.logits
}

// Forward appends tokens to the sequence and returns the logits that follow
// the last of them. The logits belong to s: they are valid until the next
// call of Forward. Forward runs its matrix products on all cores, with
// helper goroutines that it starts and stops itself.
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
	s.ws.team.start()
	defer s.ws.team.stop()
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
	if s.m.Config.DeepSeek2 != nil {
		return s.batchDeepSeek2(ctx, tokens)
	}
	m, c, w := s.m, s.m.Config, s.ws
	n := len(tokens)
	kvDim := c.KVHeads * c.HeadDim
	x := w.x.get(n, c.Embedding)
	for b, t := range tokens {
		m.embed.row(t, x[b])
	}
	h := w.h.get(n, c.Embedding)
	q := w.q.get(n, c.Heads*c.HeadDim)
	k := w.k.get(n, kvDim)
	v := w.v.get(n, kvDim)
	att := w.att.get(n, c.Heads*c.HeadDim)
	o := w.o.get(n, c.Embedding)
	for li := range m.layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l := &m.layers[li]
		for b := range x {
			rmsNorm(h[b], x[b], l.attnNorm, c.NormEpsilon)
		}
		w.begin(1, 0)
		w.input(0, h)
		w.add(0, l.wq, q)
		w.add(0, l.wk, k)
		w.add(0, l.wv, v)
		w.run()
		for b := range n {
			pos := s.pos + b
			m.positionQK(l, q[b], k[b], v[b], pos)
			s.store(li, pos, k[b], v[b])
		}
		s.attention(li, q, att)
		w.use(att)
		w.mul(l.wo, o)
		for b := range x {
			for i := range x[b] {
				x[b][i] += o[b][i]
			}
			rmsNorm(h[b], x[b], l.ffnNorm, c.NormEpsilon)
		}
		if c.Experts == 0 {
			w.swiglu(l.gate, l.up, l.down, h, o)
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
	return s.logits(x[n-1 : n]), nil
}

// attention computes causal grouped-query attention of the batch's queries
// (at positions s.pos...) over the cache, into out, one head at a time on
// all workers (attendHead).
func (s *State) attention(li int, q, out [][]float32) {
	w := s.ws
	w.qh = grow(w.qh, w.team.workers())
	for i := range w.qh {
		w.qh[i] = grow(w.qh[i], s.m.Config.HeadDim)
	}
	w.attn = attnJob{s: s, li: li, q: q, out: out, qh: w.qh}
	w.team.parallel(&w.attn, len(q)*s.m.Config.Heads, 1)
	w.attn = attnJob{}
}

// moe runs the Mixture-of-Experts FFN of layer li on rows h into out as
// llama.cpp does for Mixtral: the router's softmax over all experts, the top
// ExpertsUsed of them, their weights renormalized to sum to one, each
// expert's output scaled by its weight and the outputs added in order of
// weight. Rows routed to one expert go to it in one call.
func (s *State) moe(ctx context.Context, li int, h, out [][]float32) error {
	c, w := s.m.Config, s.ws
	l := &s.m.layers[li]
	n, used := len(h), c.ExpertsUsed
	logits := w.router.get(n, c.Experts)
	w.use(h)
	w.mul(l.gateInp, logits)
	w.sel = grow(w.sel, n*used)
	w.wt = grow(w.wt, n*used)
	for b, lg := range logits {
		softmax(lg)
		sel, wt := w.sel[b*used:(b+1)*used], w.wt[b*used:(b+1)*used]
		var sum float64
		for slot := range sel {
			best := -1
			for e, p := range lg {
				if (best < 0 || p > lg[best]) && !slices.Contains(sel[:slot], e) {
					best = e
				}
			}
			sel[slot], wt[slot] = best, lg[best]
			sum += float64(lg[best])
		}
		div := max(float32(sum), 6.103515625e-5)
		if c.ExpertWeightsRaw {
			div = 1
		}
		for slot := range wt {
			wt[slot] /= div
		}
	}
	res := w.res.get(n*used, c.Embedding)
	if s.local {
		if err := s.localExperts(li, h, res); err != nil {
			return err
		}
	} else if err := s.remoteExperts(ctx, li, h, res); err != nil {
		return err
	}
	for b := range out {
		for slot := range used {
			y, wt := res[b*used+slot], w.wt[b*used+slot]
			if slot == 0 {
				for j, v := range y {
					out[b][j] = v * wt
				}
				continue
			}
			for j, v := range y {
				out[b][j] += float32(v * wt)
			}
		}
	}
	if s.local {
		s.addShared(li, out) // computed with the routed experts
		return nil
	}
	s.sharedExpert(li, h, out)
	return nil
}

// localExperts runs the experts chosen in layer li (w.sel) with m's own
// weights, writing row i's slot output into res[i] as remoteExperts does,
// and the layer's shared expert if it has one (its results stay in
// w.sharedG and w.sharedY for addShared). All gate and up products, of
// every expert, run as one parallel job, then all down products as
// another: a decode step of qwen2moe then hands the workers 2 jobs per
// layer for its FFN rather than 9. Each expert's rows are those the loop
// over experts gave before (in row order), and each product row is computed
// as in a product of its own, so the results are bitwise the same.
func (s *State) localExperts(li int, h, res [][]float32) error {
	c, w := s.m.Config, s.ws
	l := &s.m.layers[li]
	used, pairs := c.ExpertsUsed, len(w.sel)
	if l.gateExp == nil {
		e := slices.Min(w.sel) // the first expert the loop over experts met
		_, err := s.m.Expert(li, e)
		return fmt.Errorf("layer %d expert %d: %w", li, e, err)
	}
	// Order the (row, slot) pairs by expert, stably: expert e's pairs are
	// order[first[e]:first[e+1]].
	first := grow(w.first, c.Experts+1)
	w.first = first
	clear(first)
	for _, e := range w.sel {
		first[e+1]++
	}
	for e := range c.Experts {
		first[e+1] += first[e]
	}
	w.order = grow(w.order, pairs)
	for i, e := range w.sel {
		w.order[first[e]] = i
		first[e]++
	}
	copy(first[1:], first[:c.Experts]) // first[e] had moved to first[e+1]
	first[0] = 0
	w.gin, w.gout = grow(w.gin, pairs), grow(w.gout, pairs)
	for p, i := range w.order {
		w.gin[p], w.gout[p] = h[i/used], res[i]
	}
	eg, eu := w.eg.get(pairs, c.FeedForward), w.eu.get(pairs, c.FeedForward)
	active := 0
	for e := range c.Experts {
		if first[e+1] > first[e] {
			active++
		}
	}
	shared := l.qwen.sharedGate != nil
	var sg, su [][]float32
	w.begin(2, 2*active)
	w.input(1, w.gin)
	if shared {
		g, _ := s.sharedRows(len(h))
		sg = w.sg.get(len(h), s.m.Config.SharedFeedForward)
		su = w.su.get(len(h), s.m.Config.SharedFeedForward)
		w.input(0, h)
		w.add(0, l.qwen.sharedGateInp, g)
		w.add(0, l.qwen.sharedGate, sg)
		w.add(0, l.qwen.sharedUp, su)
	}
	for e := range c.Experts {
		if a, b := first[e], first[e+1]; a < b {
			w.addRows(1, a, b, l.gateExp[e], eg[a:b])
			w.addRows(1, a, b, l.upExp[e], eu[a:b])
		}
	}
	w.run()
	for p := range eg {
		siluMul(eg[p], eu[p])
	}
	for b := range sg {
		siluMul(sg[b], su[b])
	}
	w.begin(2, active)
	w.input(1, eg)
	if shared {
		w.input(0, sg)
		w.add(0, l.qwen.sharedDown, w.sharedY)
	}
	for e := range c.Experts {
		if a, b := first[e], first[e+1]; a < b {
			w.addRows(1, a, b, l.downEx[e], w.gout[a:b])
		}
	}
	w.run()
	return nil
}

// remoteExperts asks s.experts for every expert chosen in layer li, all at
// once (each call may go to another peer), writing row i's slot output into
// res[i] as the local path does. The sum over slots happens after, in slot
// order, so the result does not depend on where or in what order the
// experts ran.
func (s *State) remoteExperts(ctx context.Context, li int, h, res [][]float32) error {
	c, w := s.m.Config, s.ws
	used := c.ExpertsUsed
	errs := make([]error, c.Experts)
	var wg sync.WaitGroup
	for e := range c.Experts {
		var in, got [][]float32
		for i, se := range w.sel {
			if se == e {
				in, got = append(in, h[i/used]), append(got, res[i])
			}
		}
		if len(in) == 0 {
			continue
		}
		wg.Go(func() { errs[e] = s.experts.Apply(ctx, li, e, in, got) })
	}
	wg.Wait()
	for e, err := range errs {
		if err != nil {
			return fmt.Errorf("layer %d expert %d: %w", li, e, err)
		}
	}
	return nil
}

// rmsNorm sets dst = x / rms(x) * w (dst may be x).
func rmsNorm(dst, x, w []float32, eps float32) {
	var sum float64
	for _, v := range x {
		sum += float64(v * v)
	}
	mean := float32(sum / float64(len(x)))
	scale := 1 / float32(math.Sqrt(float64(mean+eps)))
	for i, v := range x {
		dst[i] = v * scale * w[i]
	}
}

// rope rotates adjacent pairs (2i, 2i+1) of the first ropeDim dimensions of
// each head by pos·base^(-2i/ropeDim): llama.cpp's "normal" RoPE, which it
// uses for the llama architecture. The angles' cosines and sines are
// computed once for all heads, as ggml's rope cache does.
func rope(x []float32, heads, headDim, ropeDim, pos int, base float32) {
	var buf [256]float32 // cos, sin of up to 128 pairs, on the stack
	cs := buf[:]
	if ropeDim > len(buf) {
		cs = make([]float32, ropeDim)
	}
	cs = cs[:ropeDim]
	thetaScale := float32(math.Pow(float64(base), float64(float32(-2)/float32(ropeDim))))
	theta := float32(pos)
	for i := 0; i < ropeDim; i += 2 {
		cs[i], cs[i+1] = float32(math.Cos(float64(theta))), float32(math.Sin(float64(theta)))
		theta *= thetaScale
	}
	for h := range heads {
		v := x[h*headDim : h*headDim+ropeDim]
		for i := 0; i < ropeDim; i += 2 {
			cos, sin := cs[i], cs[i+1]
			x0, x1 := v[i], v[i+1]
			v[i] = float32(x0*cos) - float32(x1*sin)
			v[i+1] = float32(x0*sin) + float32(x1*cos)
		}
	}
}
