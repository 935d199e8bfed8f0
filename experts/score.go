package experts

import (
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
)

// TopicScoreParams are the GossipSub peer-scoring parameters of the announce
// topic (the peer-wide ones, thresholds included, are p2p's). What a
// neighbour earns here is small and capped; what it loses for forwarding
// an announcement the validator rejects grows with the square of how many,
// so a few rejections graylist it (see p2p.ScoreThresholds) and honest
// peers, whose validators agree with ours, never lose anything.
//
// Our topic is slow and bursty: a peer announces every 5 to 60 s, and a
// quiet swarm of a few peers carries a message every few seconds. So
// GossipSub's mesh-delivery penalties (P3, P3b), which punish a mesh
// neighbour for delivering less than a set rate, are off: on this topic
// they would prune honest neighbours in every small swarm.
func TopicScoreParams() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		// The only scored topic: its score is the peer's topic score.
		TopicWeight: 1,
		// P1, time in our mesh: +0.01 a second up to +3 after five
		// minutes. A long-lived neighbour earns a little slack, and a
		// little standing for PX (p2p.ScoreThresholds' AcceptPXThreshold
		// is 1: 100 s in the mesh or one first delivery).
		TimeInMeshWeight:  0.01,
		TimeInMeshQuantum: time.Second,
		TimeInMeshCap:     300,
		// P2, announcements a neighbour delivered to us first: +1 each, at
		// most +10, fading over ten minutes. Capped low because valid
		// messages are cheap (a Sybil flood delivers many), and it
		// should never buy back more than one invalid message's worth.
		FirstMessageDeliveriesWeight: 1,
		FirstMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(10 * time.Minute),
		FirstMessageDeliveriesCap:    10,
		// P3 and P3b off (see above).
		// P4, announcements our validator rejected (bad signature, wrong
		// author, malformed, oversized, broken limits; not stale or
		// too frequent, which honest peers forward with a slow clock or
		// link): -10 × count². One costs -10 (no longer gossiped with),
		// two -40, three -90: graylisted (below -80) unless it earned
		// the full positive cap, four always. The count fades to 1 %
		// over an hour, so a peer that sent a thousand stays graylisted
		// for more than an hour, one that sent four for about five minutes.
		InvalidMessageDeliveriesWeight: -10,
		InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(time.Hour),
	}
}
