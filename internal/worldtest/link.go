package worldtest

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Shaped is a host whose streams carry a world's latencies: every write on
// a stream it opens or accepts reaches the other end the one-way delay to
// that peer later, in order, as bytes over a long fibre would.
//
// go-libp2p's mock network has link latencies of its own, but they do not
// model a stream: a write under 256 bytes waits in a buffer whose timer
// every later write pushes back, and closing a stream flushes the buffer at
// once. Tokens streamed every few milliseconds then arrive in a lump many
// tokens late, and a short answer closed at once arrives with no delay at
// all, so times to first token measured over it say little about the
// distance. Shaped delays each write exactly once, and the mock network
// under it runs with no latency.
//
// Both ends of a connection must be Shaped for a round trip to take twice
// the one-way delay. Streams opened inside the host (identify) are not
// delayed.
type Shaped struct {
	host.Host
	// OneWay is the delay to a peer.
	OneWay func(peer.ID) time.Duration
	// Done, when closed, ends every stream's delivery (the world is torn
	// down): writes still queued are dropped.
	Done <-chan struct{}
}

// NewStream opens a stream whose writes are delayed.
func (h *Shaped) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	s, err := h.Host.NewStream(ctx, p, pids...)
	if err != nil {
		return nil, err
	}
	return h.shape(s), nil
}

// SetStreamHandler registers handler for streams whose replies are delayed.
func (h *Shaped) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, func(s network.Stream) { handler(h.shape(s)) })
}

// SetStreamHandlerMatch is SetStreamHandler with a matching function.
func (h *Shaped) SetStreamHandlerMatch(pid protocol.ID, match func(protocol.ID) bool, handler network.StreamHandler) {
	h.Host.SetStreamHandlerMatch(pid, match, func(s network.Stream) { handler(h.shape(s)) })
}

func (h *Shaped) shape(s network.Stream) network.Stream {
	d := h.OneWay(s.Conn().RemotePeer())
	if d <= 0 {
		return s
	}
	return &shapedStream{Stream: s, delay: d, done: h.Done, queue: make(chan write, 64), stop: make(chan struct{})}
}

// write is one queued operation: data to write, or the stream's end.
type write struct {
	data []byte
	at   time.Time
	end  func() error // CloseWrite or Close, after the data before it
	last bool         // Close: nothing follows
}

// shapedStream delivers its writes delay after they were made, from one
// goroutine per stream that runs while writes are queued.
type shapedStream struct {
	network.Stream
	delay time.Duration
	done  <-chan struct{}
	queue chan write

	once    sync.Once
	stop    chan struct{} // closed by Reset
	stopped sync.Once
	mu      sync.Mutex
	err     error // the first error of a delayed write
}

func (s *shapedStream) run() {
	t := time.NewTimer(0)
	<-t.C
	for {
		var w write
		select {
		case w = <-s.queue:
		case <-s.stop:
			return
		case <-s.done:
			return
		}
		if wait := time.Until(w.at); wait > 0 {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-s.stop:
				t.Stop()
				return
			case <-s.done:
				t.Stop()
				return
			}
		}
		var err error
		if w.end != nil {
			err = w.end()
		} else {
			_, err = s.Stream.Write(w.data)
		}
		if err != nil {
			s.mu.Lock()
			if s.err == nil {
				s.err = err
			}
			s.mu.Unlock()
		}
		if w.last {
			return
		}
	}
}

func (s *shapedStream) enqueue(w write) error {
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.once.Do(func() { go s.run() })
	w.at = time.Now().Add(s.delay)
	select {
	case s.queue <- w:
		return nil
	case <-s.stop:
		return network.ErrReset
	case <-s.done:
		return network.ErrReset
	}
}

// Write queues a copy of p; an error of an earlier delayed write is
// returned here.
func (s *shapedStream) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.enqueue(write{data: append([]byte(nil), p...)}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseWrite ends the stream after the writes before it arrived.
func (s *shapedStream) CloseWrite() error {
	return s.enqueue(write{end: s.Stream.CloseWrite})
}

// Close ends the stream after the writes before it arrived.
func (s *shapedStream) Close() error {
	return s.enqueue(write{end: s.Stream.Close, last: true})
}

// Reset drops what is queued and resets the stream at once.
func (s *shapedStream) Reset() error {
	s.stopped.Do(func() { close(s.stop) })
	return s.Stream.Reset()
}

// ResetWithError is Reset with an error code for the other end.
func (s *shapedStream) ResetWithError(code network.StreamErrorCode) error {
	s.stopped.Do(func() { close(s.stop) })
	return s.Stream.ResetWithError(code)
}
