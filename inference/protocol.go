package inference

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
)

// The /mwpeer/infer/1.0.0 protocol. One stream carries one call:
//
//	client -> server: request frame
//	server -> client: chunk frame*, then one final or error frame
//
// Every frame is a varint length prefix and a JSON object. A request frame is
// a Request plus "timeout_ms" (the remaining deadline, relative so clocks need
// not agree) and is at most MaxRequestSize bytes; the server frames are
// {"chunk":{...}}, {"final":{...}} or {"error":{"code":...,"message":...}},
// at most MaxFrameSize bytes each. The client keeps its write side open: it
// resets the stream to cancel, and the server cancels the backend call when
// its read side sees the reset.
const (
	ProtocolID  = "/mwpeer/infer/1.0.0"
	ServiceName = "mwpeer.infer"

	MaxRequestSize = 1 << 20
	MaxFrameSize   = 256 << 10

	// StreamIdleTimeout is the longest a client waits between two frames
	// (the first one included: a model may have to load).
	StreamIdleTimeout = 2 * time.Minute
)

// Error codes carried by error frames.
const (
	CodeUnknownModel   = "unknown_model"
	CodeBusy           = "busy"
	CodeInvalidRequest = "invalid_request"
	CodeTimeout        = "timeout"
	CodeInternal       = "internal"
)

// RemoteError is an error reported by the serving peer. It unwraps to the
// sentinel its code stands for, so errors.Is(err, ErrBusy) works across the
// wire.
type RemoteError struct {
	Peer    peer.ID `json:"-"`
	Code    string  `json:"code"`
	Message string  `json:"message"`
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("peer %s: %s: %s", e.Peer.ShortString(), e.Code, e.Message)
}

// Unwrap returns the sentinel for e.Code, or nil.
func (e *RemoteError) Unwrap() error {
	switch e.Code {
	case CodeUnknownModel:
		return ErrUnknownModel
	case CodeBusy:
		return ErrBusy
	case CodeInvalidRequest:
		return ErrInvalidRequest
	case CodeTimeout:
		return context.DeadlineExceeded
	}
	return nil
}

func errorCode(err error) string {
	switch {
	case errors.Is(err, ErrUnknownModel):
		return CodeUnknownModel
	case errors.Is(err, ErrBusy):
		return CodeBusy
	case errors.Is(err, ErrInvalidRequest):
		return CodeInvalidRequest
	case errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	}
	return CodeInternal
}

type wireRequest struct {
	Request
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

type frame struct {
	Chunk *Chunk       `json:"chunk,omitempty"`
	Final *Final       `json:"final,omitempty"`
	Error *RemoteError `json:"error,omitempty"`
}

func writeFrame(s network.Stream, v any, max int, idle time.Duration) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	if len(data) > max {
		return fmt.Errorf("frame of %d bytes exceeds the %d-byte cap", len(data), max)
	}
	_ = s.SetWriteDeadline(time.Now().Add(idle))
	return msgio.NewVarintWriter(s).WriteMsg(data)
}

// ServiceConfig bounds what a Service accepts from strangers.
type ServiceConfig struct {
	// IdleTimeout bounds reading the request and writing each frame.
	IdleTimeout time.Duration
	// MaxDuration bounds a whole call, whatever timeout the client asks for.
	MaxDuration time.Duration
	// Validation limits for untrusted requests.
	MaxModelName int
	MaxMessages  int
	MaxTokens    int
	MaxStop      int
	Logger       *slog.Logger
}

// DefaultServiceConfig returns the defaults.
func DefaultServiceConfig() ServiceConfig {
	return ServiceConfig{
		IdleTimeout:  30 * time.Second,
		MaxDuration:  10 * time.Minute,
		MaxModelName: 256,
		MaxMessages:  1024,
		MaxTokens:    32768,
		MaxStop:      16,
	}
}

// Service serves ProtocolID on a host from a Backend. Each stream is attached
// to the ServiceName resource scope and reserves its request's size from the
// resource manager before the request is read; concurrency is the backend's
// to limit (ErrBusy reaches the client as CodeBusy).
type Service struct {
	h      host.Host
	b      Backend
	cfg    ServiceConfig
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // handlers in flight
}

