package p2p

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	ma "github.com/multiformats/go-multiaddr"
)

func writeKey(t *testing.T, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "swarm.key")
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func newKeyFile(t *testing.T) pnet.PSK {
	t.Helper()
	data, err := NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	psk, err := ReadSwarmKey(writeKey(t, data, 0o600))
	if err != nil {
		t.Fatal(err)
	}
	if len(psk) != 32 {
		t.Fatalf("key of %d bytes", len(psk))
	}
	return psk
}

func TestSwarmKeyFileErrorsNameTheFile(t *testing.T) {
	good, err := NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "absent.key")
	cases := []struct {
		name, path, want string
	}{
		{"missing", missing, "absent.key"},
		{"malformed", writeKey(t, []byte("/key/swarm/psk/1.0.0/\n/base16/\nnothex\n"), 0o600), "is not a /key/swarm/psk/1.0.0/ key"},
		{"wrong header", writeKey(t, []byte("hello\n"), 0o600), "is not a /key/swarm/psk/1.0.0/ key"},
		{"short", writeKey(t, good[:len(good)-10], 0o600), "is not a /key/swarm/psk/1.0.0/ key"},
		{"world-readable", writeKey(t, good, 0o644), "readable by every user"},
		{"a directory", t.TempDir(), "not a regular file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadSwarmKey(tc.path)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %s or say %q", err, tc.path, tc.want)
			}
		})
	}
}

func TestPrivateAddrsKeepTCPOnly(t *testing.T) {
	var in []ma.Multiaddr
	for _, s := range []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1", "/ip6/::/tcp/4001", "/ip6/::/udp/4001/quic-v1", "/ip4/1.2.3.4/udp/4001/quic-v1/webtransport"} {
		in = append(in, ma.StringCast(s))
	}
	kept, dropped := privateAddrs(in)
	if len(kept) != 2 || dropped != 3 || kept[0].String() != "/ip4/0.0.0.0/tcp/4001" || kept[1].String() != "/ip6/::/tcp/4001" {
		t.Fatalf("kept %v, dropped %d", kept, dropped)
	}
}

func newTestHost(t *testing.T, psk pnet.PSK) *Host {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{
		Identity:    key,
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0"), ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")},
		DHTMode:     DHTServer, Reachability: ReachabilityPublic, PSK: psk,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestPrivateSwarmAdmitsOnlyItsKey(t *testing.T) {
	key, other := newKeyFile(t), newKeyFile(t)
	a, b := newTestHost(t, key), newTestHost(t, key)
	stranger, open := newTestHost(t, other), newTestHost(t, nil)
	for _, addr := range a.Addrs() {
		if overUDP(addr) {
			t.Fatalf("a private host listens on %s", addr)
		}
	}
	connect := func(from, to *Host, within time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		return from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()})
	}
	if err := connect(a, b, 10*time.Second); err != nil {
		t.Fatalf("two peers with the same key: %v", err)
	}
	// A handshake under the wrong key fails or stalls; in parallel, so the
	// stalled ones cost one timeout between them.
	var wg sync.WaitGroup
	for _, tc := range []struct {
		name     string
		from, to *Host
	}{
		{"another key to a keyed peer", stranger, a},
		{"a keyed peer to another key", a, stranger},
		{"no key to a keyed peer", open, a},
		{"a keyed peer to no key", a, open},
	} {
		wg.Go(func() {
			if err := connect(tc.from, tc.to, 3*time.Second); err == nil {
				t.Errorf("%s: connected", tc.name)
			}
		})
	}
	wg.Wait()
}
