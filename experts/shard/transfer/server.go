package transfer

import (
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

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference/tally"
	"github.com/mwpeer/mwpeer/internal/wire"
)

// ServerConfig bounds what a Server gives strangers.
type ServerConfig struct {
	// MaxStreams is the most streams served at once; more are refused busy.
	MaxStreams int
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
func DefaultServerConfig() ServerConfig {
	return ServerConfig{MaxStreams: 32, RequestTimeout: 10 * time.Second, WriteTimeout: 20 * time.Second}
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

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
	active map[network.Stream]struct{}
}

// Serve serves s on h with DefaultServerConfig.
func Serve(h host.Host, s *shard.Store) *Server { return NewServer(h, s, DefaultServerConfig()) }

// NewServer serves s on h. Zero fields of cfg take their defaults.
func NewServer(h host.Host, s *shard.Store, cfg ServerConfig) *Server {
	def := DefaultServerConfig()
	wire.Default(&cfg.MaxStreams, def.MaxStreams)
	wire.Default(&cfg.RequestTimeout, def.RequestTimeout)
	wire.Default(&cfg.WriteTimeout, def.WriteTimeout)
	srv := &Server{h: h, s: s, cfg: cfg, log: cfg.Logger, slots: make(chan struct{}, cfg.MaxStreams), active: make(map[network.Stream]struct{}),
		Meter: tally.NewMeter(0)}
	if srv.log == nil {
		srv.log = slog.Default()
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
	log := srv.log.With("peer", str.Conn().RemotePeer().ShortString())

	if err := wire.Attach(str, ServiceName, 0, 0); err != nil {
		log.Debug("shard: attach stream", "err", err)
		return
	}
	reply := func(h header) error {
		_ = str.SetWriteDeadline(time.Now().Add(srv.cfg.WriteTimeout))
		return wire.WriteJSON(str, h, MaxHeaderSize)
	}
	refuse := func(code, msg string) {
		_ = reply(header{Error: &errorFrame{Code: code, Message: msg}})
		_ = str.Close()
	}
	if srv.cfg.Admit != nil {
		if err := srv.cfg.Admit(str.Conn().RemotePeer()); err != nil {
			refuse(CodeRefused, wire.Truncate(err.Error()))
			return
		}
	}
	select {
	case srv.slots <- struct{}{}:
		defer func() { <-srv.slots }()
	default:
		refuse(CodeBusy, "too many streams")
		return
	}
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
		_ = str.SetReadDeadline(time.Now().Add(srv.cfg.RequestTimeout))
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
		case !shard.ValidHash(req.Hash):
			refuse(CodeBadRequest, "hash is not a lowercase hex SHA-256")
			return
		case req.Length <= 0 || req.Length > MaxLength || req.Offset < 0:
			refuse(CodeBadRequest, fmt.Sprintf("offset must be non-negative and length within 1..%d", MaxLength))
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
		if err := srv.send(str, open, n, buf); err != nil {
			log.Debug("shard: send", "hash", req.Hash, "err", err)
			str.Reset()
			return
		}
		if n > 0 {
			srv.Meter.Add(str.Conn().RemotePeer(), "", tally.Work{Calls: 1, Bytes: uint64(n)})
		}
	}
}

// send copies n bytes of f to str, each write under its own deadline.
func (srv *Server) send(str network.Stream, f io.Reader, n int64, buf []byte) error {
	for n > 0 {
		k, err := io.ReadFull(f, buf[:min(n, int64(len(buf)))])
		if err != nil {
			return fmt.Errorf("read: %w", err) // the file shrank: the client sees a reset
		}
		_ = str.SetWriteDeadline(time.Now().Add(srv.cfg.WriteTimeout))
		if _, err := str.Write(buf[:k]); err != nil {
			return err
		}
		srv.sent.Add(int64(k))
		n -= int64(k)
	}
	return nil
}
