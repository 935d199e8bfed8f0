package p2p

import (
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

func TestPrefix(t *testing.T) {
	relay := "/ip4/203.0.113.5/tcp/4001/p2p/12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq/p2p-circuit"
	cases := []struct {
		addr, prefix string
		local        bool
	}{
		{"/ip4/203.0.113.77/tcp/4001", "ip4/203.0.113.0/24", false},
		{"/ip4/203.0.113.1/udp/4001/quic-v1", "ip4/203.0.113.0/24", false},
		{"/ip6/2001:db8:aa:bb::1/tcp/4001", "ip6/2001:db8:aa::/48", false},
		{"/ip6/::ffff:198.51.100.7/tcp/1", "ip4/198.51.100.0/24", false},
		{relay, "relay/ip4/203.0.113.0/24", false},
		{"/ip4/127.0.0.1/tcp/1", "ip4/127.0.0.0/24", true},
		{"/ip4/192.168.1.20/tcp/1", "ip4/192.168.1.0/24", true},
		{"/ip4/100.64.3.3/tcp/1", "ip4/100.64.3.0/24", true},
		{"/ip6/::1/tcp/1", "ip6/::/48", true},
		{"/dns4/example.com/tcp/1", "", false},
	}
	for _, c := range cases {
		a := ma.StringCast(c.addr)
		if got := Prefix(a); got != c.prefix {
			t.Errorf("Prefix(%s) = %q, want %q", c.addr, got, c.prefix)
		}
		if got := IsLocal(a); got != c.local {
			t.Errorf("IsLocal(%s) = %v, want %v", c.addr, got, c.local)
		}
	}
}
