package mwpeer

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/internal/wait"
)

// Sybil flood sizes: floodKeys identities in all, floodGossiped of them
// published over GossipSub by hostile hosts, the rest fed to each honest
// peer's catalog through the validation path gossip uses (Open, Admits,
// Apply), which is where a flood costs memory; floodLeaves of them then
// send leaves. Under the race detector (ten times slower at signing and
// verifying, on two cores shared with other tests) the flood is a fifth as
// large; go test -run TestSybilFlood without -race runs the full 20,000.
var (
	floodKeys     = raceScaled(20000)
	floodGossiped = raceScaled(4000)
	floodLeaves   = raceScaled(2000)
)

func raceScaled(n int) int {
	if raceEnabled {
		return n / 5
	}
	return n
}

const (
	floodHonest = 6
	// floodHeapBound bounds how much the honest peers' heap (all six, in
	// one process) may grow under the flood: their catalogs (at most 64
	// strangers per prefix), tombstones, and GossipSub's two-minute
	// caches of every message seen (IDs, delivery records for scoring).
	floodHeapBound = 64 << 20
	// Bounds on an API answer under the flood: a default page of peers,
	// and the sharded models (none verified here: only a count).
	floodPeersBound   = 128 << 10
	floodExpertsBound = 1 << 10
)

// sybil is one hostile identity with its signed announcement.
type sybil struct {
	key      crypto.PrivKey
	id       peer.ID
	env      []byte
	ann      *experts.Announcement
	leaveEnv []byte
}

// sybils makes n identities, each announcing itself validly: addresses in
// 203.0.113.0/24 (one /24, the "range"), every tenth claiming loopback
// instead to crowd the honest peers' own prefix; the longest TTL the
// validator allows; and shards of a made-up 64 × 64 expert model, all held
// (a view that built a layer × expert matrix per announced model would
// build 4,096 cells for each).
func sybils(t *testing.T, n int) []sybil {
	t.Helper()
	out := make([]sybil, n)
	now := time.Now()
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				key, _, _ := crypto.GenerateEd25519Key(nil)
				id, _ := peer.IDFromPrivateKey(key)
				addr := fmt.Sprintf("/ip4/203.0.113.%d/tcp/%d", i%256, 4001+i/256)
				if i%10 == 0 {
					addr = fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", 10000+i)
				}
				a := experts.Announcement{
					Peer: id.String(), Seq: 1, Time: now.UnixMilli(), Interval: experts.MaxInterval.Milliseconds(),
					Addrs: []string{addr}, Domains: []string{"code"}, Models: []experts.Model{{Name: "sybil"}}, Capacity: 8,
				}
				s := experts.NewShardSummary(fmt.Sprintf("%064x", i), "fake", 64, 64)
				for b := range s.Held {
					s.Held[b] = 0xff
				}
				a.Shards = append(a.Shards, s)
				env, err := experts.Seal(&a, key)
				if err != nil {
					panic(err)
				}
				leave := experts.Announcement{Peer: id.String(), Seq: 2, Time: now.UnixMilli(), Interval: experts.MaxInterval.Milliseconds(), Leave: true}
				lenv, err := experts.Seal(&leave, key)
				if err != nil {
					panic(err)
				}
				out[i] = sybil{key: key, id: id, env: env, ann: &a, leaveEnv: lenv}
			}
		}()
	}
	wg.Wait()
	return out
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func fetchSize(t *testing.T, p *Peer, path string) int {
	t.Helper()
	resp, err := http.Get("http://" + p.HTTPAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %v", path, resp.StatusCode, err)
	}
	return len(body)
}