// NewService registers the stream handler for ProtocolID on h. Zero fields
// of cfg take their DefaultServiceConfig values.
func NewService(h host.Host, b Backend, cfg ServiceConfig) *Service {
	def := DefaultServiceConfig()
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = def.IdleTimeout
	}
	if cfg.MaxDuration <= 0 {
		cfg.MaxDuration = def.MaxDuration
	}
	if cfg.MaxModelName <= 0 {
		cfg.MaxModelName = def.MaxModelName
	}
	if cfg.MaxMessages <= 0 {
		cfg.MaxMessages = def.MaxMessages
	}
	if cfg.MaxTokens <= 0 {
		cfg.MaxTokens = def.MaxTokens
	}
	if cfg.MaxStop <= 0 {
		cfg.MaxStop = def.MaxStop
	}
	s := &Service{h: h, b: b, cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	h.SetStreamHandler(ProtocolID, s.handle)
	return s
}

// Close removes the stream handler, cancels calls in flight and waits for
// their handlers to return.
func (s *Service) Close() error {
	s.h.RemoveStreamHandler(ProtocolID)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

func (s *Service) validate(r *wireRequest) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, args...))
	}
	switch {
	case r.Model == "":
		return bad("model is required")
	case len(r.Model) > s.cfg.MaxModelName:
		return bad("model name longer than %d bytes", s.cfg.MaxModelName)
	case len(r.Messages) > s.cfg.MaxMessages:
		return bad("more than %d messages", s.cfg.MaxMessages)
	case len(r.Messages) == 0 && r.Prompt == "":
		return bad("neither messages nor prompt")
	case r.MaxTokens < 0 || r.MaxTokens > s.cfg.MaxTokens:
		return bad("max_tokens must be within 0..%d", s.cfg.MaxTokens)
	case len(r.Stop) > s.cfg.MaxStop:
		return bad("more than %d stop sequences", s.cfg.MaxStop)
	case r.TopLogprobs < 0 || r.TopLogprobs > 20:
		return bad("top_logprobs must be within 0..20")
	case r.TimeoutMS < 0:
		return bad("negative timeout_ms")
	case r.Temperature != nil && !(*r.Temperature >= 0 && *r.Temperature <= 10):
		return bad("temperature out of range")
	case r.TopP != nil && !(*r.TopP >= 0 && *r.TopP <= 1):
		return bad("top_p out of range")
	}
	for _, m := range r.Messages {
		switch m.Role {
		case "system", "user", "assistant", "tool":
		default:
			return bad("unknown role %.32q", m.Role)
		}
	}
	return nil
}

func (s *Service) handle(str network.Stream) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		str.Reset()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	remote := str.Conn().RemotePeer()
	log := s.log.With("peer", remote.ShortString())

	if err := str.Scope().SetService(ServiceName); err != nil {
		log.Debug("infer: attach stream to service", "err", err)
		str.Reset()
		return
	}
	fail := func(code, msg string) {
		_ = writeFrame(str, frame{Error: &RemoteError{Code: code, Message: msg}}, MaxFrameSize, s.cfg.IdleTimeout)
		_ = str.Close()
	}

	// Read the request, reserving its exact size before reading the body.
	_ = str.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
	r := msgio.NewVarintReaderSize(str, MaxRequestSize)
	n, err := r.NextMsgLen()
	if err != nil {
		log.Debug("infer: read request length", "err", err)
		str.Reset()
		return
	}
	if n > MaxRequestSize {
		fail(CodeInvalidRequest, fmt.Sprintf("request of %d bytes exceeds the %d-byte cap", n, MaxRequestSize))
		return
	}
	if err := str.Scope().ReserveMemory(n, network.ReservationPriorityMedium); err != nil {
		log.Debug("infer: reserve memory", "bytes", n, "err", err)
		fail(CodeBusy, "resource limit")
		return
	}
	defer str.Scope().ReleaseMemory(n)
	msg, err := r.ReadMsg()
	if err != nil {
		log.Debug("infer: read request", "err", err)
		str.Reset()
		return
	}
	var req wireRequest
	err = json.Unmarshal(msg, &req)
	r.ReleaseMsg(msg)
	if err != nil {
		fail(CodeInvalidRequest, "malformed request")
		return
	}
	if err := s.validate(&req); err != nil {
		fail(CodeInvalidRequest, err.Error())
		return
	}
	_ = str.SetReadDeadline(time.Time{})

	timeout := s.cfg.MaxDuration
	if req.TimeoutMS > 0 && time.Duration(req.TimeoutMS) < timeout/time.Millisecond {
		timeout = time.Duration(req.TimeoutMS) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()

	// The client never writes after its request; a read returning means the
	// stream was reset (client cancelled) or the connection died.
	watch := make(chan struct{})
	go func() {
		defer close(watch)
		var b [1]byte
		if _, err := str.Read(b[:]); err != io.EOF {
			cancel()
		}
	}()
	defer func() { <-watch }()

	log.Debug("infer: request", "model", req.Model, "max_tokens", req.MaxTokens)
	f, err := s.b.Generate(ctx, req.Request, func(c Chunk) error {
		return writeFrame(str, frame{Chunk: &c}, MaxFrameSize, s.cfg.IdleTimeout)
	})
	if err != nil {
		if ctx.Err() != nil && s.ctx.Err() == nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The client went away; nobody is listening.
			log.Debug("infer: cancelled by client", "model", req.Model)
			str.Reset()
			return
		}
		msg := err.Error()
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
		log.Debug("infer: backend error", "model", req.Model, "err", err)
		fail(errorCode(err), msg)
		return
	}
	if err := writeFrame(str, frame{Final: &f}, MaxFrameSize, s.cfg.IdleTimeout); err != nil {
		log.Debug("infer: write final", "err", err)
		str.Reset()
		return
	}
	_ = str.Close()
}

