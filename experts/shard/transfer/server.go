package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference/tally"
	"github.com/mwpeer/mwpeer/internal/wire"
)

// ServerConfig bounds what a Server gives strangers.
type ServerConfig struct {
	// MaxStreams is the most streams served at once, and MaxPeerStreams the
	// most served to one peer; more are refused busy.
	MaxStreams     int
	MaxPeerStreams int
	// MaxStreamLife bounds a stream's life: a request that arrives later is
	// answered busy and the stream closed (a Fetcher opens another and
	// queues behind the other peers waiting), and no read or write goes on
	// beyond it by more than WriteTimeout. A peer that asks one byte at a
	// time, each within RequestTimeout, still gives up its slot.
	MaxStreamLife time.Duration
	// UploadRate and PeerUploadRate bound the bytes sent per second, in
	// all and to one peer (0: no limit).
	UploadRate, PeerUploadRate float64
	// RequestTimeout bounds the wait for each request on a stream.
	RequestTimeout time.Duration
	// WriteTimeout bounds each write of a response (an idle deadline).
	WriteTimeout time.Duration
	Logger       *slog.Logger
	// Admit, if set, decides whether to serve another peer at all (a
	// consent policy); an error refuses the stream (CodeRefused).
	Admit func(caller peer.ID) error
}

// DefaultServerConfig returns the defaults.
//
// 8 streams a peer is what one Fetcher opens to a source (Window × Parallel),
// so a stranger holds at most a quarter of the 32 slots. A minute moves
// 60 MiB at 1 MiB/s before the stream is renewed; a Fetcher waits out busy
// answers for longer than a stream lives (Fetcher.BusyFor).
func DefaultServerConfig() ServerConfig {
	return ServerConfig{MaxStreams: 32, MaxPeerStreams: 8, MaxStreamLife: time.Minute,
		RequestTimeout: 10 * time.Second, WriteTimeout: 20 * time.Second}
}

// Server serves a Store's shards and manifests over ID: the protocol's
// service, registered on a host by NewServer.
type Server struct {
	h     host.Host
	s     *shard.Store
	cfg   ServerConfig
	log   *slog.Logger
	slots chan struct{}
	sent  atomic.Int64

	// Meter counts the bytes sent in full answers, per requester (from the
	// secure channel), model "": an answer is a call. A tally.Service
	// settles from it.
	Meter *tally.Meter

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	rate   *rate.Limiter // nil: no overall limit

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
	active map[network.Stream]struct{}
	peers  map[peer.ID]*peerState
}

// peerState is what a Server keeps of a peer it is serving.
type peerState struct {
	streams int
	rate    *rate.Limiter // nil: no per-peer limit
}

// Serve serves s on h with DefaultServerConfig.
func Serve(h host.Host, s *shard.Store) *Server { return NewServer(h, s, DefaultServerConfig()) }

// NewServer serves s on h. Zero fields of cfg take their defaults.
func NewServer(h host.Host, s *shard.Store, cfg ServerConfig) *Server {
	def := DefaultServerConfig()
	wire.Default(&cfg.MaxStreams, def.MaxStreams)
	wire.Default(&cfg.RequestTimeout, def.RequestTimeout)
	wire.Default(&cfg.WriteTimeout, def.WriteTimeout)
	wire.Default(&cfg.MaxPeerStreams, def.MaxPeerStreams)
	wire.Default(&cfg.MaxStreamLife, def.MaxStreamLife)
	srv := &Server{h: h, s: s, cfg: cfg, log: cfg.Logger, slots: make(chan struct{}, cfg.MaxStreams), active: make(map[network.Stream]struct{}),
		peers: make(map[peer.ID]*peerState), Meter: tally.NewMeter(0)}
	if srv.log == nil {
		srv.log = slog.Default()
	}
	srv.ctx, srv.cancel = context.WithCancel(context.Background())
	if cfg.UploadRate > 0 {
		srv.rate = rate.NewLimiter(rate.Limit(cfg.UploadRate), copyBuffer)
	}
	h.SetStreamHandler(ID, srv.handle)
	return srv
}

// Sent returns the bytes of shards and manifests sent so far.
func (srv *Server) Sent() int64 { return srv.sent.Load() }

// Close removes the stream handler, resets the streams being served and
// waits for their handlers to return.
func (srv *Server) Close() error {
	srv.h.RemoveStreamHandler(ID)
	srv.cancel()
	srv.mu.Lock()
	srv.closed = true
	for s := range srv.active {
		s.Reset()
	}
	srv.mu.Unlock()
	srv.wg.Wait()
	return nil
}

const copyBuffer = 64 << 10

