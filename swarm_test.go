package mwpeer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// testLogger is quiet unless MWPEER_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("MWPEER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is a peer on loopback with the synthetic engine, fast
// announcements and its own data dir.
func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.HTTPAddr = ""
	cfg.Engine = EngineSynthetic
	cfg.DHTMode = "server"
	cfg.RelayService = false
	// Heartbeats at the production pace: a test machine may be busy, and
	// faster beats with their shorter TTL make catalogs flap when
	// announcements wait seconds in a loaded process. Under the race
	// detector twenty hosts in one process are slower still (deliveries
	// of over 17 s were seen on two loaded cores), so the pace halves.
	cfg.AnnounceMin = 5 * time.Second
	cfg.Ping = 5 * time.Second
	if raceEnabled {
		cfg.AnnounceMin = 10 * time.Second
		cfg.Ping = 10 * time.Second
	}
	cfg.Logger = testLogger()
	return cfg
}

var testDomains = experts.Domains

// startSwarm starts n peers; peer 0 is the bootstrap of all others. mod,
// when set, adjusts each peer's config. Peers are closed by t.Cleanup.
func startSwarm(t testing.TB, n int, mod func(i int, c *Config)) []*Peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	peers := make([]*Peer, n)
	start := func(i int, boot []string) {
		cfg := testConfig(t)
		cfg.Domains = []string{testDomains[i%len(testDomains)]}
		cfg.Models = []string{fmt.Sprintf("model-%d", i%4)}
		cfg.Bootstrap = boot
		if mod != nil {
			mod(i, &cfg)
		}
		p, err := Start(ctx, cfg)
		if err != nil {
			t.Fatalf("start peer %d: %v", i, err)
		}
		t.Cleanup(func() { p.Close() })
		peers[i] = p
	}
	start(0, nil)
	boot := []string{peers[0].Addrs()[0].String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					mu.Lock()
					firstErr = fmt.Errorf("%v", r)
					mu.Unlock()
				}
			}()
			start(i, boot)
		}(i)
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return peers
}

// slow stretches a deadline: these many-host tests must pass on a busy
// 2-core machine, and the race detector slows them several times over. A
// deadline only bounds a wait that ends as soon as its condition holds, so
// a generous one costs nothing when things go well.
func slow(d time.Duration) time.Duration {
	if raceEnabled {
		return 8 * d
	}
	return 3 * d
}

func catalogsHoldAll(peers []*Peer, except map[string]bool) error {
	for i, p := range peers {
		if p == nil || except[p.ID().String()] {
			continue
		}
		for j, q := range peers {
			if i == j || q == nil || except[q.ID().String()] {
				continue
			}
			e, ok := p.Catalog.Get(q.ID().String())
			if !ok {
				return fmt.Errorf("peer %d does not know peer %d (catalog %d)", i, j, p.Catalog.Len())
			}
			if len(e.Domains) != 1 || e.Domains[0] != q.cfg.Domains[0] || len(e.Models) != 1 || e.Models[0].Name != q.cfg.Models[0] {
				return fmt.Errorf("peer %d has a wrong entry for peer %d: %+v %+v", i, j, e.Domains, e.Models)
			}
		}
	}
	return nil
}

func TestSwarmCatalogsConverge(t *testing.T) {
	const n = 20
	peers := startSwarm(t, n, nil)
	took := wait.For(t, slow(10*time.Second), "every catalog holds the other 19", func() error {
		return catalogsHoldAll(peers, nil)
	})
	t.Logf("20 catalogs complete after %s", took)
	for i, p := range peers {
		if got := p.Catalog.Len(); got != n-1 {
			t.Fatalf("peer %d catalog has %d entries, want %d", i, got, n-1)
		}
	}

	// FindProviders per domain returns exactly the peers declaring it.
	for _, d := range testDomains {
		want := map[string]bool{}
		for _, p := range peers {
			if p.cfg.Domains[0] == d {
				want[p.ID().String()] = true
			}
		}
		asker := peers[7]
		wait.For(t, slow(20*time.Second), "providers of domain/"+d, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			found, err := experts.FindProviders(ctx, asker.Host.DHT, experts.KindDomain, d, 100)
			if err != nil {
				return err
			}
			got := map[string]bool{}
			for _, ai := range found {
				got[ai.ID.String()] = true
			}
			if len(got) != len(want) {
				return fmt.Errorf("got %d providers %v, want %d", len(got), keys(got), len(want))
			}
			for id := range want {
				if !got[id] {
					return fmt.Errorf("missing provider %s", id)
				}
			}
			return nil
		})
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k[len(k)-6:])
	}
	sort.Strings(out)
	return out
}

