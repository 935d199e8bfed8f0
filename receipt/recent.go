package receipt

import "sync"

// Recent is a set of the last n IDs added: what a peer keeps to refuse a
// receipt or tally it has seen lately. It is safe for concurrent use.
type Recent struct {
	mu   sync.Mutex
	ids  map[ID]struct{}
	ring []ID // in order of addition, from next
	next int
}

// NewRecent returns an empty set that remembers n IDs.
func NewRecent(n int) *Recent {
	return &Recent{ids: make(map[ID]struct{}, n), ring: make([]ID, 0, max(n, 1))}
}

// Add adds id and reports whether it was absent.
func (s *Recent) Add(id ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[id]; ok {
		return false
	}
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, id)
	} else {
		delete(s.ids, s.ring[s.next])
		s.ring[s.next] = id
		s.next = (s.next + 1) % len(s.ring)
	}
	s.ids[id] = struct{}{}
	return true
}

// Forget removes id, added lately.
func (s *Recent) Forget(id ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[id]; !ok {
		return
	}
	delete(s.ids, id)
	// Clear its slot, looking from the newest, so that evicting the slot
	// later cannot remove the ID if it is added again.
	for i := range len(s.ring) {
		j := (s.next - 1 - i + 2*len(s.ring)) % len(s.ring)
		if s.ring[j] == id {
			s.ring[j] = ID{}
			return
		}
	}
}

// Contains reports whether id is in the set.
func (s *Recent) Contains(id ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}