func (srv *Server) handle(str network.Stream) {
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		str.Reset()
		return
	}
	srv.wg.Add(1)
	srv.active[str] = struct{}{}
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		delete(srv.active, str)
		srv.mu.Unlock()
		srv.wg.Done()
	}()
	caller := str.Conn().RemotePeer()
	log := srv.log.With("peer", caller.ShortString())

	start := time.Now()
	soft := start.Add(srv.cfg.MaxStreamLife)      // no request served after
	hard := soft.Add(srv.cfg.WriteTimeout)        // no read or write after
	deadline := func(d time.Duration) time.Time { // of one read or write
		if t := time.Now().Add(d); t.Before(hard) {
			return t
		}
		return hard
	}
	reply := func(h header) error {
		_ = str.SetWriteDeadline(deadline(srv.cfg.WriteTimeout))
		return wire.WriteJSON(str, h, MaxHeaderSize)
	}
	refuse := func(code, msg string) {
		_ = reply(header{Error: &errorFrame{Code: code, Message: msg}})
		_ = str.Close()
	}
	if err := str.Scope().SetService(ServiceName); err != nil {
		// Over the resource manager's stream limit for the service or for
		// this peer: busy, so that the fetcher backs off, not drops us.
		log.Debug("shard: stream limit", "err", err)
		refuse(CodeBusy, "too many streams")
		return
	}
	if srv.cfg.Admit != nil {
		if err := srv.cfg.Admit(caller); err != nil {
			refuse(CodeRefused, wire.Truncate(err.Error()))
			return
		}
	}
	ps, ok := srv.join(caller)
	if !ok {
		refuse(CodeBusy, fmt.Sprintf("more than %d streams from one peer", srv.cfg.MaxPeerStreams))
		return
	}
	defer srv.leave(caller)
	select {
	case srv.slots <- struct{}{}:
		defer func() { <-srv.slots }()
	default:
		refuse(CodeBusy, "too many streams")
		return
	}
	ctx, cancel := context.WithDeadline(srv.ctx, hard)
	defer cancel()
	release, err := wire.Reserve(str, copyBuffer+MaxRequestSize, network.ReservationPriorityLow)
	if err != nil {
		log.Debug("shard: reserve memory", "err", err)
		refuse(CodeBusy, "resource limit")
		return
	}
	defer release()
	buf := make([]byte, copyBuffer)

	var (
		open     io.ReadSeekCloser
		openHash string
		openSize int64
	)
	defer func() {
		if open != nil {
			open.Close()
		}
	}()
	r := wire.NewReader(str, MaxRequestSize)
	for {
		_ = str.SetReadDeadline(deadline(srv.cfg.RequestTimeout))
		var req request
		err := wire.ReadJSON(r, &req)
		switch {
		case errors.Is(err, io.EOF):
			_ = str.Close()
			return
		case errors.Is(err, wire.ErrTooLarge):
			refuse(CodeBadRequest, fmt.Sprintf("request exceeds %d bytes", MaxRequestSize))
			return
		case errors.Is(err, wire.ErrMalformed):
			refuse(CodeBadRequest, "malformed request")
			return
		case err != nil:
			log.Debug("shard: read request", "err", err)
			str.Reset()
			return
		case req.check() != nil:
			refuse(CodeBadRequest, req.check().Error())
			return
		case time.Now().After(soft):
			refuse(CodeBusy, fmt.Sprintf("stream older than %s", srv.cfg.MaxStreamLife))
			return
		}
		if openHash != req.Hash {
			if open != nil {
				open.Close()
				open, openHash = nil, ""
			}
			f, size, err := srv.s.Open(req.Hash)
			if err != nil {
				code := codes.CodeOf(err)
				if code != CodeNotFound {
					log.Debug("shard: open", "hash", req.Hash, "err", err)
				}
				if reply(header{Error: &errorFrame{Code: code, Message: req.Hash}}) != nil {
					str.Reset()
					return
				}
				continue
			}
			open, openHash, openSize = f, req.Hash, size
		}
		if req.Offset > openSize {
			refuse(CodeBadRequest, fmt.Sprintf("offset %d beyond the %d-byte file", req.Offset, openSize))
			return
		}
		n := min(req.Length, openSize-req.Offset)
		if err := reply(header{Size: openSize, Length: n}); err != nil {
			str.Reset()
			return
		}
		if _, err := open.Seek(req.Offset, io.SeekStart); err != nil {
			str.Reset()
			return
		}
		if err := srv.send(ctx, str, ps, open, n, buf, deadline); err != nil {
			log.Debug("shard: send", "hash", req.Hash, "err", err)
			str.Reset()
			return
		}
		if n > 0 {
			srv.Meter.Add(str.Conn().RemotePeer(), "", tally.Work{Calls: 1, Bytes: uint64(n)})
		}
	}
}

// send copies n bytes of f to str, each write under its own deadline and
// within the upload rates.
func (srv *Server) send(ctx context.Context, str network.Stream, ps *peerState, f io.Reader, n int64, buf []byte, deadline func(time.Duration) time.Time) error {
	for n > 0 {
		k, err := io.ReadFull(f, buf[:min(n, int64(len(buf)))])
		if err != nil {
			return fmt.Errorf("read: %w", err) // the file shrank: the client sees a reset
		}
		for _, lim := range []*rate.Limiter{ps.rate, srv.rate} {
			if lim != nil {
				if err := lim.WaitN(ctx, k); err != nil {
					return fmt.Errorf("upload rate: %w", err)
				}
			}
		}
		_ = str.SetWriteDeadline(deadline(srv.cfg.WriteTimeout))
		if _, err := str.Write(buf[:k]); err != nil {
			return err
		}
		srv.sent.Add(int64(k))
		n -= int64(k)
	}
	return nil
}

// join counts one more stream of p, unless p has MaxPeerStreams already.
func (srv *Server) join(p peer.ID) (*peerState, bool) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	ps := srv.peers[p]
	if ps == nil {
		ps = &peerState{}
		if srv.cfg.PeerUploadRate > 0 {
			ps.rate = rate.NewLimiter(rate.Limit(srv.cfg.PeerUploadRate), copyBuffer)
		}
		srv.peers[p] = ps
	}
	if ps.streams >= srv.cfg.MaxPeerStreams {
		return nil, false
	}
	ps.streams++
	return ps, true
}

// leave counts one stream of p less; p is forgotten with its last.
func (srv *Server) leave(p peer.ID) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if ps := srv.peers[p]; ps != nil {
		if ps.streams--; ps.streams <= 0 {
			delete(srv.peers, p)
		}
	}
}

// Streams returns the streams being served to p now.
func (srv *Server) Streams(p peer.ID) int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if ps := srv.peers[p]; ps != nil {
		return ps.streams
	}
	return 0
}
