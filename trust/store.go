package trust

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/mwpeer/mwpeer/geo"
)

// Kind says what a peer did.
type Kind int

const (
	// Chosen: dispatch picked the peer for a call. It changes no score.
	Chosen Kind = iota
	// Success: a call finished well. It ends a streak of failures and, with
	// Model set, feeds the peer's measured speed for that model.
	Success
	// Failure: a call failed by the peer's own doing (an error, a dead
	// stream, a timeout), not because this peer cancelled it.
	Failure
	// Stalled: the peer stopped sending in the middle of a call.
	Stalled
	// BadData: the peer sent bytes that failed verification (a shard piece
	// whose hash is wrong). Worth BadDataWeight failures.
	BadData
	// Refused: the peer declined the call (busy, not consented). Not a
	// fault: it is counted but costs nothing.
	Refused
)

var kindNames = [...]string{"chosen", "success", "failure", "stalled", "bad_data", "refused"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("kind(%d)", int(k))
	}
	return kindNames[k]
}

// Event is one thing a peer did, as this peer saw it.
type Event struct {
	Kind Kind
	// Model is the model the call was for ("" for calls not about a model,
	// like a shard transfer).
	Model string
	// For Success: time to first token, tokens produced and the call's
	// whole duration, all measured here.
	TTFT     time.Duration
	Tokens   int
	Duration time.Duration
}

// Config tunes a Store. Zero fields take DefaultConfig's values.
type Config struct {
	// HalfLife is how fast failures are forgiven: a failure counts half after
	// one HalfLife.
	HalfLife time.Duration
	// Cooldown is how long a peer that just failed is tried only after the
	// others; it doubles with each failure in a row, up to 16 times.
	Cooldown time.Duration
	// BadDataWeight is how many failures one BadData event counts as.
	BadDataWeight float64
	// MaxPeers bounds the peers remembered; the least recently observed is
	// forgotten first.
	MaxPeers int
	// Now is the clock (time.Now when nil); tests set it.
	Now func() time.Time
}

// DefaultConfig returns the defaults: failures halve every minute, a failed
// peer waits 15 s (doubling per failure in a row), bad data counts as five
// failures, 4,096 peers remembered.
func DefaultConfig() Config {
	return Config{HalfLife: time.Minute, Cooldown: 15 * time.Second, BadDataWeight: 5, MaxPeers: 4096}
}

// Store holds what this peer observed of every other peer. It is safe for
// concurrent use.
type Store struct {
	cfg Config

	mu    sync.Mutex
	peers map[string]*record
}

// record is one peer's history.
type record struct {
	failures  float64 // decayed weighted count as of failedAt
	failedAt  time.Time
	streak    int // failures in a row since the last success
	counts    [len(kindNames)]uint64
	perf      map[string]*perf // by model
	lastEvent time.Time
}

type perf struct {
	ttft geo.EWMA
	tps  float64 // EWMA of decode tokens/s
	n    int
}

// maxModelsPerPeer bounds the per-model speed records of one peer.
const maxModelsPerPeer = 64

// New returns an empty Store.
func New(cfg Config) *Store {
	def := DefaultConfig()
	if cfg.HalfLife <= 0 {
		cfg.HalfLife = def.HalfLife
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = def.Cooldown
	}
	if cfg.BadDataWeight <= 0 {
		cfg.BadDataWeight = def.BadDataWeight
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = def.MaxPeers
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg, peers: make(map[string]*record)}
}

// Observe records ev for peer.
func (s *Store) Observe(peer string, ev Event) {
	if peer == "" || ev.Kind < 0 || int(ev.Kind) >= len(kindNames) {
		return
	}
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.get(peer, now)
	r.counts[ev.Kind]++
	switch ev.Kind {
	case Success:
		r.streak = 0
		if ev.Model != "" {
			r.addPerf(ev)
		}
	case Failure, Stalled, BadData:
		w := 1.0
		if ev.Kind == BadData {
			w = s.cfg.BadDataWeight
		}
		r.failures = s.decayed(r, now) + w
		r.failedAt = now
		r.streak++
	}
}

func (s *Store) get(peer string, now time.Time) *record {
	r, ok := s.peers[peer]
	if !ok {
		if len(s.peers) >= s.cfg.MaxPeers {
			var victim string
			var oldest time.Time
			for id, o := range s.peers {
				if victim == "" || o.lastEvent.Before(oldest) {
					victim, oldest = id, o.lastEvent
				}
			}
			delete(s.peers, victim)
		}
		r = &record{}
		s.peers[peer] = r
	}
	r.lastEvent = now
	return r
}

