package p2p

import (
	"fmt"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
)

// ServiceLimit bounds the inbound streams of one resource-manager service
// (the name a protocol's handler attaches its streams to): in all, and from
// any one peer. Memory keeps libp2p's defaults for services, which scale
// with the machine's memory.
type ServiceLimit struct {
	Service     string
	Streams     int // inbound streams of the service at once, from every peer
	PeerStreams int // inbound streams of the service at once, from one peer
}

// resourceManager is libp2p's default resource manager (its limits for
// connections, peers and libp2p's own services, scaled to the machine) with
// limits on the inbound streams of each of services. A stream beyond a limit
// fails to attach to its service, and the handler refuses it.
func resourceManager(services []ServiceLimit) (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	for _, s := range services {
		if s.Service == "" || s.Streams <= 0 || s.PeerStreams <= 0 || s.PeerStreams > s.Streams {
			return nil, fmt.Errorf("p2p: bad limits for service %q: %d streams, %d per peer", s.Service, s.Streams, s.PeerStreams)
		}
		base, inc := limits.ServiceBaseLimit, limits.ServiceLimitIncrease
		base.StreamsInbound, inc.StreamsInbound = s.Streams, 0
		base.Streams = max(base.Streams, base.StreamsInbound+base.StreamsOutbound)
		limits.AddServiceLimit(s.Service, base, inc)
		base, inc = limits.ServicePeerBaseLimit, limits.ServicePeerLimitIncrease
		base.StreamsInbound, inc.StreamsInbound = s.PeerStreams, 0
		base.Streams = max(base.Streams, base.StreamsInbound+base.StreamsOutbound)
		limits.AddServicePeerLimit(s.Service, base, inc)
	}
	mgr, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()))
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	return mgr, nil
}
