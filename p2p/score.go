package p2p

import (
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// GossipSub peer scoring. Every neighbour has a score that GossipSub keeps
// from what it does: small positive amounts for being useful on a topic
// (each topic's owner sets those; see experts.TopicScoreParams), penalties
// for invalid messages, for many peers behind one IP, and for broken
// protocol promises. Below the thresholds a neighbour is first no longer
// gossiped with, then not published to, then ignored altogether
// (graylisted). Honest peers sit at zero or above.

// ScoreParams are mwpeer's peer-wide scoring parameters; topics are added by
// their owners with Topic.SetScoreParams.
func ScoreParams() *pubsub.PeerScoreParams {
	return &pubsub.PeerScoreParams{
		Topics: map[string]*pubsub.TopicScoreParams{},
		// Positive topic scores add up to at most +10: being useful buys a
		// neighbour the benefit of the doubt for one invalid message, not
		// immunity.
		TopicScoreCap: 10,
		// P5, application score: unused for now (trust's scores could
		// feed it); weight 0.
		AppSpecificScore:  func(peer.ID) float64 { return 0 },
		AppSpecificWeight: 0,
		// P6, IP colocation: every peer connected from an IP that more
		// than 10 of our neighbours share gets -10 × (n-10)²: 11 cost -10,
		// 12 -40, 13 -90 (all of them graylisted). One machine running a
		// thousand identities is the Sybil this catches. 10 leaves room
		// for what is honest: a household or an office behind one NAT
		// runs a few peers, and carrier-grade NAT puts unrelated users
		// behind one IP, but rarely 11 of them among one peer's
		// neighbours. Local ranges are exempt (LocalNets): loopback is
		// this machine (tests run tens of peers on it) and a private
		// address is our own LAN, whose peers do not pass through a NAT to
		// reach us and so show their own addresses.
		IPColocationFactorWeight:    -10,
		IPColocationFactorThreshold: 10,
		IPColocationFactorWhitelist: LocalNets,
		// P7, broken promises (IHAVE without the IWANT answered, GRAFT
		// within the backoff): -10 × (n-6)² past 6, fading over ten
		// minutes. A loaded honest peer breaks a few; a peer that
		// advertises what it never sends breaks them all.
		BehaviourPenaltyWeight:    -10,
		BehaviourPenaltyThreshold: 6,
		BehaviourPenaltyDecay:     pubsub.ScoreParameterDecay(10 * time.Minute),
		DecayInterval:             pubsub.DefaultDecayInterval,
		DecayToZero:               pubsub.DefaultDecayToZero,
		// A peer that disconnects keeps its score ten minutes: reconnecting
		// does not wipe a graylisting.
		RetainScore: 10 * time.Minute,
	}
}

// ScoreThresholds are where a neighbour's score changes how it is treated.
func ScoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		// Below -10 (two invalid messages, or a crowded IP) no gossip
		// (IHAVE/IWANT) is exchanged with it.
		GossipThreshold: -10,
		// Below -50 our own announcements are not published to it.
		PublishThreshold: -50,
		// Below -80 everything it sends is dropped unread.
		GraylistThreshold: -80,
		// Peer exchange (PX, on prune) is followed only from a neighbour
		// with a score of 1: one that delivered an announcement first or
		// stayed 100 s in our mesh. A stranger that just connected cannot
		// steer our mesh towards its Sybils.
		AcceptPXThreshold: 1,
		// When the median score of our mesh falls below 1 (the mesh is
		// filled with idle or new peers), GossipSub grafts better-scored
		// ones.
		OpportunisticGraftThreshold: 1,
	}
}

// ScoreInspectPeriod is how often the scores are copied out for Scores and
// the metrics.
const ScoreInspectPeriod = 5 * time.Second

// scores keeps the latest copy of GossipSub's peer scores.
type scores struct {
	mu   sync.Mutex
	last map[peer.ID]float64
}

func (s *scores) inspect(m map[peer.ID]float64) {
	s.mu.Lock()
	s.last = m
	s.mu.Unlock()
}

func (s *scores) snapshot() map[peer.ID]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[peer.ID]float64, len(s.last))
	for p, v := range s.last {
		out[p] = v
	}
	return out
}

func (s *scores) below(threshold float64) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.last {
		if v < threshold {
			n++
		}
	}
	return float64(n)
}

func (s *scores) register(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	th := ScoreThresholds()
	for _, g := range []struct {
		name, help string
		below      float64
	}{
		{"mwpeer_gossip_peers_below_gossip_threshold", "Neighbours whose GossipSub score is below the gossip threshold.", th.GossipThreshold},
		{"mwpeer_gossip_peers_graylisted", "Neighbours whose GossipSub score is below the graylist threshold: everything they send is dropped.", th.GraylistThreshold},
	} {
		below := g.below
		_ = reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: g.name, Help: g.help}, func() float64 { return s.below(below) }))
	}
}

// Scores returns the latest GossipSub score of each neighbour (copied every
// ScoreInspectPeriod).
func (h *Host) Scores() map[peer.ID]float64 { return h.scores.snapshot() }
