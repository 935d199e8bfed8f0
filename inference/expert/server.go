package expert

import (
	"bufio"
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

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/tally"
	"github.com/mwpeer/mwpeer/internal/wire"
)

// ServerConfig bounds what a Server accepts.
type ServerConfig struct {
	// Concurrency bounds calls computed at once (0: 4); a call beyond it
	// waits up to QueueWait for a slot (0: 1 s), then is answered busy so
	// the caller can go to another replica.
	Concurrency int
	QueueWait   time.Duration
	// Idle closes a stream that brings no call for this long (0: 2 min).
	Idle time.Duration
	// ReadTimeout bounds reading one call's rows once its header arrived,
	// and WriteTimeout writing one answer (0: 10 s each).
	ReadTimeout, WriteTimeout time.Duration
	// Admit, if set, decides whether to compute a call, after its rows are
	// read and before a compute slot is taken; caller is the peer on the
	// secure channel. An error answers the call busy, so the caller asks
	// another replica. ctx ends when the Server closes. Budgets and consent
	// for expert calls plug in here.
	Admit func(ctx context.Context, caller peer.ID, c Call) error
	Log   *slog.Logger
}

// Call is one expert call as the serving side sees it.
type Call struct {
	Model         ModelKey
	Layer, Expert int
	Rows          int
}

// Engine computes one expert: *llama.Expert is the real one. Apply sets
// out[i] = expert(in[i]) for every row, each row of Embedding values.
type Engine interface {
	Apply(in, out [][]float32) error
	Embedding() int
}

var _ Engine = (*llama.Expert)(nil)

// key names one hosted expert.
type key struct {
	model         ModelKey
	layer, expert int
}

// Server answers /mwpeer/expert/1.0.0 calls for the experts it hosts: the
// protocol's service, registered on a host by NewServer.
type Server struct {
	h     host.Host
	cfg   ServerConfig
	slots chan struct{}

	mu      sync.RWMutex
	experts map[key]Engine

	ctx    context.Context // ends when the Server closes
	cancel context.CancelFunc

	streams wire.Streams

	// Calls and Rows count the calls answered with rows.
	Calls, Rows atomic.Uint64
	// Meter counts the calls answered with rows, per caller (from the
	// secure channel) and model ID (ModelKey.String), once the answer is
	// sent: a call, its rows and rows × row length values. A tally.Service
	// settles from it.
	Meter *tally.Meter
}

// NewServer registers the protocol handler on h.
func NewServer(h host.Host, cfg ServerConfig) *Server {
	wire.Default(&cfg.Concurrency, 4)
	wire.Default(&cfg.QueueWait, time.Second)
	wire.Default(&cfg.Idle, 2*time.Minute)
	wire.Default(&cfg.ReadTimeout, 10*time.Second)
	wire.Default(&cfg.WriteTimeout, 10*time.Second)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{h: h, cfg: cfg, slots: make(chan struct{}, cfg.Concurrency),
		experts: make(map[key]Engine), Meter: tally.NewMeter(0)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	h.SetStreamHandler(ID, s.handle)
	return s
}

// Add hosts expert (layer, e) of model, computed by x.
func (s *Server) Add(model ModelKey, layer, e int, x Engine) {
	s.mu.Lock()
	s.experts[key{model, layer, e}] = x
	s.mu.Unlock()
}

// Get returns a hosted expert, or nil.
func (s *Server) Get(model ModelKey, layer, e int) Engine {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.experts[key{model, layer, e}]
}

// Hosted returns the (layer, expert) pairs hosted for model.
func (s *Server) Hosted(model ModelKey) [][2]int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out [][2]int
	for k := range s.experts {
		if k.model == model {
			out = append(out, [2]int{k.layer, k.expert})
		}
	}
	return out
}

// Close removes the handler, resets the open streams and waits for their
// handlers to return.
func (s *Server) Close() error {
	s.h.RemoveStreamHandler(ID)
	s.cancel()
	s.streams.Close()
	return nil
}

