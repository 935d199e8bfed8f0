package p2p

import (
	"net"
	"net/netip"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Network prefixes: the unit in which a peer counts how many strangers it
// keeps and answers from one place. A /24 of IPv4 is the usual smallest
// routed block, one hosting provider's rack or one ISP's pool; a /48 of IPv6
// is what one site is given, so every address a single machine can take
// falls in it.
const (
	PrefixBitsIPv4 = 24
	PrefixBitsIPv6 = 48
)

// Prefix is the network prefix addr counts under: "ip4/a.b.c.0/24" or
// "ip6/x:y:z::/48" for a direct address, and the relay's prefix with
// "relay/" in front for an address through a circuit relay (what a relayed
// peer has in common with others is its relay). It is "" for an address
// without an IP (a DNS name, say).
func Prefix(addr ma.Multiaddr) string {
	if addr == nil {
		return ""
	}
	if IsRelayed(addr) {
		// The relay's own address comes before /p2p-circuit.
		head, _ := ma.SplitFunc(addr, func(c ma.Component) bool { return c.Protocol().Code == ma.P_CIRCUIT })
		if p := ipPrefix(head); p != "" {
			return "relay/" + p
		}
		return ""
	}
	return ipPrefix(addr)
}

func ipPrefix(addr ma.Multiaddr) string {
	ip, err := manet.ToIP(addr)
	if err != nil {
		return ""
	}
	return IPPrefix(ip)
}

// IPPrefix is the prefix of ip: /24 for IPv4 (IPv4-mapped IPv6 included),
// /48 for IPv6, "" for an invalid IP.
func IPPrefix(ip net.IP) string {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return ""
	}
	a = a.Unmap()
	if a.Is4() {
		p, _ := a.Prefix(PrefixBitsIPv4)
		return "ip4/" + p.String()
	}
	p, _ := a.Prefix(PrefixBitsIPv6)
	return "ip6/" + p.String()
}

// IsLocal reports whether addr is on loopback, a private or link-local
// range, or carrier-grade NAT space: an address that says nothing about
// where on the Internet its peer is, since thousands of networks use the
// same ones. A relayed address is never local.
func IsLocal(addr ma.Multiaddr) bool {
	if addr == nil || IsRelayed(addr) {
		return false
	}
	ip, err := manet.ToIP(addr)
	if err != nil {
		return false
	}
	return IsLocalIP(ip)
}

// IsLocalIP is IsLocal for an IP.
func IsLocalIP(ip net.IP) bool {
	for _, n := range LocalNets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// LocalNets are the ranges IsLocal means: loopback, RFC 1918 and RFC 6598
// (carrier-grade NAT) IPv4, link-local, and IPv6 unique local addresses.
var LocalNets = func() []*net.IPNet {
	var out []*net.IPNet
	for _, s := range []string{
		"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
		"::1/128", "fc00::/7", "fe80::/10",
	} {
		_, n, _ := net.ParseCIDR(s)
		out = append(out, n)
	}
	return out
}()
