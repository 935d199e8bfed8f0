package cli

import (
	"fmt"
	"net"
	"slices"

	manet "github.com/multiformats/go-multiaddr/net"
)

// applyTestRoutable implements MWPEER_TEST_ROUTABLE, a hidden variable for
// tests only: a comma-separated list of IPv4 ranges, each exactly one of
// go-multiaddr's well-known unroutable ranges, that this process treats as
// public. The NAT test (internal/nattest) builds its "internet" in
// 198.18.0.0/15, the benchmarking range, which go-multiaddr calls
// unroutable; without this no relay reservation, autorelay or hole punch
// would use those addresses. It is not listed in --help, and it must never
// be set on a real peer: it would make the peer advertise addresses that do
// not route on the internet.
func applyTestRoutable(v string) error {
	for _, s := range splitList(v) {
		_, want, err := net.ParseCIDR(s)
		if err != nil || want.IP.To4() == nil {
			return fmt.Errorf("MWPEER_TEST_ROUTABLE: %q is not an IPv4 CIDR range", s)
		}
		i := slices.IndexFunc(manet.Unroutable4, func(n *net.IPNet) bool { return n.String() == want.String() })
		if i < 0 {
			return fmt.Errorf("MWPEER_TEST_ROUTABLE: %s is not one of go-multiaddr's unroutable ranges", s)
		}
		manet.Unroutable4 = slices.Delete(slices.Clone(manet.Unroutable4), i, i+1)
	}
	return nil
}
