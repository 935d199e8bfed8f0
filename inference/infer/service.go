package infer

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wire"
	"github.com/mwpeer/mwpeer/receipt"
)

const (
	// ID is the protocol ID.
	ID = "/mwpeer/infer/1.0.0"
	// ServiceName is the resource-manager service of its streams.
	ServiceName = "mwpeer.infer"

	MaxRequestSize = 1 << 20
	MaxFrameSize   = 256 << 10

	// StreamIdleTimeout is the longest a client waits between two frames
	// (the first one included: a model may have to load).
	StreamIdleTimeout = 2 * time.Minute

	// MaxTokens is the most max_tokens a request may ask for: beyond it a
	// request is malformed. No server sends more chunks than this.
	MaxTokens = 32768
	// DefaultMaxTokens and TokensCap are ServiceConfig's defaults: what a
	// request from another peer that sets no max_tokens gets, and the most
	// it gets whatever it asks. 1024 tokens is a long answer; 4096 is about
	// seven minutes at the 10 tokens/s of a CPU, within MaxDuration.
	DefaultMaxTokens = 1024
	TokensCap        = 4096
)

// ServiceConfig bounds what a Service accepts from strangers and hooks the
// serving path.
type ServiceConfig struct {
	// IdleTimeout bounds reading the request and writing each frame.
	IdleTimeout time.Duration
	// MaxDuration bounds a whole call, whatever timeout the client asks for.
	MaxDuration time.Duration
	// MaxWriteWait bounds the total time one call may wait for its caller
	// to take its frames: a reader that stalls, or reads just fast enough to
	// beat IdleTimeout frame by frame, loses its call (and its serving slot)
	// once it has made the server wait this long in all.
	MaxWriteWait time.Duration
	// Validation limits for untrusted requests. A request asking for more
	// than MaxTokens is malformed and refused.
	MaxModelName int
	MaxMessages  int
	MaxTokens    int
	MaxStop      int
	// DefaultMaxTokens is the max_tokens of a request that sets none, and
	// TokensCap lowers any larger max_tokens to itself: no request from
	// another peer runs unbounded, whatever its backend would default to.
	DefaultMaxTokens int
	TokensCap        int
	Logger           *slog.Logger

	// Admit, if set, decides whether to serve a valid request, before the
	// backend sees it, and may lower its MaxTokens (set it when 0) to what
	// the caller is allowed. caller comes from the secure channel; the
	// caller's credentials are in ctx (inference.CredentialsOf). An error is
	// sent to the caller as an error frame: its code is that of the
	// inference sentinel it wraps (ErrBusy: busy), and refused for any
	// other error, so the caller's dispatch asks another expert.
	Admit func(ctx context.Context, caller peer.ID, req *inference.Request) error
	// Charge, if set, hears of an admitted call whose backend answered in
	// full, with its token counts, before the final frame goes out: what it
	// charges is in force before the caller can send its next request.
	// Complete still hears of the call, with Charged set.
	Charge func(ctx context.Context, c Completion)
	// Complete, if set, hears about every call once it ended, whatever the
	// outcome. It runs on the handler's goroutine after the stream is done
	// with; it should not block for long.
	Complete func(ctx context.Context, c Completion)

	// Receipts, if set, makes every successful answer end with a signed
	// receipt that the requester may countersign (nil: no receipts).
	Receipts *ServerReceipts
	// KeepAnswer puts the text sent into Completion.Answer (an audit that
	// keeps answers, not only their hashes).
	KeepAnswer bool
}

// Outcomes of a Completion, besides the error codes.
const (
	OutcomeOK        = "ok"
	OutcomeCancelled = "cancelled" // the caller went away (reset or lost connection)
)

