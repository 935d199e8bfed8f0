package wire

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
)

// Streams tracks the streams a service is serving, so that closing the
// service resets them and waits for their handlers. The zero value is ready.
type Streams struct {
	mu      sync.Mutex
	closing bool
	open    map[network.Stream]struct{}
	wg      sync.WaitGroup
}

// Track registers str for its handler; false once Close was called (the
// handler then resets str and returns).
func (s *Streams) Track(str network.Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	if s.open == nil {
		s.open = make(map[network.Stream]struct{})
	}
	s.open[str] = struct{}{}
	s.wg.Add(1)
	return true
}

// Untrack is what a handler defers after a successful Track.
func (s *Streams) Untrack(str network.Stream) {
	s.mu.Lock()
	delete(s.open, str)
	s.mu.Unlock()
	s.wg.Done()
}

// Close resets every tracked stream and waits for their handlers.
func (s *Streams) Close() {
	s.mu.Lock()
	s.closing = true
	for str := range s.open {
		str.Reset()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
