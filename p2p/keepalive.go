package p2p

import (
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
)

// Keepalives of connections over TCP. A frozen peer (SIGSTOP, a closed lid,
// a machine deep in swap) answers nothing, yet its kernel keeps acknowledging
// TCP, so TCP alone keeps such a connection open for as long as anyone
// likes. yamux pings every KeepAliveInterval and closes the connection when
// a ping is not answered within KeepAliveTimeout: a frozen peer's
// connections close within 15 s, where libp2p's defaults (30 s and 10 s)
// take 40. QUIC connections keep libp2p's own settings (a keepalive every
// 15 s, closed after 30 s without a packet); the pinger (PingerConfig.CloseAfter)
// closes either kind sooner when pings fail.
const (
	KeepAliveInterval = 10 * time.Second
	KeepAliveTimeout  = 5 * time.Second
)

// muxer is yamux as libp2p configures it, with mwpeer's keepalives.
func muxer() libp2p.Option {
	tr := *yamux.DefaultTransport
	tr.EnableKeepAlive = true
	tr.KeepAliveInterval = KeepAliveInterval
	// yamux bounds a ping's answer, like any write, by this timeout.
	tr.ConnectionWriteTimeout = KeepAliveTimeout
	return libp2p.Muxer(yamux.ID, &tr)
}
