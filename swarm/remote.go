package swarm

import (
	"context"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/p2p"
)

// HostRemote is the Remote of a libp2p host: the relay policy decides how to
// reach the expert, then /mwpeer/infer carries the request.
type HostRemote struct {
	Host   host.Host
	Policy *p2p.RelayPolicy
	// Call runs the request once the expert is reachable (the infer
	// protocol's client).
	Infer func(ctx context.Context, h host.Host, id peer.ID, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error)
}

// Call implements Remote. A peer that cannot be reached, or only through a
// relay while others could answer, is ErrNoExpert, so dispatch asks the next
// candidate.
func (hr HostRemote) Call(ctx context.Context, id peer.ID, addrs []ma.Multiaddr, only bool, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	if len(addrs) > 0 {
		hr.Host.Peerstore().AddAddrs(id, addrs, peerstore.TempAddrTTL)
	}
	cctx, relayed, err := hr.Policy.Prepare(ctx, id, only)
	if err != nil {
		if ctx.Err() != nil {
			return inference.Final{}, ctx.Err()
		}
		return inference.Final{}, fmt.Errorf("%w: %w", inference.ErrNoExpert, err)
	}
	f, err := hr.Infer(cctx, hr.Host, id, req, emit)
	if err != nil && relayed && ctx.Err() == nil && !errors.Is(err, inference.ErrInvalidRequest) {
		return f, fmt.Errorf("%w: over a relayed connection: %v", inference.ErrNoExpert, err)
	}
	return f, err
}
