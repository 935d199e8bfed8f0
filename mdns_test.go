package mwpeer

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/internal/wait"
)

// multicastOK says whether this machine can deliver multicast to itself,
// which mDNS needs: an up interface with the MULTICAST flag (loopback has
// none on Linux, so go-libp2p's mDNS uses the others and their multicast
// loop). It returns why not.
func multicastOK() error {
	ifaces, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, i := range ifaces {
		if i.Flags&net.FlagUp != 0 && i.Flags&net.FlagMulticast != 0 {
			return nil
		}
	}
	return fmt.Errorf("no network interface is up with the MULTICAST flag (mDNS sends to 224.0.0.251 and ff02::fb on those), only %d without", len(ifaces))
}

// TestMDNSPeersFindEachOtherWithoutBootstrap: two peers on loopback with no
// bootstrap address join through mDNS and learn what the other serves.
func TestMDNSPeersFindEachOtherWithoutBootstrap(t *testing.T) {
	if err := multicastOK(); err != nil {
		t.Skip("mDNS cannot work here: " + err.Error())
	}
	// A service name of this test's own, so that peers of other tests or
	// runs on this machine are not found.
	service := fmt.Sprintf("_mwpeer-test-%d._udp", time.Now().UnixNano()%1e9)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var peers []*Peer
	for i := range 2 {
		cfg := testConfig(t)
		cfg.Models = []string{fmt.Sprintf("mdns-%d", i)}
		cfg.MDNS, cfg.MDNSService = true, service
		p, err := Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		peers = append(peers, p)
	}
	wait.For(t, slow(20*time.Second), "the peers find each other by mDNS and exchange announcements", func() error {
		for i, p := range peers {
			other := peers[1-i]
			if _, ok := p.Catalog.Get(other.ID().String()); !ok {
				return fmt.Errorf("peer %d has not heard of peer %d (connected peers: %d)", i, 1-i, len(p.Host.Network().Peers()))
			}
		}
		return nil
	})
}

// TestMDNSOffByDefaultInConfig: a program that embeds peers multicasts
// only if it asks; the command turns it on (see internal/cli).
func TestMDNSOffByDefaultInConfig(t *testing.T) {
	if DefaultConfig().MDNS {
		t.Fatal("DefaultConfig has MDNS on")
	}
}
