package p2p

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"runtime"

	"github.com/libp2p/go-libp2p/core/pnet"
	ma "github.com/multiformats/go-multiaddr"
)

// A swarm key makes a private swarm: every connection is encrypted with the
// pre-shared key before anything else is said, so a peer without it cannot
// connect at all. The file format is libp2p's (and IPFS's swarm.key):
//
//	/key/swarm/psk/1.0.0/
//	/base16/
//	<64 hex digits>

// maxSwarmKeyFile bounds what is read of a swarm key file.
const maxSwarmKeyFile = 4096

// NewSwarmKey returns the file contents of a fresh random swarm key.
func NewSwarmKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("swarm key: %w", err)
	}
	return fmt.Appendf(nil, "/key/swarm/psk/1.0.0/\n/base16/\n%s\n", hex.EncodeToString(k)), nil
}

// ReadSwarmKey reads a swarm key file. A file others may read is refused
// (the key is the swarm's only secret), as is one that does not decode;
// the error names the file.
func ReadSwarmKey(path string) (pnet.PSK, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("swarm key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("swarm key file %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o004 != 0 {
		return nil, fmt.Errorf("swarm key file %s is readable by every user (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := readCapped(path, maxSwarmKeyFile)
	if err != nil {
		return nil, fmt.Errorf("swarm key file %s: %w", path, err)
	}
	psk, err := pnet.DecodeV1PSK(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("swarm key file %s is not a /key/swarm/psk/1.0.0/ key (make one with mwpeer swarm-key new): %v", path, err)
	}
	return psk, nil
}

// privateAddrs drops the addresses a private swarm cannot use: go-libp2p
// runs the pre-shared key over TCP (and relayed TCP) only, not over QUIC,
// WebTransport or WebRTC. dropped counts what was removed.
func privateAddrs(addrs []ma.Multiaddr) (kept []ma.Multiaddr, dropped int) {
	for _, a := range addrs {
		if overUDP(a) {
			dropped++
			continue
		}
		kept = append(kept, a)
	}
	return kept, dropped
}

func overUDP(a ma.Multiaddr) bool {
	for _, c := range a {
		switch c.Protocol().Code {
		case ma.P_UDP, ma.P_QUIC, ma.P_QUIC_V1, ma.P_WEBTRANSPORT, ma.P_WEBRTC_DIRECT, ma.P_WEBRTC:
			return true
		}
	}
	return false
}

// logPrivate says once, at start, that a private swarm runs over TCP only.
func logPrivate(log *slog.Logger, dropped int) {
	log.Info("private swarm (swarm key): TCP only, QUIC listen addresses dropped", "dropped", dropped)
}
