package mwpeer

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ollamaapi "github.com/ollama/ollama/api"
	"github.com/openai/openai-go"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/inference/sharding"
	"github.com/mwpeer/mwpeer/internal/ollamatest"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// shardedFixture is a generated MoE model, its GGUF file and its split.
type shardedFixture struct {
	cfg   randmodel.Config
	gguf  string
	split string // the store dir Split wrote
	man   *shard.Manifest
}

func newShardedFixture(t *testing.T) shardedFixture {
	t.Helper()
	c := randmodel.Tiny()
	c.Name = "mwpeer-test-sharded"
	c.Layers, c.Experts, c.ExpertsUsed = 3, 8, 2
	dir := t.TempDir()
	f := shardedFixture{cfg: c, gguf: filepath.Join(dir, "model.gguf"), split: filepath.Join(dir, "split")}
	if err := randmodel.WriteFile(f.gguf, c); err != nil {
		t.Fatal(err)
	}
	m, err := shard.Split(f.gguf, f.split)
	if err != nil {
		t.Fatal(err)
	}
	f.man = m
	return f
}

// storeWith makes a store dir holding the manifest and the shards keep picks.
func (f shardedFixture) storeWith(t *testing.T, keep func(sh shard.Shard) bool) string {
	t.Helper()
	dir := t.TempDir()
	for _, sub := range []string{"manifests", "blobs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "manifests", f.man.ID()+".json"), f.man.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sh := range f.man.Shards {
		if !keep(sh) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(f.split, "blobs", "sha256-"+sh.Hash))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256-"+sh.Hash), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// localRun is the model run whole, in this process: the reference.
func (f shardedFixture) localRun(t *testing.T, prompt string, n int) (string, []float64) {
	t.Helper()
	m, err := llama.Load(f.gguf)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	var lps []float64
	if _, _, err := m.Generate(context.Background(), prompt, llama.Options{MaxTokens: n}, nil, func(tok llama.Token) error {
		text.WriteString(tok.Text)
		lps = append(lps, tok.Logprob)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return text.String(), lps
}

// shardedSwarm starts a runner (dense shard only), three expert hosts that
// each hold two thirds of the experts (every expert on exactly two of them),
// and a client peer with no engine.
func shardedSwarm(t *testing.T, f shardedFixture) (runner, client *Peer, hosts []*Peer) {
	t.Helper()
	return shardedSwarmWith(t, f, nil)
}

// shardedSwarmWith is shardedSwarm with more configuration for peer i
// (0 runner, 1-3 hosts, 4 client).
func shardedSwarmWith(t *testing.T, f shardedFixture, more func(i int, c *Config)) (runner, client *Peer, hosts []*Peer) {
	t.Helper()
	owners := func(l, e int) [2]int { k := l*f.cfg.Experts + e; return [2]int{k % 3, (k + 1) % 3} }
	peers := startSwarm(t, 5, func(i int, c *Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.Domains = []string{"general"}
		c.Models = nil
		c.Engine = EngineNone
		switch {
		case i == 0:
			c.Shards = []string{f.storeWith(t, func(sh shard.Shard) bool { return sh.Role == shard.RoleDense })}
		case i <= 3:
			h := i - 1
			c.Shards = []string{f.storeWith(t, func(sh shard.Shard) bool {
				o := owners(sh.Layer, sh.Expert)
				return sh.Role == shard.RoleExpert && (o[0] == h || o[1] == h)
			})}
		}
		if more != nil {
			more(i, c)
		}
	})
	runner, client, hosts = peers[0], peers[4], peers[1:4]
	wait.For(t, slow(15*time.Second), "the runner sees two live hosts of every expert", func() error {
		v := runner.Experts()
		if len(v.Models) != 1 {
			return fmt.Errorf("%d sharded models", len(v.Models))
		}
		if m := v.Models[0]; m.MinReplicas != 2 || m.RunnerCount != 1 {
			return fmt.Errorf("min replicas %d, runners %d", m.MinReplicas, m.RunnerCount)
		}
		return nil
	})
	wait.For(t, slow(15*time.Second), "the client hears of the sharded model", func() error {
		for _, m := range client.Router().Models() {
			if m.ID == f.man.Name {
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
	return runner, client, hosts
}

// completion asks p through the OpenAI SDK for a greedy completion with
// log-probabilities.
func completion(t *testing.T, p *Peer, model, prompt string, n int) (string, []float64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), slow(time.Minute))
	defer cancel()
	cl := sdk(p)
	c, err := cl.Completions.New(ctx, openai.CompletionNewParams{
		Model:       openai.CompletionNewParamsModel(model),
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
		Temperature: openai.Float(0),
		MaxTokens:   openai.Int(int64(n)),
		Logprobs:    openai.Int(1),
	})
	if err != nil {
		return "", nil, err
	}
	return c.Choices[0].Text, c.Choices[0].Logprobs.TokenLogprobs, nil
}

// TestShardedModelAcrossPeers: a MoE model whose experts are spread over
// three peers (none holds them all) answers through the swarm with exactly
// the tokens and log-probabilities of running the whole file locally, and
// those match Ollama's when Ollama is available.
func TestShardedModelAcrossPeers(t *testing.T) {
	f := newShardedFixture(t)
	_, client, hosts := shardedSwarm(t, f)
	for i, h := range hosts {
		v := h.Experts()
		if n := v.Models[0].Local.Experts; n == 0 || n == f.cfg.Layers*f.cfg.Experts {
			t.Fatalf("host %d holds %d of %d experts", i, n, f.cfg.Layers*f.cfg.Experts)
		}
	}
	// A host's /api/experts?model= shows who hosts what, from announcements;
	// the client, which holds no manifest, only counts the model.
	wait.For(t, slow(10*time.Second), "a host's /api/experts shows every host", func() error {
		var v api.Experts
		getJSON(t, hosts[0], "/api/experts?model="+f.man.ID(), &v)
		if len(v.Models) != 1 || v.Models[0].ID != f.man.ID() || v.Models[0].MinReplicas != 2 || v.Models[0].Missing != 0 ||
			len(v.Models[0].Runners) != 1 || len(v.Models[0].Hosts) != 3 || len(v.Models[0].Warnings) != 0 || v.Models[0].Local == nil ||
			len(v.Models[0].Replicas) != f.cfg.Layers {
			return fmt.Errorf("/api/experts on a host: %+v", v)
		}
		var c api.Experts
		getJSON(t, client, "/api/experts", &c)
		if len(c.Models) != 0 || c.Unverified != 1 {
			return fmt.Errorf("/api/experts on the client: %+v", c)
		}
		return nil
	})
	const n = 32
	for _, prompt := range []string{"the quick brown fox", "Once upon a time"} {
		want, wantLps := f.localRun(t, prompt, n)
		got, gotLps, err := completion(t, client, f.man.Name, prompt, n)
		if err != nil {
			t.Fatal(err)
		}
		if got != want || len(gotLps) != len(wantLps) {
			t.Fatalf("%q: swarm %q (%d logprobs), local %q (%d)", prompt, got, len(gotLps), want, len(wantLps))
		}
		for i := range wantLps {
			// The API carries log-probabilities as JSON numbers: exact for float64.
			if float32(gotLps[i]) != float32(wantLps[i]) {
				t.Fatalf("%q: token %d log-probability %v, local %v", prompt, i, gotLps[i], wantLps[i])
			}
		}
	}
	var remote uint64
	for _, h := range hosts {
		remote += h.Experts().Models[0].Local.Served
	}
	if remote == 0 {
		t.Fatal("no expert call reached the hosts")
	}

	if os.Getenv("MWPEER_OLLAMA") == "" {
		t.Log("MWPEER_OLLAMA not set: not comparing with Ollama (./scripts/test.sh and .ci/run set it)")
		return
	}
	srv := ollamatest.Start(t)
	srv.CreateModel(t, "sharded", f.gguf)
	prompt := "the quick brown fox"
	got, gotLps, err := completion(t, client, f.man.Name, prompt, n)
	if err != nil {
		t.Fatal(err)
	}
	var ollText strings.Builder
	var ollLps []float64
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = srv.Client().Generate(ctx, &ollamaapi.GenerateRequest{Model: "sharded", Prompt: prompt, Raw: true, Logprobs: true,
		Options: map[string]any{"temperature": 0, "repeat_penalty": 1, "num_predict": n}}, func(r ollamaapi.GenerateResponse) error {
		ollText.WriteString(r.Response)
		for _, lp := range r.Logprobs {
			ollLps = append(ollLps, lp.Logprob)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != ollText.String() {
		t.Fatalf("swarm %q, Ollama %q", got, ollText.String())
	}
	var worst float64
	for i := range min(len(gotLps), len(ollLps)) {
		worst = max(worst, math.Abs(gotLps[i]-ollLps[i]))
	}
	t.Logf("distributed vs Ollama: %d tokens identical, largest log-probability difference %.2e", len(ollLps), worst)
	if worst > 1e-2 {
		t.Fatalf("largest log-probability difference from Ollama %.2e", worst)
	}
}

// TestShardedHostKilledMidGeneration: an expert host dies while an answer
// streams; the replicas take over and the answer is unchanged. With a
// second host gone some experts have no live host: the answer fails with a
// clear error, never a wrong one, and /api/experts warns.
func TestShardedHostKilledMidGeneration(t *testing.T) {
	f := newShardedFixture(t)
	// The kill happens inside an expert call, while the runner waits for
	// its answer and tokens are still owed: the 40th call any host gets once
	// armed crashes that host (a whole answer takes a few hundred calls).
	var armed atomic.Bool
	var calls atomic.Int64
	crashed := make(chan *Peer, 1)
	var peers [5]*Peer
	admit := func(i int) func(ctx context.Context, _ peer.ID, _ expert.Call) error {
		return func(ctx context.Context, _ peer.ID, _ expert.Call) error {
			if !armed.Load() || calls.Add(1) != 40 {
				return nil
			}
			crashed <- peers[i]
			go peers[i].crash()
			<-ctx.Done() // the host's expert server closes
			return ctx.Err()
		}
	}
	runner, client, hosts := shardedSwarmWith(t, f, func(i int, c *Config) { c.Serving.AdmitExpert = admit(i) })
	peers[0], peers[4] = runner, client
	copy(peers[1:4], hosts)
	const n = 48
	prompt := "the quick brown fox"
	want, _ := f.localRun(t, prompt, n)
	armed.Store(true)
	got, _, err := completion(t, client, f.man.Name, prompt, n)
	if err != nil {
		t.Fatal(err)
	}
	var dead *Peer
	select {
	case dead = <-crashed:
	default:
		t.Fatalf("only %d expert calls reached the hosts: none was killed", calls.Load())
	}
	if got != want {
		t.Fatalf("after a host died: %q, local %q", got, want)
	}
	if fo := runner.Experts().Models[0].Local.Failovers; fo == 0 {
		t.Fatal("no failover recorded")
	}

	// A second host gone: some experts are held by neither of the two.
	for _, h := range hosts {
		if h != dead {
			h.crash()
			break
		}
	}
	_, _, err = completion(t, client, f.man.Name, prompt, n)
	if err == nil || !strings.Contains(err.Error(), "no live host") {
		t.Fatalf("with experts unhosted: %v, want a no-live-host error", err)
	}
	wait.For(t, slow(30*time.Second), "the runner warns of experts without a host", func() error {
		m := runner.Experts().Models[0]
		if m.Missing == 0 || len(m.Warnings) == 0 {
			return fmt.Errorf("missing %d, warnings %v", m.Missing, m.Warnings)
		}
		return nil
	})
}

// TestHostExpertsFetchesFromTheSwarm: a fresh peer asked to run a sharded
// model it has no shard of fetches the manifest and the dense shard from
// the swarm, verifies them, and then answers prompts for the model itself.
func TestHostExpertsFetchesFromTheSwarm(t *testing.T) {
	f := newShardedFixture(t)
	runner, _, _ := shardedSwarm(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig(t)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Engine = EngineNone
	cfg.Models = nil
	cfg.Bootstrap = []string{runner.Addrs()[0].String()}
	cfg.HostExperts = []sharding.HostSpec{{Model: f.man.ID()[:12], Dense: true}}
	p, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	wait.For(t, slow(30*time.Second), "the new peer runs the model", func() error {
		v := p.Experts()
		for _, m := range v.Models {
			if m.ID == f.man.ID() && m.Local != nil && m.Local.Dense {
				return nil
			}
		}
		return fmt.Errorf("%+v", v.Models)
	})
	st, err := shard.OpenStore(filepath.Join(cfg.DataDir, "shards"))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Has(f.man.Dense().Hash) {
		t.Fatal("the dense shard is not in the new peer's store")
	}
	b := p.backend
	zero := 0.0
	var got strings.Builder
	if _, err := b.Generate(ctx, inference.Request{Model: f.man.Name, Prompt: "Hello", Raw: true, MaxTokens: 16, Temperature: &zero},
		func(ch inference.Chunk) error { got.WriteString(ch.Text); return nil }); err != nil {
		t.Fatal(err)
	}
	want, _ := f.localRun(t, "Hello", 16)
	if got.String() != want {
		t.Fatalf("fetched model says %q, local %q", got.String(), want)
	}
}
