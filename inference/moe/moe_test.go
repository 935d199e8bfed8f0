package moe

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/p2ptest"
)

var testModel = ModelKey{1, 2, 3}

func loadModel(t testing.TB, c randmodel.Config) *llama.Model {
	t.Helper()
	path := filepath.Join(t.TempDir(), c.Name+".gguf")
	if err := randmodel.WriteFile(path, c); err != nil {
		t.Fatal(err)
	}
	m, err := llama.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// swarm is a requester and hosts; host i serves the experts for which
// owners(layer, expert) includes i.
type swarm struct {
	req     host.Host
	hosts   []host.Host
	servers []*Server
	owners  func(layer, expert int) []int
	alive   []bool
}

func newSwarm(t testing.TB, m *llama.Model, n int, owners func(layer, expert int) []int) *swarm {
	s := &swarm{req: newHost(t), owners: owners}
	for i := range n {
		h := newHost(t)
		connect(t, s.req, h)
		srv := NewServer(h, ServerConfig{})
		t.Cleanup(func() { srv.Close() })
		s.hosts = append(s.hosts, h)
		s.servers = append(s.servers, srv)
		s.alive = append(s.alive, true)
		for l := range m.Config.Layers {
			for e := range m.Config.Experts {
				for _, o := range owners(l, e) {
					if o == i {
						x, err := m.Expert(l, e)
						if err != nil {
							t.Fatal(err)
						}
						srv.Add(testModel, l, e, x)
					}
				}
			}
		}
	}
	return s
}

func (s *swarm) experts(t testing.TB) *Experts {
	c := NewClient(s.req)
	t.Cleanup(func() { c.Close() })
	return &Experts{Model: testModel, Client: c, CallTimeout: 2 * time.Second, Hosts: func(l, e int) []peer.ID {
		var out []peer.ID
		for _, o := range s.owners(l, e) {
			out = append(out, s.hosts[o].ID())
		}
		return out
	}}
}

// replicated puts each expert on two of n hosts, so no host holds them all.
func replicated(n, experts int) func(l, e int) []int {
	return func(l, e int) []int { k := l*experts + e; return []int{k % n, (k + 1) % n} }
}

type run struct {
	ids []int
	lps []float64
}

func generate(t testing.TB, m *llama.Model, x llama.Experts, maxTokens int, onToken func(n int)) (run, error) {
	var r run
	_, _, err := m.Generate(context.Background(), "the quick brown fox", llama.Options{MaxTokens: maxTokens, TopLogprobs: 5}, x, func(tok llama.Token) error {
		r.ids = append(r.ids, tok.ID)
		r.lps = append(r.lps, tok.Logprob)
		if onToken != nil {
			onToken(len(r.ids))
		}
		return nil
	})
	return r, err
}

func same(t *testing.T, got, want run) {
	t.Helper()
	if len(got.ids) != len(want.ids) {
		t.Fatalf("%d tokens, want %d", len(got.ids), len(want.ids))
	}
	for i := range want.ids {
		if got.ids[i] != want.ids[i] || got.lps[i] != want.lps[i] {
			t.Fatalf("token %d: %d (%v), want %d (%v)", i, got.ids[i], got.lps[i], want.ids[i], want.lps[i])
		}
	}
}

func moeConfig() randmodel.Config {
	c := randmodel.Tiny()
	c.Experts, c.ExpertsUsed, c.Layers = 8, 2, 3
	return c
}

// TestDistributedEqualsLocal: a MoE model whose experts live on three
// other peers, each holding some, gives exactly the tokens and
// log-probabilities of local execution.
func TestDistributedEqualsLocal(t *testing.T) {
	for _, typ := range []randmodel.TensorType{randmodel.F32, randmodel.F16} {
		t.Run(typ.String(), func(t *testing.T) {
			c := moeConfig()
			c.Type = typ
			m := loadModel(t, c)
			want, err := generate(t, m, nil, 32, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := newSwarm(t, m, 3, replicated(3, c.Experts))
			for i, srv := range s.servers {
				if n := len(srv.Hosted(testModel)); n == 0 || n == c.Layers*c.Experts {
					t.Fatalf("host %d holds %d of %d experts", i, n, c.Layers*c.Experts)
				}
			}
			x := s.experts(t)
			got, err := generate(t, m, x, 32, nil)
			if err != nil {
				t.Fatal(err)
			}
			same(t, got, want)
			if x.RemoteCalls.Load() == 0 || x.LocalCalls.Load() != 0 || x.Failovers.Load() != 0 {
				t.Fatalf("remote %d local %d failovers %d", x.RemoteCalls.Load(), x.LocalCalls.Load(), x.Failovers.Load())
			}
			// Holding some experts itself, the requester runs those locally.
			x.Local = NewServer(s.req, ServerConfig{})
			defer x.Local.Close()
			for e := range c.Experts / 2 {
				ex, _ := m.Expert(0, e)
				x.Local.Add(testModel, 0, e, ex)
			}
			got, err = generate(t, m, x, 32, nil)
			if err != nil {
				t.Fatal(err)
			}
			same(t, got, want)
			if x.LocalCalls.Load() == 0 {
				t.Fatal("no expert ran locally")
			}
		})
	}
}

// TestHostKilledMidGeneration: a host dies while a generation runs; the
// replicas take over and the output does not change.
func TestHostKilledMidGeneration(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	want, err := generate(t, m, nil, 32, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newSwarm(t, m, 3, replicated(3, c.Experts))
	x := s.experts(t)
	got, err := generate(t, m, x, 32, func(n int) {
		if n == 8 {
			s.servers[0].Close()
			s.hosts[0].Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	same(t, got, want)
	if x.Failovers.Load() == 0 {
		t.Fatal("no failover recorded after a host died")
	}
}

// TestNoReplicaLeft: when the only host of a chosen expert is gone, the
// generation fails with ErrNoHost, never a wrong answer.
func TestNoReplicaLeft(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	s := newSwarm(t, m, 3, func(l, e int) []int { return []int{(l*c.Experts + e) % 3} })
	x := s.experts(t)
	var tokens int
	_, err := generate(t, m, x, 32, func(n int) {
		tokens = n
		if n == 4 {
			s.hosts[1].Close()
		}
	})
	if !errors.Is(err, ErrNoHost) || !errors.Is(err, inference.ErrNoExpert) {
		t.Fatalf("err %v, want ErrNoHost", err)
	}
	if tokens >= 32 {
		t.Fatalf("generation ran to the end (%d tokens) without a host", tokens)
	}
	// No host at all for an expert is the same error, at once.
	x.Hosts = func(int, int) []peer.ID { return nil }
	if _, err := generate(t, m, x, 4, nil); !errors.Is(err, ErrNoHost) {
		t.Fatalf("err %v, want ErrNoHost", err)
	}
}

// TestServerRejects: calls the server cannot answer get an error status or
// a reset at once, never a hang or a wrong answer.
func TestServerRejects(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	s := newSwarm(t, m, 1, func(l, e int) []int { return []int{0} })
	cl := NewClient(s.req)
	defer cl.Close()
	p := s.hosts[0].ID()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows := func(n, dim int) [][]float32 {
		r := make([][]float32, n)
		for i := range r {
			r[i] = make([]float32, dim)
			for j := range r[i] {
				r[i][j] = rand.Float32()
			}
		}
		return r
	}
	var re *RemoteError
	// Unknown expert and unknown model: not hosted.
	if err := cl.Call(ctx, p, testModel, 0, c.Experts, rows(2, c.Embedding), rows(2, c.Embedding)); !errors.As(err, &re) || re.Status != statusNotFound {
		t.Fatalf("unknown expert: %v", err)
	}
	if err := cl.Call(ctx, p, ModelKey{9}, 0, 0, rows(2, c.Embedding), rows(2, c.Embedding)); !errors.As(err, &re) || re.Status != statusNotFound {
		t.Fatalf("unknown model: %v", err)
	}
	// Wrong row length: refused before the rows are read.
	if err := cl.Call(ctx, p, testModel, 0, 0, rows(2, c.Embedding+1), rows(2, c.Embedding+1)); !errors.As(err, &re) || re.Status != statusBad {
		t.Fatalf("wrong row length: %v", err)
	}
	// Too many rows never leave the client.
	if err := cl.Call(ctx, p, testModel, 0, 0, rows(MaxRows+1, 1), rows(MaxRows+1, 1)); err == nil {
		t.Fatal("oversized call accepted")
	}
	// A good call on the same (pooled) stream still works, and matches local.
	in, out := rows(3, c.Embedding), rows(3, c.Embedding)
	if err := cl.Call(ctx, p, testModel, 1, 2, in, out); err != nil {
		t.Fatal(err)
	}
	want := rows(3, c.Embedding)
	ex, _ := m.Expert(1, 2)
	if err := ex.Apply(in, want); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		for j := range want[i] {
			if want[i][j] != out[i][j] {
				t.Fatalf("row %d col %d: %v, want %v", i, j, out[i][j], want[i][j])
			}
		}
	}
	// Garbage and a header announcing a huge payload: an error status and a
	// closed stream, at once.
	for name, raw := range map[string][]byte{
		"garbage": bytes.Repeat([]byte("x"), headerSize),
		"huge": func() []byte {
			b := make([]byte, headerSize)
			header{model: testModel, rows: MaxRows, dim: MaxDim}.marshal(b)
			return b
		}(),
	} {
		str, err := s.req.NewStream(ctx, p, ID)
		if err != nil {
			t.Fatal(err)
		}
		str.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := str.Write(raw); err != nil {
			t.Fatal(err)
		}
		status, msg, err := readStatus(str)
		if err != nil || status != statusBad {
			t.Fatalf("%s: status %d %q %v", name, status, msg, err)
		}
		str.Reset()
	}
	// A call that gets no answer in time ends at its deadline.
	short, cancel2 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel2()
	time.Sleep(time.Millisecond)
	if err := cl.Call(short, p, testModel, 0, 0, rows(1, c.Embedding), rows(1, c.Embedding)); err == nil {
		t.Fatal("expired call succeeded")
	}
}

// Loopback hosts for these tests.
var newHost, connect = p2ptest.NewHost, p2ptest.Connect
