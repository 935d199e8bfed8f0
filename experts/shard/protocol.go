package shard

import (
	"encoding/json"
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
	"github.com/libp2p/go-msgio"
)

// The /mwpeer/shard/1.0.0 protocol. A stream carries requests one after the
// other:
//
//	client -> server: request frame {"hash","offset","length"}
//	server -> client: header frame {"size","length"} then exactly length raw bytes,
//	                  or header frame {"error":{"code","message"}}
//
// Frames are a varint length and a JSON object; requests are at most
// MaxRequestSize bytes, headers MaxHeaderSize. The hash is a shard's SHA-256
// or a model ID (the manifest's bytes are served). The server sends
// min(length, size-offset) bytes; length must be 1..MaxLength. After an error
// frame of code bad_request or busy the server closes the stream; after
// not_found the client may ask again. The client closes its write side when
// done.
const (
	ProtocolID  = "/mwpeer/shard/1.0.0"
	ServiceName = "mwpeer.shard"

	MaxRequestSize = 512
	MaxHeaderSize  = 1024
	MaxLength      = 4 << 20 // bytes served per request
)

// Error codes of header frames.
const (
	CodeNotFound   = "not_found"
	CodeBadRequest = "bad_request"
	CodeBusy       = "busy"
	CodeInternal   = "internal"
)

// RemoteError is an error frame from a serving peer. A not_found unwraps to
// ErrNotFound.
type RemoteError struct {
	Peer    peer.ID `json:"-"`
	Code    string  `json:"code"`
	Message string  `json:"message"`
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("peer %s: %s: %s", e.Peer.ShortString(), e.Code, e.Message)
}

// Unwrap returns ErrNotFound for CodeNotFound.
func (e *RemoteError) Unwrap() error {
	if e.Code == CodeNotFound {
		return ErrNotFound
	}
	return nil
}

type request struct {
	Hash   string `json:"hash"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
}

type header struct {
	Size   int64        `json:"size,omitempty"`
	Length int64        `json:"length,omitempty"`
	Error  *RemoteError `json:"error,omitempty"`
}

// ServerConfig bounds what a Server gives strangers.
type ServerConfig struct {
	// MaxStreams is the most streams served at once; more are refused busy.
	MaxStreams int
	// RequestTimeout bounds the wait for each request on a stream.
	RequestTimeout time.Duration
	// WriteTimeout bounds each write of a response (an idle deadline).
	WriteTimeout time.Duration
	Logger       *slog.Logger
}

// DefaultServerConfig returns the defaults.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{MaxStreams: 32, RequestTimeout: 10 * time.Second, WriteTimeout: 20 * time.Second}
}

// Server serves a Store's shards and manifests over ProtocolID.
type Server struct {
	h     host.Host
	s     *Store
	cfg   ServerConfig
	log   *slog.Logger
	slots chan struct{}
	sent  atomic.Int64

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
	active map[network.Stream]struct{}
}

// Serve serves s on h with DefaultServerConfig.
func Serve(h host.Host, s *Store) *Server { return NewServer(h, s, DefaultServerConfig()) }

// NewServer serves s on h. Zero fields of cfg take their defaults.
func NewServer(h host.Host, s *Store, cfg ServerConfig) *Server {
	def := DefaultServerConfig()
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = def.MaxStreams
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = def.RequestTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = def.WriteTimeout
	}
	srv := &Server{h: h, s: s, cfg: cfg, log: cfg.Logger, slots: make(chan struct{}, cfg.MaxStreams), active: make(map[network.Stream]struct{})}
	if srv.log == nil {
		srv.log = slog.Default()
	}
	h.SetStreamHandler(ProtocolID, srv.handle)
	return srv
}

// Sent returns the bytes of shards and manifests sent so far.
func (srv *Server) Sent() int64 { return srv.sent.Load() }

// Close removes the stream handler, resets the streams being served and
// waits for their handlers to return.
func (srv *Server) Close() error {
	srv.h.RemoveStreamHandler(ProtocolID)
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

	if err := str.Scope().SetService(ServiceName); err != nil {
		log.Debug("shard: attach stream to service", "err", err)
		str.Reset()
		return
	}
	reply := func(h header) error {
		data, err := json.Marshal(h)
		if err != nil {
			return err
		}
		_ = str.SetWriteDeadline(time.Now().Add(srv.cfg.WriteTimeout))
		return msgio.NewVarintWriter(str).WriteMsg(data)
	}
	refuse := func(code, msg string) {
		_ = reply(header{Error: &RemoteError{Code: code, Message: msg}})
		_ = str.Close()
	}
	select {
	case srv.slots <- struct{}{}:
		defer func() { <-srv.slots }()
	default:
		refuse(CodeBusy, "too many streams")
		return
	}
	if err := str.Scope().ReserveMemory(copyBuffer+MaxRequestSize, network.ReservationPriorityLow); err != nil {
		log.Debug("shard: reserve memory", "err", err)
		refuse(CodeBusy, "resource limit")
		return
	}
	defer str.Scope().ReleaseMemory(copyBuffer + MaxRequestSize)
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
	r := msgio.NewVarintReaderSize(str, MaxRequestSize)
	for {
		_ = str.SetReadDeadline(time.Now().Add(srv.cfg.RequestTimeout))
		msg, err := r.ReadMsg()
		if errors.Is(err, io.EOF) {
			_ = str.Close()
			return
		}
		if errors.Is(err, msgio.ErrMsgTooLarge) {
			refuse(CodeBadRequest, fmt.Sprintf("request exceeds %d bytes", MaxRequestSize))
			return
		}
		if err != nil {
			log.Debug("shard: read request", "err", err)
			str.Reset()
			return
		}
		var req request
		err = json.Unmarshal(msg, &req)
		r.ReleaseMsg(msg)
		switch {
		case err != nil:
			refuse(CodeBadRequest, "malformed request")
			return
		case !ValidHash(req.Hash):
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
				code := CodeInternal
				if errors.Is(err, ErrNotFound) {
					code = CodeNotFound
				} else {
					log.Debug("shard: open", "hash", req.Hash, "err", err)
				}
				if reply(header{Error: &RemoteError{Code: code, Message: req.Hash}}) != nil {
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