// Completion is what a Service did for one call.
type Completion struct {
	Caller peer.ID // from the secure channel
	// Model and Request are as the caller asked (zero when the request
	// frame could not be read or decoded); RequestSize is its frame's size
	// in bytes.
	Model       string
	Request     inference.Request
	RequestSize int
	// Credentials are what the caller presented with the request.
	Credentials inference.Credentials
	// Admitted: the request was valid and Admit (if any) let it through,
	// so the backend was asked (Request then holds what Admit left of it).
	Admitted bool
	// Charged: Charge heard of the call before its final frame was sent.
	Charged  bool
	Start    time.Time     // when the stream arrived
	TTFT     time.Duration // from Start to the first chunk sent (0: none sent)
	Duration time.Duration // from Start to the end
	// PromptTokens and CompletionTokens are the backend's counts when the
	// call finished; otherwise CompletionTokens counts the chunks sent.
	PromptTokens, CompletionTokens int
	// Outcome is OutcomeOK, OutcomeCancelled or the code of the error frame
	// sent (CodeBusy, CodeRefused, CodeInvalidRequest, ...).
	Outcome string
	Err     error // why, when Outcome is not OutcomeOK
	// Receipt is the receipt issued for the answer as it was stored (with
	// the requester's signature only if it countersigned), or nil: receipts
	// are off, the call did not succeed, or signing failed.
	Receipt *receipt.Signed
	// AnswerHash is the SHA-256 of the text sent, as a receipt's (zero when
	// the backend was not asked); Answer is that text when
	// ServiceConfig.KeepAnswer is set.
	AnswerHash receipt.Hash
	Answer     string
}

// DefaultServiceConfig returns the defaults.
func DefaultServiceConfig() ServiceConfig {
	return ServiceConfig{
		IdleTimeout:      30 * time.Second,
		MaxDuration:      10 * time.Minute,
		MaxWriteWait:     30 * time.Second,
		MaxModelName:     256,
		MaxMessages:      1024,
		MaxTokens:        MaxTokens,
		MaxStop:          16,
		DefaultMaxTokens: DefaultMaxTokens,
		TokensCap:        TokensCap,
	}
}

// Service serves ID on a host from an inference.Backend. Each stream is
// attached to the ServiceName resource scope and reserves its request's size
// from the resource manager before the request is read; concurrency is the
// backend's to limit (inference.ErrBusy reaches the client as CodeBusy).
type Service struct {
	h      host.Host
	b      inference.Backend
	cfg    ServiceConfig
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // handlers in flight
}