func (r *record) addPerf(ev Event) {
	if r.perf == nil {
		r.perf = make(map[string]*perf)
	}
	p := r.perf[ev.Model]
	if p == nil {
		if len(r.perf) >= maxModelsPerPeer {
			return
		}
		p = &perf{}
		r.perf[ev.Model] = p
	}
	p.n++
	if ev.TTFT > 0 {
		p.ttft.Add(ev.TTFT)
	}
	if decode := ev.Duration - ev.TTFT; ev.Tokens > 1 && decode > 0 {
		tps := float64(ev.Tokens-1) / decode.Seconds()
		if p.tps == 0 {
			p.tps = tps
		} else {
			p.tps = geo.DefaultAlpha*tps + (1-geo.DefaultAlpha)*p.tps
		}
	}
}

// decayed is r's failure count now.
func (s *Store) decayed(r *record, now time.Time) float64 {
	if r.failures == 0 {
		return 0
	}
	halves := now.Sub(r.failedAt).Seconds() / s.cfg.HalfLife.Seconds()
	f := r.failures * math.Exp2(-max(halves, 0))
	if f < 0.01 {
		return 0
	}
	return f
}

// Score is what the store makes of one peer.
type Score struct {
	// Value is in (0, 1]: 1 for a peer with a clean record (or none), lower
	// the more it failed recently: 1 / (1 + Failures).
	Value float64 `json:"value"`
	// Failures is the decayed, weighted count of recent failures.
	Failures float64 `json:"failures"`
	// Streak is the failures in a row since its last success.
	Streak int `json:"streak"`
	// Backoff is when the peer stops being tried after the others (zero when
	// it is not in backoff).
	Backoff time.Time `json:"backoff,omitzero"`
	// Reasons says, in words, what lowered Value.
	Reasons []string `json:"reasons,omitempty"`
}

// InBackoff reports whether the peer should be tried after the others now.
func (sc Score) InBackoff(now time.Time) bool { return !sc.Backoff.IsZero() && now.Before(sc.Backoff) }

// Score returns peer's score now.
func (s *Store) Score(peer string) Score {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.peers[peer]
	if !ok {
		return Score{Value: 1}
	}
	f := s.decayed(r, now)
	sc := Score{Value: 1 / (1 + f), Failures: f, Streak: r.streak}
	if r.streak > 0 {
		if until := r.failedAt.Add(s.cfg.Cooldown << min(r.streak-1, 4)); now.Before(until) {
			sc.Backoff = until
		}
	}
	if f > 0 {
		for _, k := range []Kind{Failure, Stalled, BadData} {
			if n := r.counts[k]; n > 0 {
				sc.Reasons = append(sc.Reasons, fmt.Sprintf("%d %s", n, k))
			}
		}
	}
	if sc.InBackoff(now) {
		sc.Reasons = append(sc.Reasons, fmt.Sprintf("%d failures in a row", r.streak))
	}
	return sc
}

// Perf is a peer's measured speed for one model.
type Perf struct {
	TTFT      time.Duration // EWMA of time to first token; 0 if never measured
	DecodeTPS float64       // EWMA of decode tokens/s; 0 if never measured
	Calls     int           // successful calls measured
}

// Perf returns what was measured of peer serving model.
func (s *Store) Perf(peer, model string) Perf {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.peers[peer]
	if !ok || r.perf == nil {
		return Perf{}
	}
	p, ok := r.perf[model]
	if !ok {
		return Perf{}
	}
	ttft, _ := p.ttft.Value()
	return Perf{TTFT: ttft, DecodeTPS: p.tps, Calls: p.n}
}

// Counts returns how many events of each kind were observed of peer, by
// kind name.
func (s *Store) Counts(peer string) map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]uint64{}
	if r, ok := s.peers[peer]; ok {
		for k, n := range r.counts {
			if n > 0 {
				out[Kind(k).String()] = n
			}
		}
	}
	return out
}

// Len is the number of peers remembered.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.peers)
}

// Rank orders peers for trying in turn: those not in backoff first, each
// group by cost (lower first; nil cost: by Score.Value, higher first), ties
// in the given order. It returns a new slice.
func (s *Store) Rank(peers []string, cost func(peer string) float64) []string {
	return RankBy(s, peers, func(p string) string { return p }, cost)
}

// RankBy is Rank over any peer type; id names a peer as the store knows it
// (peer.ID.String for libp2p's IDs).
func RankBy[P any](s *Store, peers []P, id func(P) string, cost func(P) float64) []P {
	type ranked struct {
		p    P
		back bool
		cost float64
	}
	now := s.cfg.Now()
	rs := make([]ranked, len(peers))
	for i, p := range peers {
		sc := s.Score(id(p))
		c := -sc.Value
		if cost != nil {
			c = cost(p)
		}
		rs[i] = ranked{p, sc.InBackoff(now), c}
	}
	slices.SortStableFunc(rs, func(a, b ranked) int {
		if a.back != b.back {
			if a.back {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.cost, b.cost)
	})
	out := make([]P, len(rs))
	for i, r := range rs {
		out[i] = r.p
	}
	return out
}
