package moe

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/p2ptest"
)

var testModel = expert.ModelKey{1, 2, 3}

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
	t.Cleanup(func() { m.Close() })
	return m
}

// swarm is a requester and hosts; host i serves the experts for which
// owners(layer, expert) includes i.
type swarm struct {
	req     host.Host
	hosts   []host.Host
	servers []*expert.Server
	owners  func(layer, expert int) []int
	alive   []bool
}

func newSwarm(t testing.TB, m *llama.Model, n int, owners func(layer, expert int) []int) *swarm {
	s := &swarm{req: newHost(t), owners: owners}
	for i := range n {
		h := newHost(t)
		connect(t, s.req, h)
		srv := expert.NewServer(h, expert.ServerConfig{})
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
	c := expert.NewClient(s.req)
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
			x.Local = expert.NewServer(s.req, expert.ServerConfig{})
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

// Loopback hosts for these tests.
var newHost, connect = p2ptest.NewHost, p2ptest.Connect
