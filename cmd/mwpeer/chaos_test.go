package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/internal/wait"
)

// A chaos swarm: entry peers that serve nothing and take the clients'
// requests, and synthetic experts that all serve chaosModel at the pace of
// the measurement (32 tokens at 100 tokens/s, about 0.35 s an
// answer), so that what a request costs beyond that is the overlay's.
const (
	chaosModel  = "syn"
	chaosTokens = 32
	chaosRate   = 100
)

// chaosSwarm is the processes of a chaos or soak run.
type chaosSwarm struct {
	bin     string
	entries []*proc
	experts []*proc
}

func (s *chaosSwarm) all() []*proc { return append(slices.Clone(s.entries), s.experts...) }

// startChaosSwarm starts entries + experts `mwpeer run` processes; the first
// entry is everyone's bootstrap peer. It returns once every entry's catalog
// lists every expert as serving chaosModel.
func startChaosSwarm(t *testing.T, entries, experts int) *chaosSwarm {
	t.Helper()
	s := &chaosSwarm{bin: buildBinary(t)}
	root := t.TempDir()
	s.entries = make([]*proc, entries)
	s.experts = make([]*proc, experts)
	s.entries[0] = startProc(t, s.bin, filepath.Join(root, "entry0"), "general", "", entryFlags()...)
	boot := s.entries[0].boot
	var wg sync.WaitGroup
	for i := 1; i < entries; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.entries[i] = startProc(t, s.bin, filepath.Join(root, fmt.Sprintf("entry%d", i)), "general", boot, entryFlags()...)
		}()
	}
	domains := []string{"general", "code", "math", "creative", "science", "reasoning"}
	for i := range experts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.experts[i] = startProc(t, s.bin, filepath.Join(root, fmt.Sprintf("expert%d", i)), domains[i%len(domains)], boot, expertFlags()...)
		}()
	}
	wg.Wait()
	wait.For(t, 60*time.Second, "every entry lists every expert", func() error { return s.entriesSee(s.experts) })
	return s
}

func entryFlags() []string {
	return []string{"--engine", "none", "--log-level", "info"}
}

func expertFlags() []string {
	return []string{"--models", chaosModel, "--synthetic-tokens", fmt.Sprint(chaosTokens),
		"--synthetic-rate", fmt.Sprint(chaosRate), "--log-level", "info"}
}

// entriesSee checks every entry's /api/peers lists each of experts serving
// chaosModel.
func (s *chaosSwarm) entriesSee(experts []*proc) error {
	for _, e := range s.entries {
		b, err := getPeers(e.http)
		if err != nil {
			return fmt.Errorf("entry %s: %v", short(e.id), err)
		}
		serving := map[string]bool{}
		for _, p := range b.Peers {
			for _, m := range p.Models {
				if m.Name == chaosModel {
					serving[p.ID] = true
				}
			}
		}
		for _, x := range experts {
			if !serving[x.id] {
				return fmt.Errorf("entry %s does not list expert %s", short(e.id), short(x.id))
			}
		}
	}
	return nil
}

// restart starts a stopped or killed expert again in its data directory
// (so under the same peer ID) and puts it in its place.
func (s *chaosSwarm) restart(t *testing.T, old *proc) *proc {
	t.Helper()
	p := startProc(t, s.bin, old.dataDir, old.domain, s.entries[0].boot, expertFlags()...)
	if p.id != old.id {
		t.Fatalf("restarted expert is %s, was %s", p.id, old.id)
	}
	for i, x := range s.experts {
		if x == old {
			s.experts[i] = p
		}
	}
	return p
}

func short(id string) string { return id[max(0, len(id)-6):] }

