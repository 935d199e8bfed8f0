package mwpeer

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/p2p"
)

// connPrefix is the network prefix (p2p.Prefix) of a live connection to id,
// "" when there is none: where a peer really is, whatever it announces.
// Routing spreads a prompt's experts over prefixes (routing.Diverse).
func (p *Peer) connPrefix(id string) string {
	pid, err := peer.Decode(id)
	if err != nil {
		return ""
	}
	for _, c := range p.Host.Network().ConnsToPeer(pid) {
		if pr := p2p.Prefix(c.RemoteMultiaddr()); pr != "" {
			return pr
		}
	}
	return ""
}

// rewrite applies the announcement rewrite tests install (see Peer.lie) to
// a, this peer's announcement of itself.
func (p *Peer) rewrite(a *experts.Announcement) {
	if f := p.lie.Load(); f != nil {
		(*f)(a)
	}
}
