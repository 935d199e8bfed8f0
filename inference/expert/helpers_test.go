package expert

import (
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/host"

	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/p2ptest"
)

var testModel = ModelKey{1, 2, 3}

// moeConfig is the tiny generated MoE model with 8 experts in 3 layers.
func moeConfig() randmodel.Config {
	c := randmodel.Tiny()
	c.Experts, c.ExpertsUsed, c.Layers = 8, 2, 3
	return c
}

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
}

func newSwarm(t testing.TB, m *llama.Model, n int, owners func(layer, expert int) []int) *swarm {
	s := &swarm{req: newHost(t)}
	for i := range n {
		h := newHost(t)
		connect(t, s.req, h)
		srv := NewServer(h, ServerConfig{})
		t.Cleanup(func() { srv.Close() })
		s.hosts = append(s.hosts, h)
		s.servers = append(s.servers, srv)
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

// Loopback hosts for these tests.
var newHost, connect = p2ptest.NewHost, p2ptest.Connect