// TestSybilFloodKeepsHonestPeers: 20,000 identities (4,000 under -race) from one address range
// announce themselves validly, over GossipSub from two hostile hosts and
// straight into the validation path. Every honest peer stays in every
// honest catalog, the catalogs hold at most the per-prefix cap of the
// flood, the heap grows by less than floodHeapBound, and /api/peers and
// /api/experts stay small.
func TestSybilFloodKeepsHonestPeers(t *testing.T) {
	start := time.Now()
	peers := startSwarm(t, floodHonest, func(i int, c *Config) { c.HTTPAddr = "127.0.0.1:0" })
	wait.For(t, slow(15*time.Second), "catalogs complete", func() error { return catalogsHoldAll(peers, nil) })
	before := heapInUse() // the flood's own keys and envelopes are dropped before the heap is measured again
	flood := sybils(t, floodKeys)
	t.Logf("%d peers up and %d identities made in %s", floodHonest, floodKeys, time.Since(start).Round(time.Millisecond))

	// Over GossipSub: two hostile hosts, each meshed with every honest
	// peer, publish announcements each signed (envelope and GossipSub
	// message) by its own fresh key.
	ctx, cancel := context.WithTimeout(context.Background(), slow(time.Minute))
	defer cancel()
	var topics []*pubsub.Topic
	var hostile []io.Closer
	for range 2 {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		hostile = append(hostile, h)
		ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithPeerOutboundQueueSize(floodGossiped))
		if err != nil {
			t.Fatal(err)
		}
		topic, err := ps.Join(experts.Topic)
		if err != nil {
			t.Fatal(err)
		}
		sub, _ := topic.Subscribe()
		defer sub.Cancel()
		for _, p := range peers {
			if err := h.Connect(ctx, peer.AddrInfo{ID: p.ID(), Addrs: p.Host.Addrs()}); err != nil {
				t.Fatal(err)
			}
		}
		topics = append(topics, topic)
	}
	wait.For(t, slow(10*time.Second), "hostile hosts on the topic", func() error {
		for _, tp := range topics {
			if len(tp.ListPeers()) < floodHonest {
				return fmt.Errorf("%d topic peers", len(tp.ListPeers()))
			}
		}
		return nil
	})
	// Honest heartbeats keep Accepted moving; prefix_full counts only the
	// flood (each peer takes at most the cap of its prefixes).
	counted := func() uint64 {
		var n uint64
		for _, p := range peers {
			n += p.Gossip.Rejected()[experts.RejectPrefixFull]
		}
		return n
	}
	gossipStart, base := time.Now(), counted()
	for i, s := range flood[:floodGossiped] {
		if err := topics[i%2].Publish(ctx, s.env, pubsub.WithSecretKeyAndPeerId(s.key, s.id)); err != nil {
			t.Fatal(err)
		}
		if i%200 == 199 { // let validation keep up rather than overflow its queue
			time.Sleep(20 * time.Millisecond)
		}
	}
	var last uint64
	wait.For(t, slow(30*time.Second), "the gossiped flood has been validated", func() error {
		time.Sleep(time.Second)
		n := counted()
		if n == last && n > base {
			return nil
		}
		last = n
		return fmt.Errorf("%d dropped for their prefix so far", n-base)
	})
	t.Logf("gossiped %d identities; %d dropped for their prefix across the honest peers in %s", floodGossiped, counted()-base, time.Since(gossipStart).Round(time.Millisecond))

	// Straight into the validation path: each envelope verified once, then
	// offered to every honest catalog as gossip would.
	direct := time.Now()
	for _, s := range flood[floodGossiped:] {
		now := time.Now()
		a, err := experts.Open(s.env, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range peers {
			if p.Catalog.Admits(a) == nil {
				p.Catalog.Apply(a, s.env, now)
			}
		}
	}
	peak := 0
	for _, p := range peers {
		peak = max(peak, p.Catalog.Len())
	}
	// Leaves of identities that mostly never entered: tombstones for strangers.
	for _, s := range flood[len(flood)-floodLeaves:] {
		now := time.Now()
		a, err := experts.Open(s.leaveEnv, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range peers {
			p.Catalog.Apply(a, s.leaveEnv, now)
		}
	}
	t.Logf("%d identities and %d leaves through the validation path of %d peers in %s; the largest catalog held %d entries", floodKeys-floodGossiped, floodLeaves, floodHonest, time.Since(direct).Round(time.Millisecond), peak)
	flood, topics = nil, nil
	for _, h := range hostile { // the attacker's memory is not the honest peers'
		h.Close()
	}

	for i, p := range peers {
		n := p.Catalog.Len()
		pre, full := p.Catalog.Refused()
		t.Logf("peer %d: catalog %d entries, %d tombstones, refused %d (prefix) %d (full), validator rejected %d prefix_full, remembers %d authors",
			i, n, p.Catalog.Tombstones(), pre, full, p.Gossip.Rejected()[experts.RejectPrefixFull], p.Gossip.Authors())
		if n > floodHonest-1+2*experts.DefaultPrefixCap {
			t.Errorf("peer %d holds %d entries: more than the honest peers and two prefixes' caps", i, n)
		}
		if p.Catalog.Tombstones() > experts.MaxTombstones {
			t.Errorf("peer %d: %d tombstones", i, p.Catalog.Tombstones())
		}
	}
	if err := catalogsHoldAll(peers, nil); err != nil {
		t.Fatalf("an honest peer was pushed out: %v", err)
	}
	after := heapInUse()
	grew := int64(after) - int64(before)
	t.Logf("heap in use %d MiB before the flood, %d MiB after (%+d KiB)", before>>20, after>>20, grew>>10)
	if grew > floodHeapBound {
		t.Errorf("the heap grew by %d MiB under the flood, bound %d MiB", grew>>20, floodHeapBound>>20)
	}
	for i, p := range peers {
		ps, ex, big := fetchSize(t, p, "/api/peers"), fetchSize(t, p, "/api/experts"), fetchSize(t, p, fmt.Sprintf("/api/peers?limit=%d", api.MaxPageSize))
		if i == 0 {
			t.Logf("/api/peers %d bytes (default page), %d bytes (limit %d); /api/experts %d bytes", ps, big, api.MaxPageSize, ex)
		}
		if ps > floodPeersBound || ex > floodExpertsBound {
			t.Errorf("peer %d: /api/peers %d bytes, /api/experts %d bytes", i, ps, ex)
		}
	}
	// They still hold: a heartbeat later the honest peers are all there.
	time.Sleep(peers[0].Gossip.Interval())
	if err := catalogsHoldAll(peers, nil); err != nil {
		t.Fatalf("after a heartbeat: %v", err)
	}
}
