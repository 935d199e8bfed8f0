package mwpeer

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/p2p"
)

// TestForgedAnnouncementsAreRejectedAndCounted has a hostile peer, a plain
// libp2p host with GossipSub, publish announcements that are forged in
// each way the validator knows, and checks that every kind is counted by
// the peer that received it and that none reaches a catalog.
func TestForgedAnnouncementsAreRejectedAndCounted(t *testing.T) {
	peers := startSwarm(t, 3, nil)
	wait.For(t, slow(10*time.Second), "catalogs complete", func() error { return catalogsHoldAll(peers, nil) })

	victim := peers[0]
	ctx, cancel := context.WithTimeout(context.Background(), slow(30*time.Second))
	defer cancel()
	// attach starts a hostile host, a member of the announce topic meshed
	// with the victim.
	attach := func() (crypto.PrivKey, peer.ID, *pubsub.Topic) {
		key, _, _ := crypto.GenerateEd25519Key(nil)
		h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		ps, err := pubsub.NewGossipSub(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		topic, err := ps.Join(experts.Topic)
		if err != nil {
			t.Fatal(err)
		}
		sub, _ := topic.Subscribe() // be a full member so the mesh forms
		t.Cleanup(sub.Cancel)
		if err := h.Connect(ctx, peer.AddrInfo{ID: victim.ID(), Addrs: victim.Host.Addrs()}); err != nil {
			t.Fatal(err)
		}
		wait.For(t, slow(10*time.Second), "attacker and victim see each other on the topic", func() error {
			if len(topic.ListPeers()) == 0 {
				return fmt.Errorf("no topic peers yet")
			}
			for _, id := range victim.Host.PubSub.ListPeers(experts.Topic) {
				if id == h.ID() {
					return nil
				}
			}
			return fmt.Errorf("victim does not list the attacker on the topic yet")
		})
		return key, h.ID(), topic
	}
	attackerKey, attacker, topic := attach()

	now := time.Now()
	base := func(id peer.ID) experts.Announcement {
		return experts.Announcement{
			Peer: id.String(), Seq: 1, Time: now.UnixMilli(), Interval: 5000,
			Domains: []string{"code"}, Models: []experts.Model{{Name: "forged"}},
		}
	}
	seal := func(a experts.Announcement, key crypto.PrivKey) []byte {
		t.Helper()
		data, err := experts.Seal(&a, key)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}

	// 1. Wrong key: claims to be peer 1, signed by the attacker.
	wrongKey := seal(base(peers[1].ID()), attackerKey)
	// 2. Altered after signing: the attacker's own, with "code" turned into "math".
	altered := seal(base(attacker), attackerKey)
	altered = bytes.Replace(altered, []byte(`"code"`), []byte(`"math"`), 1)
	// 3. Oversized: padding past the cap (the signature is fine).
	big := base(attacker)
	big.Region = strings.Repeat("x", experts.MaxAnnouncementSize)
	bigEnv, err := (func() ([]byte, error) {
		// Seal refuses oversized output, so build the envelope by hand.
		return sealUnchecked(&big, attackerKey)
	})()
	if err != nil {
		t.Fatal(err)
	}
	// 4. Stale: dated an hour ago.
	stale := base(attacker)
	stale.Time = now.Add(-time.Hour).UnixMilli()
	// 5. From the future.
	future := base(attacker)
	future.Time = now.Add(time.Hour).UnixMilli()
	// 6. Not an envelope at all.
	garbage := []byte("{not an envelope")

	// Stale and future ones are dropped without blame (a slow clock is no
	// crime); the other kinds count against the sender's GossipSub score,
	// and the third graylists it (p2p.ScoreThresholds), so the last kind
	// comes from a second attacker.
	cases := []struct {
		name, reason string
		data         []byte
		from         *pubsub.Topic
	}{
		{"stale", experts.RejectStale, seal(stale, attackerKey), nil},
		{"future", experts.RejectFuture, seal(future, attackerKey), nil},
		{"wrong key", experts.RejectForeign, wrongKey, nil},
		{"altered after signing", experts.RejectSignature, altered, nil},
		{"oversized", experts.RejectOversized, bigEnv, nil},
		{"garbage", experts.RejectMalformed, garbage, nil},
	}
	for _, c := range cases {
		from := topic
		if c.reason == experts.RejectMalformed {
			_, _, from = attach()
		}
		before := victim.Gossip.Rejected()[c.reason]
		// GossipSub may drop a message sent while the mesh is still
		// forming, so send again (as a new message) until it arrives.
		var sent time.Time
		wait.For(t, slow(5*time.Second), c.name+" counted as "+c.reason, func() error {
			if time.Since(sent) > 500*time.Millisecond {
				if err := from.Publish(ctx, c.data); err != nil {
					t.Fatalf("%s: publish: %v", c.name, err)
				}
				sent = time.Now()
			}
			if got := victim.Gossip.Rejected()[c.reason]; got <= before {
				return fmt.Errorf("%s count still %d (all: %v, accepted %d)", c.reason, got, victim.Gossip.Rejected(), victim.Gossip.Accepted())
			}
			return nil
		})
	}
	// Three rejected messages: the victim graylists the first attacker.
	wait.For(t, slow(3*p2p.ScoreInspectPeriod), "the victim graylists the first attacker", func() error {
		if s, ok := victim.Host.Scores()[attacker]; !ok || s >= p2p.ScoreThresholds().GraylistThreshold {
			return fmt.Errorf("its score %.1f (known %v)", s, ok)
		}
		return nil
	})
	for i, p := range peers {
		if _, ok := p.Catalog.Get(attacker.String()); ok {
			t.Fatalf("peer %d put the attacker in its catalog", i)
		}
		if e, _ := p.Catalog.Get(peers[1].ID().String()); e.Serves("forged") {
			t.Fatalf("peer %d believed the forged announcement for peer 1", i)
		}
	}
	// Its valid announcements are dropped unread now; the rejections were
	// about the forgeries, not the content: the same announcement passes
	// once it is not from a graylisted sender (a second attacker relays it,
	// as GossipSub relays any author's signed message).
	good := base(attacker)
	good.Seq = 2
	for range 3 {
		good.Seq++
		good.Time = time.Now().UnixMilli()
		if err := topic.Publish(ctx, seal(good, attackerKey)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(600 * time.Millisecond)
	}
	if _, ok := victim.Catalog.Get(attacker.String()); ok {
		t.Fatal("a graylisted sender's announcement reached the catalog")
	}
	_, _, relay := attach()
	var sent time.Time
	wait.For(t, slow(5*time.Second), "valid announcement accepted from another sender", func() error {
		if time.Since(sent) > time.Second {
			good.Seq++
			good.Time = time.Now().UnixMilli()
			if err := relay.Publish(ctx, seal(good, attackerKey), pubsub.WithSecretKeyAndPeerId(attackerKey, attacker)); err != nil {
				t.Fatal(err)
			}
			sent = time.Now()
		}
		if _, ok := victim.Catalog.Get(attacker.String()); !ok {
			return fmt.Errorf("not in catalog")
		}
		return nil
	})
}