// handle serves calls on one stream until the caller closes it, it idles,
// or a call is malformed. The stream joins the ServiceName scope and
// reserves its buffers before allocating them, and each call's rows (in and
// out) before reading them: a call whose reservation the resource manager
// refuses is answered busy, so the caller goes to another replica.
func (s *Server) handle(str network.Stream) {
	if !s.streams.Track(str) {
		str.Reset()
		return
	}
	defer s.streams.Untrack(str)
	log := s.cfg.Log.With("peer", str.Conn().RemotePeer().ShortString())
	if err := wire.Attach(str, ServiceName, 2*bufferSize+headerSize, network.ReservationPriorityMedium); err != nil {
		log.Debug("expert stream refused", "err", err)
		return
	}
	defer str.Close()
	r := bufio.NewReaderSize(str, bufferSize)
	w := bufio.NewWriterSize(str, bufferSize)
	hbuf := make([]byte, headerSize)
	var in, out [][]float32
	var back []float32 // rows in and out; its bytes are reserved (the stream's scope frees them when it ends)
	for {
		str.SetReadDeadline(time.Now().Add(s.cfg.Idle))
		h, err := readHeader(r, hbuf)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.Debug("expert call rejected", "err", err)
				if errors.Is(err, errBad) {
					// Say why, then close: the rest of the stream is out of step.
					str.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
					if writeStatus(w, StatusBad, err.Error()) == nil && w.Flush() == nil {
						return
					}
				}
				str.Reset()
			}
			return
		}
		// Refuse what cannot be answered before taking the rows: nothing
		// is allocated for a call this peer would not compute.
		x := s.Get(h.model, h.layer, h.expert)
		if x == nil || x.Embedding() != h.dim {
			status, msg := byte(StatusNotFound), "expert not hosted here"
			if x != nil {
				status, msg = StatusBad, fmt.Sprintf("rows of %d values, the expert takes %d", h.dim, x.Embedding())
			}
			str.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			if writeStatus(w, status, msg) != nil || w.Flush() != nil {
				str.Reset()
			}
			return
		}
		str.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
		if n := h.rows * h.dim; cap(back) < 2*n {
			// Reserve what the larger buffer adds before allocating it. It
			// stays reserved, with the buffer, until the stream ends.
			if _, err := wire.Reserve(str, 4*(2*n-cap(back)), network.ReservationPriorityMedium); err != nil {
				log.Debug("expert call over the memory budget", "bytes", 4*2*n, "err", err)
				// Take the rows off the stream without keeping them, so the
				// stream stays in step, then say busy.
				if _, err := io.CopyN(io.Discard, r, int64(h.payload())); err != nil {
					str.Reset()
					return
				}
				str.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
				if writeStatus(w, StatusBusy, "memory limit") != nil || w.Flush() != nil {
					str.Reset()
					return
				}
				continue
			}
			back = make([]float32, 2*n)
		}
		in, out = split(back[:h.rows*h.dim], in, h.rows, h.dim), split(back[h.rows*h.dim:2*h.rows*h.dim], out, h.rows, h.dim)
		if err := readRows(r, in, nil); err != nil {
			str.Reset()
			return
		}
		status, msg := byte(StatusOK), ""
		if s.cfg.Admit != nil {
			if err := s.cfg.Admit(s.ctx, str.Conn().RemotePeer(), Call{Model: h.model, Layer: h.layer, Expert: h.expert, Rows: h.rows}); err != nil {
				status, msg = StatusBusy, trunc(err.Error())
				if errors.Is(err, inference.ErrRefused) {
					status = StatusRefused
				}
			}
		}
		if status == StatusOK {
			status, msg = s.compute(x, h, in, out)
		}
		str.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if err := writeStatus(w, status, msg); err != nil {
			str.Reset()
			return
		}
		if status == StatusOK {
			if err := writeRows(w, out, nil); err != nil {
				str.Reset()
				return
			}
		}
		if err := w.Flush(); err != nil {
			str.Reset()
			return
		}
		if status == StatusOK {
			s.Meter.Add(str.Conn().RemotePeer(), h.model.String(), h.work())
		}
	}
}

// compute runs one call if a slot is free.
func (s *Server) compute(x Engine, h header, in, out [][]float32) (byte, string) {
	select {
	case s.slots <- struct{}{}:
	default:
		t := time.NewTimer(s.cfg.QueueWait)
		defer t.Stop()
		select {
		case s.slots <- struct{}{}:
		case <-t.C:
			return StatusBusy, "busy"
		}
	}
	defer func() { <-s.slots }()
	if err := x.Apply(in, out); err != nil {
		return StatusFailed, err.Error()
	}
	s.Calls.Add(1)
	s.Rows.Add(uint64(h.rows))
	return StatusOK, ""
}

// split cuts back into n rows of length dim, reusing rows' backing array.
func split(back []float32, rows [][]float32, n, dim int) [][]float32 {
	rows = rows[:0]
	for i := range n {
		rows = append(rows, back[i*dim:(i+1)*dim])
	}
	return rows
}
