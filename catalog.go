package mwpeer

import (
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// vouched reports whether this peer knows id first hand: it is connected to
// it or has pinged it. The catalog never evicts such a peer for one it only
// heard of (experts.Catalog.SetKeep). It runs under the catalog's lock.
func (p *Peer) vouched(id string) bool {
	pid, err := peer.Decode(id)
	if err != nil {
		return false
	}
	return p.Host.Network().Connectedness(pid) == network.Connected || p.Latency.Measured(pid)
}