// Call runs req on peer p over ProtocolID, calling emit for each chunk. If ctx
// ends, the stream is reset, which cancels the call on the serving peer.
// Errors reported by the peer are *RemoteError, which unwraps to the matching
// sentinel (ErrUnknownModel, ErrBusy, ErrInvalidRequest).
func Call(ctx context.Context, h host.Host, p peer.ID, req Request, emit func(Chunk) error) (Final, error) {
	wr := wireRequest{Request: req}
	deadline, ok := ctx.Deadline()
	if !req.Deadline.IsZero() && (!ok || req.Deadline.Before(deadline)) {
		deadline, ok = req.Deadline, true
	}
	if ok {
		left := time.Until(deadline)
		if left <= 0 {
			return Final{}, context.DeadlineExceeded
		}
		wr.TimeoutMS = int64(math.Ceil(float64(left) / float64(time.Millisecond)))
	}
	data, err := json.Marshal(wr)
	if err != nil {
		return Final{}, fmt.Errorf("encode request: %w", err)
	}
	if len(data) > MaxRequestSize {
		return Final{}, fmt.Errorf("%w: request of %d bytes exceeds the %d-byte cap", ErrInvalidRequest, len(data), MaxRequestSize)
	}

	if !req.Deadline.IsZero() {
		// The server enforces the deadline; this bounds a server that does not.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, req.Deadline.Add(time.Second))
		defer cancel()
	}
	s, err := h.NewStream(ctx, p, ProtocolID)
	if err != nil {
		return Final{}, fmt.Errorf("open infer stream to %s: %w", p.ShortString(), err)
	}
	if err := s.Scope().SetService(ServiceName); err != nil {
		s.Reset()
		return Final{}, fmt.Errorf("attach infer stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	fail := func(err error) (Final, error) {
		s.Reset()
		if ctx.Err() != nil {
			return Final{}, ctx.Err()
		}
		return Final{}, err
	}

	_ = s.SetWriteDeadline(time.Now().Add(StreamIdleTimeout))
	// A write error is not final: the peer may have refused the request
	// with an error frame before reading it all.
	werr := msgio.NewVarintWriter(s).WriteMsg(data)

	r := msgio.NewVarintReaderSize(s, MaxFrameSize)
	for {
		_ = s.SetReadDeadline(time.Now().Add(StreamIdleTimeout))
		msg, err := r.ReadMsg()
		if err != nil {
			if werr != nil {
				err = werr
			}
			return fail(fmt.Errorf("infer %s: read: %w", p.ShortString(), err))
		}
		var fr frame
		err = json.Unmarshal(msg, &fr)
		r.ReleaseMsg(msg)
		if err != nil {
			return fail(fmt.Errorf("infer %s: decode frame: %w", p.ShortString(), err))
		}
		switch {
		case fr.Chunk != nil:
			if err := emit(*fr.Chunk); err != nil {
				return fail(err)
			}
		case fr.Final != nil:
			_ = s.Close()
			return *fr.Final, nil
		case fr.Error != nil:
			_ = s.Close()
			fr.Error.Peer = p
			return Final{}, fr.Error
		default:
			return fail(fmt.Errorf("infer %s: empty frame", p.ShortString()))
		}
	}
}

// RemoteTarget is a dispatch Target that runs requests on peer p.
func RemoteTarget(h host.Host, p peer.ID) Target {
	return Target{Name: p.String(), Run: func(ctx context.Context, req Request, emit func(Chunk) error) (Final, error) {
		return Call(ctx, h, p, req, emit)
	}}
}

// LocalTarget is a dispatch Target that runs requests on a local backend.
func LocalTarget(b Backend) Target {
	return Target{Name: "local", Run: b.Generate}
}
