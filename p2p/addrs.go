package p2p

import (
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// ParseAddrs parses each value (empty ones are skipped), naming the first
// bad one in the error.
func ParseAddrs(vals []string) ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, 0, len(vals))
	for _, v := range vals {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		a, err := ma.NewMultiaddr(v)
		if err != nil {
			return nil, fmt.Errorf("bad multiaddr %q: %v", v, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// ParseBootstrap parses bootstrap multiaddrs, each of which must end in
// /p2p/<peer ID>. Addresses of one peer are merged.
func ParseBootstrap(vals []string) ([]peer.AddrInfo, error) {
	addrs, err := ParseAddrs(vals)
	if err != nil {
		return nil, err
	}
	for i, a := range addrs {
		if _, err := peer.AddrInfoFromP2pAddr(a); err != nil {
			return nil, fmt.Errorf("bad bootstrap address %q: it must end in /p2p/<peer ID> (%v)", vals[i], err)
		}
	}
	infos, err := peer.AddrInfosFromP2pAddrs(addrs...)
	if err != nil {
		return nil, fmt.Errorf("bad bootstrap address: %v", err)
	}
	return infos, nil
}

// BootstrapAddr picks, from a peer's addresses with /p2p/<id>, the one
// another machine would pass to --bootstrap: the first public one, else the
// first not on loopback, else the first direct one, else any ("" for none).
func BootstrapAddr(addrs []ma.Multiaddr) string {
	if len(addrs) == 0 {
		return ""
	}
	best, bestRank := addrs[0], 99
	for _, a := range addrs {
		rank := 3
		switch {
		case IsRelayed(a):
			rank = 4
		case manet.IsPublicAddr(a):
			rank = 0
		case !manet.IsIPLoopback(a):
			rank = 1
		}
		if rank < bestRank {
			best, bestRank = a, rank
		}
	}
	return best.String()
}
