package mwpeer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/swarm"
)

// TestAutoShardSplitsTheSwarm: six full peers with the automatic width and
// tiny thresholds (split above 4 authors per shard) start unsharded and
// split in two shards of three on their own. Status shows it; after the
// grace every catalog holds its shard only (other-shard peers it vouches
// for expire with their last announcement); the shard-1 peers provide
// their new rendezvous key; and a prompt from shard 0 for a model served
// only in shard 1 is found through DHT providers and answered there.
func TestAutoShardSplitsTheSwarm(t *testing.T) {
	const n, rare = 6, "rare-in-shard-1"
	shardOf := func(i int) int { return i % 2 } // at 1 bit
	peers := startSwarm(t, n, func(i int, c *Config) {
		c.AnnounceShardBits = AnnounceShardAuto
		c.AnnounceShardSplit, c.AnnounceShardMerge = 4, 1
		c.AnnounceShardDwell = slow(2 * time.Second)
		c.AnnounceShardGrace = 2 * c.AnnounceMin
		identityInShard(t, c.DataDir, 1, shardOf(i))
		c.Models = []string{"common"}
		if i == 1 {
			c.Models = []string{rare}
		}
	})
	start := time.Now()
	for i, p := range peers {
		if st := p.Status().Announce; !st.ShardAuto || st.ShardBits != 0 || st.Topic != experts.Topic {
			t.Fatalf("peer %d starts with %+v, want automatic and unsharded", i, st)
		}
	}
	wait.For(t, slow(60*time.Second), "every peer splits to 1 bit", func() error {
		for i, p := range peers {
			if st := p.Status().Announce; st.ShardBits != 1 || st.Topic != experts.AnnounceTopic(1, shardOf(i)) {
				return fmt.Errorf("peer %d: %+v (catalog %d)", i, st, p.Catalog.Len())
			}
		}
		return nil
	})
	split := time.Since(start)
	holdsShard := func() error {
		for i, p := range peers {
			if st := p.Status().Announce; st.ShardGraceS > 0 {
				return fmt.Errorf("peer %d in its grace period for %.1f s more", i, st.ShardGraceS)
			}
		}
		return holdTheirShards(peers, shardOf)
	}
	wait.For(t, slow(90*time.Second), "every catalog holds its shard and only it", holdsShard)
	settled := time.Since(start)

	wait.For(t, slow(30*time.Second), "the shard-1 peers provide their rendezvous key at 1 bit", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		found, err := experts.FindProviders(ctx, peers[0].Host.DHT, experts.KindAnnounceShard, experts.AnnounceShardKey(1, 1), 8)
		if err != nil {
			return err
		}
		got := 0
		for _, ai := range found {
			if experts.AnnounceShard(ai.ID, 1) == 1 {
				got++
			}
		}
		if got != n/2 {
			return fmt.Errorf("%d providers of shard 1's key, want %d", got, n/2)
		}
		return nil
	})

	asker, expert := peers[0], peers[1]
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
	for i, p := range peers {
		if st := p.Status().Announce; st.ShardReason == "" || st.ShardChanged.IsZero() || st.ShardAuthors != n/2 || st.ShardEstimate != n {
			t.Errorf("peer %d status %+v, want a reason, a time, %d authors, an estimate of %d", i, st, n/2, n)
		}
		if r := p.Gossip.Rejected()[experts.RejectWrongShard]; r != 0 {
			t.Errorf("peer %d rejected %d wrong-shard announcements from honest peers", i, r)
		}
	}
	t.Logf("split after %s; graces over and catalogs split after %s", split.Round(time.Millisecond), settled.Round(time.Millisecond))
}