// suspectsOf is the peers entry lists in its /api/peers, and which of them
// it suspects (trust.Score.Suspect).
func suspectsOf(entry *proc) (listed, suspected map[string]bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+entry.http+"/api/peers", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var b struct {
		Peers []struct {
			ID    string `json:"id"`
			Trust *struct {
				Suspect time.Time `json:"suspect"`
			} `json:"trust"`
		} `json:"peers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		return nil, nil, err
	}
	listed, suspected = map[string]bool{}, map[string]bool{}
	for _, p := range b.Peers {
		listed[p.ID] = true
		suspected[p.ID] = p.Trust != nil && !p.Trust.Suspect.IsZero()
	}
	return listed, suspected, nil
}

// sample is one request of the load.
type sample struct {
	phase   string
	took    time.Duration
	err     error
	experts string // X-Mwpeer-Experts: who answered, in order
}

// load is steady traffic from a few clients, each sending one request after
// another to the entries in turn, and checking every answer against the
// whole text the model gives (a failover must not change a byte).
type load struct {
	entries []*proc
	prompts []string
	want    map[string]string

	phase   atomic.Pointer[string]
	mu      sync.Mutex
	samples []sample
}

func newLoad(entries []*proc, prompts int) *load {
	l := &load{entries: entries, want: map[string]string{}}
	for i := range prompts {
		l.prompts = append(l.prompts, fmt.Sprintf("chaos prompt %d: say something", i))
	}
	l.setPhase("warm-up")
	return l
}

func (l *load) setPhase(name string) { l.phase.Store(&name) }

// learn asks each prompt once, of the first entry, and keeps the answer as
// the text every later answer must equal.
func (l *load) learn(t *testing.T) {
	t.Helper()
	for _, p := range l.prompts {
		text, _, err := l.ask(context.Background(), l.entries[0], p)
		if err != nil {
			t.Fatalf("prompt %q: %v", p, err)
		}
		if n := len(strings.Fields(text)); n != chaosTokens {
			t.Fatalf("prompt %q: %d words, want %d: %q", p, n, chaosTokens, text)
		}
		l.want[p] = text
	}
}

// ask sends one chat completion and returns its text and experts.
func (l *load) ask(ctx context.Context, entry *proc, prompt string) (string, string, error) {
	body, _ := json.Marshal(map[string]any{"model": chaosModel,
		"messages": []map[string]string{{"role": "user", "content": prompt}}})
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+entry.http+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(data))
	}
	var out struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(data, &out); err != nil || len(out.Choices) != 1 {
		return "", "", fmt.Errorf("bad answer %q: %v", data, err)
	}
	return out.Choices[0].Message.Content, resp.Header.Get("X-Mwpeer-Experts"), nil
}

// run starts clients that send requests until ctx ends; the returned
// function waits for them.
func (l *load) run(ctx context.Context, clients int) (wait func()) {
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; ctx.Err() == nil; i++ {
				entry := l.entries[i%len(l.entries)]
				prompt := l.prompts[rand.IntN(len(l.prompts))]
				phase := *l.phase.Load()
				start := time.Now()
				text, experts, err := l.ask(context.Background(), entry, prompt)
				took := time.Since(start)
				if err == nil && text != l.want[prompt] {
					err = fmt.Errorf("text differs from the model's: %q, want %q", text, l.want[prompt])
				}
				if err != nil {
					err = fmt.Errorf("entry %s, prompt %q, answered by %s: %w", short(entry.id), prompt, experts, err)
				}
				l.mu.Lock()
				l.samples = append(l.samples, sample{phase: phase, took: took, err: err, experts: experts})
				l.mu.Unlock()
			}
		}()
	}
	return wg.Wait
}

// stats sums up the samples of one phase.
type stats struct {
	n, failed      int
	p50, p99, most time.Duration
	errs           []error
	failovers      int // answers more than one expert streamed
}

func (s stats) String() string {
	return fmt.Sprintf("%d requests, %d failed, %d failed over; p50 %v, p99 %v, max %v", s.n, s.failed, s.failovers,
		s.p50.Round(time.Millisecond), s.p99.Round(time.Millisecond), s.most.Round(time.Millisecond))
}

func (l *load) stats(phase string) stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s stats
	var ds []time.Duration
	for _, x := range l.samples {
		if x.phase != phase {
			continue
		}
		s.n++
		if x.err != nil {
			s.failed++
			if len(s.errs) < 5 {
				s.errs = append(s.errs, x.err)
			}
			continue
		}
		if strings.Contains(x.experts, ",") {
			s.failovers++
		}
		ds = append(ds, x.took)
	}
	if len(ds) > 0 {
		slices.Sort(ds)
		q := func(f float64) time.Duration { return ds[min(len(ds)-1, int(f*float64(len(ds))))] }
		s.p50, s.p99, s.most = q(0.5), q(0.99), ds[len(ds)-1]
	}
	return s
}

// TestChaos runs 10 `mwpeer run` processes (4 entry peers, 6 synthetic
// experts) under steady load from 6 clients and, phase by phase, freezes 2
// experts (SIGSTOP) and resumes them (SIGCONT), then kills 2 (SIGKILL) and
// restarts them. Not one request may fail, every answer must be the
// model's whole text, and the p99 of a whole answer with 2 of 6 experts
// frozen must stay under MWPEER_CHAOS_P99 (default 6 s: the target is 3 s,
// with room for a busy 2-core CI machine; twice the healthy p99 when that
// is more; the figures are logged).
//
//	go test ./cmd/mwpeer -run TestChaos -v
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 10 mwpeer processes under load; skipped with -short")
	}
	bound := 6 * time.Second
	if v := os.Getenv("MWPEER_CHAOS_P99"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		bound = d
	}
	phase := 12 * time.Second
	if v := os.Getenv("MWPEER_CHAOS_PHASE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		phase = d
	}
	s := startChaosSwarm(t, 4, 6)
	l := newLoad(s.entries, 8)
	l.learn(t)

	ctx, cancel := context.WithCancel(context.Background())
	done := l.run(ctx, 6)
	defer func() { cancel(); done() }()
	hold := func(name string, d time.Duration) {
		l.setPhase(name)
		time.Sleep(d) // the load runs meanwhile: this is the phase's length
	}
	// routedAround checks that every entry suspects each of ps or no longer
	// lists it (frozen, it stopped announcing); back checks that every
	// entry lists each of ps again and suspects none of them.
	routedAround := func(ps []*proc) error {
		if n := slices.Min(metricAll(s.entries, "mwpeer_suspect_peers")); n < float64(len(ps)) {
			return fmt.Errorf("an entry suspects %v peers", n)
		}
		for _, e := range s.entries {
			listed, sus, err := suspectsOf(e)
			if err != nil {
				return err
			}
			for _, p := range ps {
				if listed[p.id] && !sus[p.id] {
					return fmt.Errorf("entry %s lists expert %s and does not suspect it", short(e.id), short(p.id))
				}
			}
		}
		return nil
	}
	back := func(ps []*proc) error {
		for _, e := range s.entries {
			listed, sus, err := suspectsOf(e)
			if err != nil {
				return err
			}
			for _, p := range ps {
				if !listed[p.id] || sus[p.id] {
					return fmt.Errorf("entry %s: expert %s listed %v, suspected %v", short(e.id), short(p.id), listed[p.id], sus[p.id])
				}
			}
		}
		return nil
	}

	hold("healthy", phase)

	// Freeze two experts, as a closed lid or a swapping machine would.
	frozen := s.experts[1:3]
	for _, p := range frozen {
		if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.cmd.Process.Signal(syscall.SIGCONT) })
	}
	frozeAt := time.Now()
	l.setPhase("2 of 6 frozen")
	took := wait.For(t, 60*time.Second, "every entry routes around the frozen experts", func() error { return routedAround(frozen) })
	t.Logf("every entry routed around both frozen experts %v after the freeze", took.Round(100*time.Millisecond))
	time.Sleep(max(0, phase-time.Since(frozeAt)))
	for _, p := range frozen {
		if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	l.setPhase("resumed")
	took = wait.For(t, 60*time.Second, "every entry lists the resumed experts and suspects neither", func() error { return back(frozen) })
	t.Logf("every entry listed the resumed experts again, cleared, %v after SIGCONT", took.Round(100*time.Millisecond))

	// Kill two without a word, then start them again.
	killed := s.experts[3:5]
	for _, p := range killed {
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	hold("2 of 6 killed", phase)
	l.setPhase("restarted")
	var restarted []*proc
	for _, p := range killed {
		restarted = append(restarted, s.restart(t, p))
	}
	wait.For(t, 60*time.Second, "every entry lists the restarted experts", func() error { return s.entriesSee(restarted) })
	hold("restarted", phase/2)
	cancel()
	done()

	var failed []error
	for _, name := range []string{"healthy", "2 of 6 frozen", "resumed", "2 of 6 killed", "restarted"} {
		st := l.stats(name)
		t.Logf("%-14s %v", name+":", st)
		failed = append(failed, st.errs...)
		if st.n == 0 {
			t.Errorf("%s: no request completed", name)
		}
		if st.failed > 0 {
			t.Errorf("%s: %d of %d requests failed", name, st.failed, st.n)
		}
	}
	for _, err := range failed {
		t.Log(err)
	}
	// A machine so busy that healthy answers take seconds gets room in
	// proportion: what is asserted is that frozen experts cost about what
	// a busy machine does, not a stall timeout each.
	if healthy := l.stats("healthy").p99; 2*healthy > bound {
		t.Logf("healthy p99 %v: the bound is %v", healthy, 2*healthy)
		bound = 2 * healthy
	}
	if st := l.stats("2 of 6 frozen"); st.p99 > bound {
		t.Errorf("p99 with 2 of 6 experts frozen is %v, want under %v", st.p99, bound)
	}
}
