package nattest

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// The test binary doubles as a small tool run inside the namespaces with
// `ip netns exec`, chosen by $helperEnv:
//
//	proxy SOCKET TARGET  forward connections on a unix socket (visible from
//	                     the host's namespace) to TARGET, e.g. a peer's HTTP API
//	dial MULTIADDR       try to open a libp2p connection; exit 0 on success,
//	                     3 on failure
const helperEnv = "MWPEER_NATTEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func helper(mode string, args []string) int {
	switch {
	case mode == "proxy" && len(args) == 2:
		return proxy(args[0], args[1])
	case mode == "dial" && len(args) == 1:
		return dial(args[0])
	}
	fmt.Fprintf(os.Stderr, "nattest helper: bad use: %s %v\n", mode, args)
	return 2
}

func proxy(sock, target string) int {
	_ = os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			defer c.Close()
			u, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				return
			}
			defer u.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(u, c); done <- struct{}{} }()
			go func() { io.Copy(c, u); done <- struct{}{} }()
			<-done
		}()
	}
}

func dial(addr string) int {
	a, err := ma.NewMultiaddr(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ai, err := peer.AddrInfoFromP2pAddr(a)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.DisableRelay())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := h.Connect(ctx, *ai); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	return 0
}

// selfExe is the path of this test binary, to run it as a helper.
func selfExe() string {
	p, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return p
}
