package mwpeer

import (
	"github.com/mwpeer/mwpeer/experts/catchup"
	"github.com/mwpeer/mwpeer/experts/shard/transfer"
	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/inference/infer"
	"github.com/mwpeer/mwpeer/inference/tally"
	"github.com/mwpeer/mwpeer/p2p"
)

// StreamLimits are the resource manager's bounds on the inbound streams of
// each of mwpeer's protocols, in all and from one peer, whatever the policy
// file says. A stream beyond them is refused before its handler reads
// anything (infer and shard answer it busy, so the asking peer tries
// another). Each bound sits well above what an honest peer opens:
//
//   - infer: 32 per peer, 512 in all. A router asks one peer for one
//     prompt; 32 is many users behind one peer at once. What a peer may run
//     at once is bounded again by its serving slots (PerPeerSlots).
//   - expert: 64 per peer, 1024 in all. A generation sends each layer's
//     rows to several experts of one host in parallel, over a pool of up to
//     8 idle streams per host, for each generation running.
//   - shard: 16 per peer, 128 in all. A fetch opens at most 8 streams to a
//     source (2 per shard, 4 shards at once); the server itself serves 32
//     streams at once and 8 per peer (transfer.ServerConfig).
//   - tally: 4 per peer, 64 in all. One settlement is one stream, for shard
//     bytes and for expert calls.
//   - catalog: 4 per peer, 64 in all. A peer catches up once on joining.
var StreamLimits = []p2p.ServiceLimit{
	{Service: infer.ServiceName, Streams: 512, PeerStreams: 32},
	{Service: expert.ServiceName, Streams: 1024, PeerStreams: 64},
	{Service: transfer.ServiceName, Streams: 128, PeerStreams: 16},
	{Service: tally.ServiceName, Streams: 64, PeerStreams: 4},
	{Service: catchup.ServiceName, Streams: 64, PeerStreams: 4},
}