// crash stops a peer without its leave announcement, as a killed process
// would: gossip stops first, so Close has nothing to say it with.
func (p *Peer) crash() {
	p.Gossip.Close()
	p.Close()
}

func TestDeadPeerLeavesEveryCatalog(t *testing.T) {
	peers := startSwarm(t, 8, nil)
	wait.For(t, slow(10*time.Second), "catalogs complete", func() error { return catalogsHoldAll(peers, nil) })

	// A clean stop: the leave announcement removes it at once.
	left := peers[3]
	left.Close()
	gone := map[string]bool{left.ID().String(): true}
	took := wait.For(t, slow(3*time.Second), "left peer removed", func() error { return absentEverywhere(peers, gone) })
	t.Logf("peer that left was removed everywhere after %s", took)

	// A crash: silence, then expiry after the TTL.
	dead := peers[5]
	ttl := experts.TTL(dead.Gossip.Interval())
	dead.crash()
	gone[dead.ID().String()] = true
	took = wait.For(t, ttl+slow(3*time.Second), "crashed peer expired", func() error { return absentEverywhere(peers, gone) })
	t.Logf("crashed peer expired everywhere after %s (TTL %s)", took, ttl)
	if took > ttl+slow(2*time.Second) {
		t.Fatalf("expiry took %s, TTL is %s", took, ttl)
	}
}

func absentEverywhere(peers []*Peer, gone map[string]bool) error {
	for i, p := range peers {
		if gone[p.ID().String()] {
			continue
		}
		for id := range gone {
			if _, ok := p.Catalog.Get(id); ok {
				return fmt.Errorf("peer %d still lists %s", i, id[len(id)-6:])
			}
		}
	}
	return nil
}

func TestRestartedPeerKeepsIdentity(t *testing.T) {
	cfg := testConfig(t)
	ctx := context.Background()
	p, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := p.ID()
	p.Close()
	p2, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if p2.ID() != id {
		t.Fatalf("restarted peer is %s, was %s", p2.ID(), id)
	}
	st, err := os.Stat(cfg.DataDir + "/identity.key")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("identity file mode %v, want 0600", st.Mode().Perm())
	}
}

func TestCorruptIdentityIsAnError(t *testing.T) {
	cfg := testConfig(t)
	path := cfg.DataDir + "/identity.key"
	if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Start with a corrupt identity: %v", err)
	}
	data, _ := os.ReadFile(path)
	if string(data) != "not a key" {
		t.Fatal("corrupt identity file was replaced")
	}
}

// TestMissedPeerIsFetchedOnItsNextBeat makes a peer forget another: the
// next beat it hears from the forgotten peer (beats carry no content) makes
// it fetch the full announcement from the neighbour that relayed the beat,
// instead of waiting for the next full announcement.
func TestMissedPeerIsFetchedOnItsNextBeat(t *testing.T) {
	peers := startSwarm(t, 4, nil)
	wait.For(t, slow(10*time.Second), "catalogs complete", func() error { return catalogsHoldAll(peers, nil) })
	forgetful, forgotten := peers[3], peers[2].ID().String()
	// One in FullEvery heartbeats is a full announcement, which would bring
	// the peer back without a fetch; try until a beat comes first.
	for attempt := 1; attempt <= 6; attempt++ {
		wait.For(t, slow(3*forgetful.Gossip.Interval()), "a beat from the peer", func() error {
			if e, _ := forgetful.Catalog.Get(forgotten); e.LastSeq <= e.Seq {
				return fmt.Errorf("no beat applied since the last full announcement")
			}
			return nil
		})
		before := forgetful.Gossip.Recovered()
		forgetful.Catalog.Remove(forgotten)
		took := wait.For(t, slow(3*forgetful.Gossip.Interval()), "forgotten peer back", func() error {
			if _, ok := forgetful.Catalog.Get(forgotten); !ok {
				return fmt.Errorf("still unknown")
			}
			return nil
		})
		if forgetful.Gossip.Recovered() > before {
			t.Logf("recovered by a fetch after %s (attempt %d)", took, attempt)
			return
		}
	}
	t.Fatal("the forgotten peer always came back by a full announcement, never by a fetch")
}