// NewService registers the stream handler for ID on h. Zero fields of cfg
// take their DefaultServiceConfig values.
func NewService(h host.Host, b inference.Backend, cfg ServiceConfig) *Service {
	def := DefaultServiceConfig()
	wire.Default(&cfg.IdleTimeout, def.IdleTimeout)
	wire.Default(&cfg.MaxDuration, def.MaxDuration)
	wire.Default(&cfg.MaxModelName, def.MaxModelName)
	wire.Default(&cfg.MaxMessages, def.MaxMessages)
	wire.Default(&cfg.MaxTokens, def.MaxTokens)
	wire.Default(&cfg.MaxStop, def.MaxStop)
	wire.Default(&cfg.MaxWriteWait, def.MaxWriteWait)
	wire.Default(&cfg.TokensCap, def.TokensCap)
	wire.Default(&cfg.DefaultMaxTokens, def.DefaultMaxTokens)
	cfg.TokensCap = min(cfg.TokensCap, cfg.MaxTokens)
	cfg.DefaultMaxTokens = min(cfg.DefaultMaxTokens, cfg.TokensCap)
	s := &Service{h: h, b: b, cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	if rc := cfg.Receipts; rc != nil {
		if id, err := peer.IDFromPrivateKey(rc.Key); rc.Key == nil || err != nil || id != h.ID() {
			s.log.Error("infer: receipts off: their key is not the host's", "peer", h.ID().ShortString())
			s.cfg.Receipts = nil
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	h.SetStreamHandler(ID, s.handle)
	return s
}

// Close removes the stream handler, cancels calls in flight and waits for
// their handlers to return.
func (s *Service) Close() error {
	s.h.RemoveStreamHandler(ID)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// maxTokens is the max_tokens a valid request runs with: DefaultMaxTokens
// when it set none, at most TokensCap.
func (s *Service) maxTokens(asked int) int {
	if asked <= 0 {
		return s.cfg.DefaultMaxTokens
	}
	return min(asked, s.cfg.TokensCap)
}

func (s *Service) validate(r *request) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", inference.ErrInvalidRequest, fmt.Sprintf(format, args...))
	}
	switch {
	case r.Model == "":
		return bad("model is required")
	case len(r.Model) > s.cfg.MaxModelName:
		return bad("model name longer than %d bytes", s.cfg.MaxModelName)
	case len(r.Messages) > s.cfg.MaxMessages:
		return bad("more than %d messages", s.cfg.MaxMessages)
	case len(r.Messages) == 0 && r.Prompt == "" && len(r.Input) == 0:
		return bad("neither messages, prompt nor input")
	case r.MaxTokens < 0 || r.MaxTokens > s.cfg.MaxTokens:
		return bad("max_tokens must be within 0..%d", s.cfg.MaxTokens)
	case len(r.Stop) > s.cfg.MaxStop:
		return bad("more than %d stop sequences", s.cfg.MaxStop)
	case r.TopLogprobs < 0 || r.TopLogprobs > 20:
		return bad("top_logprobs must be within 0..20")
	case r.TimeoutMS < 0:
		return bad("negative timeout_ms")
	case len(r.Grant) > inference.MaxCredential || len(r.Cert) > inference.MaxCredential:
		return bad("a credential is longer than %d bytes", inference.MaxCredential)
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
	caller := str.Conn().RemotePeer()
	log := s.log.With("peer", caller.ShortString())

	if err := str.Scope().SetService(ServiceName); err != nil {
		// Over the resource manager's stream limit for the service or for
		// this peer: say busy, so that the caller asks another expert.
		log.Debug("infer: stream limit", "err", err)
		_ = str.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
		_ = wire.WriteJSON(str, frame{Error: &errorFrame{Code: CodeBusy, Message: "too many streams"}}, MaxFrameSize)
		_ = str.Close()
		return
	}
	c := Completion{Caller: caller, Start: time.Now()}
	called := false // a request arrived: Complete hears of it
	defer func() {
		if called && s.cfg.Complete != nil {
			c.Duration = time.Since(c.Start)
			s.cfg.Complete(inference.WithCaller(s.ctx, caller), c)
		}
	}()
	// fail answers with an error frame and records the outcome.
	fail := func(err error, code string) {
		c.Outcome, c.Err = code, err
		_ = str.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
		_ = wire.WriteJSON(str, frame{Error: &errorFrame{Code: code, Message: wire.Truncate(err.Error())}}, MaxFrameSize)
		_ = str.Close()
	}
	// gone records a caller that went away and resets the stream.
	gone := func(err error) {
		c.Outcome, c.Err = OutcomeCancelled, err
		str.Reset()
	}

	// Read the request, reserving its exact size before reading the body.
	_ = str.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
	r := wire.NewReader(str, MaxRequestSize)
	n, err := r.NextMsgLen()
	if err != nil {
		log.Debug("infer: read request length", "err", err)
		str.Reset()
		return
	}
	called, c.RequestSize = true, n
	if n > MaxRequestSize {
		fail(fmt.Errorf("%w: request of %d bytes exceeds the %d-byte cap", inference.ErrInvalidRequest, n, MaxRequestSize), CodeInvalidRequest)
		return
	}
	if err := str.Scope().ReserveMemory(n, network.ReservationPriorityMedium); err != nil {
		log.Debug("infer: reserve memory", "bytes", n, "err", err)
		fail(fmt.Errorf("%w: resource limit", inference.ErrBusy), CodeBusy)
		return
	}
	defer str.Scope().ReleaseMemory(n)
	msg, err := r.ReadMsg()
	if err != nil {
		log.Debug("infer: read request", "err", err)
		gone(err)
		return
	}
	receipts := s.cfg.Receipts
	var requestHash receipt.Hash
	if receipts != nil {
		requestHash = receipt.Sum(msg)
	}
	var wr request
	err = json.Unmarshal(msg, &wr)
	r.ReleaseMsg(msg)
	if err != nil {
		fail(fmt.Errorf("%w: malformed request", inference.ErrInvalidRequest), CodeInvalidRequest)
		return
	}
	c.Model, c.Request = wr.Model, wr.request()
	if err := s.validate(&wr); err != nil {
		fail(err, CodeInvalidRequest)
		return
	}
	c.Request.MaxTokens = s.maxTokens(wr.MaxTokens)
	wr.MaxTokens = c.Request.MaxTokens
	_ = str.SetReadDeadline(time.Time{})

	timeout := s.cfg.MaxDuration
	if wr.TimeoutMS > 0 && time.Duration(wr.TimeoutMS) < timeout/time.Millisecond {
		timeout = time.Duration(wr.TimeoutMS) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(inference.WithCaller(s.ctx, caller), timeout)
	defer cancel()
	if wr.Grant != nil || wr.Cert != nil {
		c.Credentials = inference.Credentials{Grant: wr.Grant, Cert: wr.Cert}
		ctx = inference.WithCredentials(ctx, c.Credentials)
	}

	if s.cfg.Admit != nil {
		if err := s.cfg.Admit(ctx, caller, &c.Request); err != nil {
			code := codes.CodeOf(err)
			if code == CodeInternal {
				code, err = CodeRefused, fmt.Errorf("%w: %w", inference.ErrRefused, err)
			}
			log.Debug("infer: not admitted", "model", wr.Model, "err", err)
			fail(err, code)
			return
		}
		c.Admitted = true // from here Complete must hear of it, whatever happens
		if c.Request.Model != wr.Model || c.Request.MaxTokens < 0 || (wr.MaxTokens > 0 && c.Request.MaxTokens > wr.MaxTokens) {
			// Admit may only lower max_tokens.
			fail(fmt.Errorf("infer: admission changed the request"), CodeInternal)
			return
		}
	}
	c.Admitted = true

	// The client writes nothing more before the answer ended; a read
	// returning early means the stream was reset (client cancelled) or the
	// connection died, or the client broke the protocol: the backend call
	// is cancelled. After the final, the frame whose header the watcher
	// reads is the client's answer to a receipt; closing its side (EOF) is
	// what an old client or one without receipts does.
	watch := make(chan struct{})
	next := make(chan header, 1)
	go func() {
		defer close(watch)
		n, err := r.NextMsgLen()
		if err != io.EOF {
			cancel()
		}
		next <- header{n, err}
	}()
	defer func() { <-watch }()

	log.Debug("infer: request", "model", wr.Model, "max_tokens", wr.MaxTokens)
	var lost error         // a chunk could not be written: nobody is listening
	answer := sha256.New() // of the text sent, for the receipt and Completion
	var text strings.Builder
	waited := time.Duration(0) // blocked writing frames, in all
	f, err := s.b.Generate(ctx, c.Request, func(ch inference.Chunk) error {
		if c.CompletionTokens == 0 {
			c.TTFT = time.Since(c.Start)
		}
		w := toWireChunk(ch)
		begin := time.Now()
		_ = str.SetWriteDeadline(begin.Add(min(s.cfg.IdleTimeout, s.cfg.MaxWriteWait-waited)))
		err := wire.WriteJSON(str, frame{Chunk: w}, MaxFrameSize)
		if waited += time.Since(begin); err == nil && waited >= s.cfg.MaxWriteWait {
			err = fmt.Errorf("the caller kept the call waiting %s to take its frames", waited.Round(time.Millisecond))
		}
		if err != nil {
			if !errors.Is(err, wire.ErrTooLarge) {
				lost = err
			}
			return err
		}
		_, _ = io.WriteString(answer, w.Text)
		if s.cfg.KeepAnswer {
			text.WriteString(w.Text)
		}
		c.CompletionTokens++
		return nil
	})
	copy(c.AnswerHash[:], answer.Sum(nil))
	c.Answer = text.String()
	if err != nil {
		if lost != nil || ctx.Err() != nil && s.ctx.Err() == nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The client went away; nobody is listening.
			log.Debug("infer: cancelled by client", "model", wr.Model)
			gone(err)
			return
		}
		log.Debug("infer: backend error", "model", wr.Model, "err", err)
		fail(err, codes.CodeOf(err))
		return
	}
	c.PromptTokens, c.CompletionTokens = f.PromptTokens, f.CompletionTokens
	if s.cfg.Charge != nil {
		s.cfg.Charge(inference.WithCaller(s.ctx, caller), c)
		c.Charged = true
	}
	_ = str.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
	if err := wire.WriteJSON(str, frame{Final: toWireFinal(f)}, MaxFrameSize); err != nil {
		log.Debug("infer: write final", "err", err)
		gone(err)
		return
	}
	ended := time.Since(c.Start)
	c.Outcome = OutcomeOK
	if receipts != nil {
		p := pending{
			caller: caller, model: wr.Model, final: f, start: c.Start, ttft: c.TTFT, request: requestHash,
			missDeadline: missed(wr.TimeoutMS, ended),
		}
		p.answer = c.AnswerHash
		c.Receipt = s.issue(str, r, next, p, log)
	}
	_ = str.Close()
}
