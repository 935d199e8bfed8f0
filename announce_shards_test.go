package mwpeer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/p2p"
	"github.com/mwpeer/mwpeer/swarm"
)

// identityInShard writes into dir an identity whose peer ID is in
// announcement shard want of bits, so a test places its peers.
func identityInShard(t testing.TB, dir string, bits, want int) {
	t.Helper()
	for {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		id, err := peer.IDFromPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if experts.AnnounceShard(id, bits) != want {
			continue
		}
		data, err := crypto.MarshalPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p2p.IdentityFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
}

// TestAnnounceShardsSplitTheCatalog: six peers with announcements split in
// two shards (three each). Every catalog comes to hold its own shard's
// peers and never another's; a peer of shard 0 finds the one peer of shard
// 1 serving a model through the DHT, and a prompt it routes for that model
// is answered there.
func TestAnnounceShardsSplitTheCatalog(t *testing.T) {
	const n, bits, rare = 6, 1, "rare-in-shard-1"
	shardOf := func(i int) int { return i % 2 } // peer 0 is the bootstrap, in shard 0
	peers := startSwarm(t, n, func(i int, c *Config) {
		c.AnnounceShardBits = bits
		identityInShard(t, c.DataDir, bits, shardOf(i))
		c.Models = []string{"common"}
		if i == 1 {
			c.Models = []string{rare}
		}
	})
	for i, p := range peers {
		if st := p.Status().Announce; st.ShardBits != bits || st.Shard != shardOf(i) || st.Topic != experts.AnnounceTopic(bits, shardOf(i)) {
			t.Fatalf("peer %d announces %+v, want shard %d of %d bits", i, st, shardOf(i), bits)
		}
	}
	took := wait.For(t, slow(20*time.Second), "every catalog holds its shard and only it", func() error { return holdTheirShards(peers, shardOf) })
	t.Logf("catalogs hold their shards after %s", took)

	// Each peer provides its shard's rendezvous key, so a peer whose
	// neighbours are of other shards finds its own (Gossip.mend).
	wait.For(t, slow(20*time.Second), "the shard-1 peers provide their rendezvous key", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		found, err := experts.FindProviders(ctx, peers[0].Host.DHT, experts.KindAnnounceShard, experts.AnnounceShardKey(bits, 1), 8)
		if err != nil {
			return err
		}
		got := 0
		for _, ai := range found {
			if experts.AnnounceShard(ai.ID, bits) != 1 {
				return fmt.Errorf("%s provides shard 1's key from shard 0", ai.ID)
			}
			got++
		}
		if got != n/2 {
			return fmt.Errorf("%d providers of shard 1's key, want %d", got, n/2)
		}
		return nil
	})

	// Models are provided under keys salted by shard: the expert's under
	// shard 1's, and, as the only server of a rare model, under the
	// unsalted key too (experts.DefaultFewProviders), where the router's
	// lookup from shard 0 (experts.Finder) looks first.
	asker, expert := peers[0], peers[1]
	wait.For(t, slow(20*time.Second), "the expert provides its model's salted and unsalted keys", func() error {
		if !expert.Advertise.ProvidedAt(experts.KindModel, rare, bits) || !expert.Advertise.Provided(experts.KindModel, rare) {
			return errors.New("not provided yet")
		}
		return nil
	})
	finder := experts.Finder{Routing: asker.Host.DHT, Self: asker.ID(), Widths: experts.StaticWidths(bits)}
	wait.For(t, slow(20*time.Second), "shard 0 finds the shard-1 expert on the DHT", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		found, err := finder.Find(ctx, experts.KindModel, rare, 8)
		if err != nil {
			return err
		}
		for _, ai := range found {
			if ai.ID == expert.ID() {
				return nil
			}
		}
		return fmt.Errorf("%d providers of %s, not the expert", len(found), rare)
	})
	ctx, cancel := context.WithTimeout(context.Background(), slow(20*time.Second))
	defer cancel()
	ans, err := asker.Router().Complete(ctx, swarm.Query{Request: inference.Request{Model: rare, Prompt: "hello across shards"}},
		func(string, inference.Chunk) error { return nil })
	if err != nil {
		t.Fatalf("prompt for %s from shard 0: %v", rare, err)
	}
	if len(ans.Experts) == 0 || ans.Experts[0] != expert.ID().String() || ans.Text == "" {
		t.Fatalf("answered by %v (%q), want the shard-1 expert %s", ans.Experts, ans.Text, expert.ID())
	}
	// The prompt's connection did not bring the expert into shard 0's
	// catalogs, nor did any catch-up, and nobody gossiped across.
	if err := holdTheirShards(peers, shardOf); err != nil {
		t.Fatal(err)
	}
	for i, p := range peers {
		if r := p.Gossip.Rejected()[experts.RejectWrongShard]; r != 0 {
			t.Errorf("peer %d rejected %d wrong-shard announcements from honest peers", i, r)
		}
	}
}

func TestAnnounceShardBitsAreValidated(t *testing.T) {
	for bits, ok := range map[int]bool{AnnounceShardAuto - 1: false, AnnounceShardAuto: true, 0: true, 1: true, experts.MaxAnnounceShardBits: true, experts.MaxAnnounceShardBits + 1: false} {
		cfg := testConfig(t)
		cfg.AnnounceShardBits = bits
		err := cfg.Validate()
		var fe *FieldError
		if ok != (err == nil) || (err != nil && (!errors.As(err, &fe) || fe.Field != "AnnounceShardBits")) {
			t.Errorf("%d shard bits: %v", bits, err)
		}
	}
}

// holdTheirShards says why not, unless every peer's catalog holds every
// other peer of its shard and none of another (peer i in shard shardOf(i)).
func holdTheirShards(peers []*Peer, shardOf func(int) int) error {
	for i, p := range peers {
		for j, q := range peers {
			has := p.Catalog.Has(q.ID().String())
			switch {
			case i == j:
			case shardOf(i) != shardOf(j) && has:
				return fmt.Errorf("peer %d holds peer %d of another shard", i, j)
			case shardOf(i) == shardOf(j) && !has:
				return fmt.Errorf("peer %d does not know peer %d of its shard (catalog %d)", i, j, p.Catalog.Len())
			}
		}
	}
	return nil
}
