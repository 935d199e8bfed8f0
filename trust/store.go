package trust

import (
	"cmp"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"
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
	// Wrong: the peer computed wrongly: it sent rows that are not finite
	// numbers, or a spot-check outvoted it (its answer differed from the one
	// two other replicas agreed on). Worth WrongWeight failures, forgiven
	// only slowly (Forgiveness), and it excludes the peer for a while
	// (Exclusion, growing with repeat offences): see Convict.
	Wrong
)

var kindNames = [...]string{"chosen", "success", "failure", "stalled", "bad_data", "refused", "wrong"}

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
	// Detail says in words what was wrong (for Wrong and BadData); the
	// last one shows in the peer's score's reasons.
	Detail string
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
	// WrongWeight is how many failures one Wrong event counts as.
	WrongWeight float64
	// Forgiveness is the half-life of Wrong events: a wrong answer counts
	// half after one Forgiveness. It is slow on purpose: a failure can be
	// bad luck, a wrong answer is not.
	Forgiveness time.Duration
	// Exclusion is how long a peer convicted of a wrong answer is left out
	// of replica choice: times 4 for each earlier wrong answer still
	// remembered (their decayed count, rounded), up to MaxExclusion.
	Exclusion, MaxExclusion time.Duration
	// MaxPeers bounds the peers remembered; the least recently observed is
	// forgotten first.
	MaxPeers int
	// Path, if set, is the file the store is kept in across restarts: Open
	// reads it, Save, Run and Close write it (atomically).
	Path string
	// SaveEvery is how often Run saves a changed store (0: one minute).
	SaveEvery time.Duration
	// Log hears of failed saves (nil: slog.Default).
	Log *slog.Logger
	// Now is the clock (time.Now when nil); tests set it.
	Now func() time.Time
}

// DefaultConfig returns the defaults: failures halve every minute, a failed
// peer waits 15 s (doubling per failure in a row), bad data counts as five
// failures; a wrong answer counts as 20 failures, halves every day and
// excludes the peer for 10 minutes (40 after a second offence, 2 h 40 min
// after a third, at most a day); 4,096 peers remembered, saved every minute.
//
// Why a day: a peer caught once is back near a clean record (Value 0.87
// after a week of good behaviour, 0.93 after eight days), and a second
// offence within a day or so still counts as a repeat.
func DefaultConfig() Config {
	return Config{HalfLife: time.Minute, Cooldown: 15 * time.Second, BadDataWeight: 5,
		WrongWeight: 20, Forgiveness: 24 * time.Hour, Exclusion: 10 * time.Minute, MaxExclusion: 24 * time.Hour,
		MaxPeers: 4096, SaveEvery: time.Minute}
}

// Store holds what this peer observed of every other peer. It is safe for
// concurrent use.
type Store struct {
	cfg Config

	mu    sync.Mutex
	peers map[string]*record
	dirty bool // changed since the last save
}

// record is one peer's history.
type record struct {
	failures  float64 // decayed weighted count as of failedAt
	failedAt  time.Time
	streak    int     // failures in a row since the last success
	wrongs    float64 // decayed count of Wrong events as of wrongAt
	wrongAt   time.Time
	excluded  time.Time // left out of replica choice until then
	detail    string    // the last Wrong or BadData event's Detail
	counts    [len(kindNames)]uint64
	perf      map[string]*perf // by model
	lastEvent time.Time
	suspect   time.Time // suspected since (zero: not suspected)
	whySusp   string
}

// PerfWindow is how many recent calls a peer's measured speed is taken
// from (see Perf).
const PerfWindow = 5

type perf struct {
	ttft   [PerfWindow]time.Duration // a ring of recent times to first token
	tps    [PerfWindow]float64       // a ring of recent decode rates
	nt, nr int                       // samples put in each ring
	n      int
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
	if cfg.WrongWeight <= 0 {
		cfg.WrongWeight = def.WrongWeight
	}
	if cfg.Forgiveness <= 0 {
		cfg.Forgiveness = def.Forgiveness
	}
	if cfg.Exclusion <= 0 {
		cfg.Exclusion = def.Exclusion
	}
	if cfg.MaxExclusion <= 0 {
		cfg.MaxExclusion = def.MaxExclusion
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = def.MaxPeers
	}
	if cfg.SaveEvery <= 0 {
		cfg.SaveEvery = def.SaveEvery
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg, peers: make(map[string]*record)}
}

// Observe records ev for peer.
func (s *Store) Observe(peer string, ev Event) { s.observe(peer, ev) }

// Convict records that peer answered wrongly (a Wrong event for model, with
// detail in words) and excludes it (see Config.Exclusion). It reports
// whether this is a new offence: false when the peer was already excluded,
// in which case the event is counted but neither lengthens nor escalates the
// exclusion, so one lie caught by several calls in flight at once is one
// offence.
func (s *Store) Convict(peer, model, detail string) bool {
	return s.observe(peer, Event{Kind: Wrong, Model: model, Detail: detail})
}

// observe records ev; for Wrong it reports whether it was a new offence.
func (s *Store) observe(peer string, ev Event) bool {
	if peer == "" || ev.Kind < 0 || int(ev.Kind) >= len(kindNames) {
		return false
	}
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dirty = true
	r := s.get(peer, now)
	r.counts[ev.Kind]++
	if ev.Detail != "" && (ev.Kind == Wrong || ev.Kind == BadData) {
		r.detail = trunc(ev.Detail, maxDetail)
	}
	switch ev.Kind {
	case Success:
		r.suspect, r.whySusp = time.Time{}, ""
	case Stalled:
		if r.suspect.IsZero() {
			r.suspect, r.whySusp = now, "stalled"
		}
	}
	switch ev.Kind {
	case Wrong:
		if now.Before(r.excluded) {
			return false
		}
		prior := decay(r.wrongs, r.wrongAt, now, s.cfg.Forgiveness)
		repeats := min(int(prior+0.5), 8)
		r.excluded = now.Add(min(s.cfg.Exclusion<<(2*repeats), s.cfg.MaxExclusion))
		r.wrongs, r.wrongAt = prior+1, now
		r.streak = 0 // the exclusion replaces the backoff
		return true
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
	return false
}

// Suspect marks peer as suspected of being unreachable or frozen (why says
// how it was found: a failed ping, a stall, a missed first token) until it
// answers again (Alive, or a Success event). A suspect is tried after every
// peer that is not (see Rank), so routing goes around it at once rather
// than after its announcements time out; it keeps its score, since a
// suspicion is no proof of a fault.
func (s *Store) Suspect(peer, why string) {
	if peer == "" {
		return
	}
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.get(peer, now)
	if r.suspect.IsZero() {
		r.suspect = now
	}
	r.whySusp = trunc(why, maxDetail)
}

// Alive clears a suspicion of peer: it answered (a ping, a call).
func (s *Store) Alive(peer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.peers[peer]; ok && !r.suspect.IsZero() {
		r.suspect, r.whySusp = time.Time{}, ""
	}
}

// Suspects lists up to max suspected peers (max <= 0: all), longest
// suspected first.
func (s *Store) Suspects(max int) []string {
	s.mu.Lock()
	type susp struct {
		peer  string
		since time.Time
	}
	var all []susp
	for id, r := range s.peers {
		if !r.suspect.IsZero() {
			all = append(all, susp{id, r.suspect})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b susp) int { return a.since.Compare(b.since) })
	if max > 0 && len(all) > max {
		all = all[:max]
	}
	out := make([]string, len(all))
	for i, x := range all {
		out[i] = x.peer
	}
	return out
}

// Suspected reports whether peer is suspected now (see Suspect).
func (s *Store) Suspected(peer string) bool { return !s.Score(peer).Suspect.IsZero() }

// maxDetail bounds a remembered Detail.
const maxDetail = 200

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
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
		p.ttft[p.nt%PerfWindow] = ev.TTFT
		p.nt++
	}
	if decode := ev.Duration - ev.TTFT; ev.Tokens > 1 && decode > 0 {
		p.tps[p.nr%PerfWindow] = float64(ev.Tokens-1) / decode.Seconds()
		p.nr++
	}
}

// decayed is r's failure count now.
func (s *Store) decayed(r *record, now time.Time) float64 {
	return decay(r.failures, r.failedAt, now, s.cfg.HalfLife)
}

// decay is n, counted at t, halved for every halfLife since, and 0 once
// below 0.01.
func decay(n float64, t, now time.Time, halfLife time.Duration) float64 {
	if n == 0 {
		return 0
	}
	halves := now.Sub(t).Seconds() / halfLife.Seconds()
	f := n * math.Exp2(-max(halves, 0))
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
	// Failures is the decayed, weighted count of recent failures, wrong
	// answers included (each WrongWeight, decaying with Forgiveness).
	Failures float64 `json:"failures"`
	// Wrong is the decayed count of wrong answers alone.
	Wrong float64 `json:"wrong,omitempty"`
	// Excluded is when the peer's exclusion from replica choice ends (zero
	// when it is not excluded).
	Excluded time.Time `json:"excluded,omitzero"`
	// Streak is the failures in a row since its last success.
	Streak int `json:"streak"`
	// Backoff is when the peer stops being tried after the others (zero when
	// it is not in backoff).
	Backoff time.Time `json:"backoff,omitzero"`
	// Suspect is since when the peer is suspected of being unreachable or
	// frozen (zero: it is not); see Store.Suspect.
	Suspect time.Time `json:"suspect,omitzero"`
	// Reasons says, in words, what lowered Value (or made it a suspect).
	Reasons []string `json:"reasons,omitempty"`
}

// InBackoff reports whether the peer should be tried after the others now.
func (sc Score) InBackoff(now time.Time) bool { return !sc.Backoff.IsZero() && now.Before(sc.Backoff) }

// IsExcluded reports whether the peer, caught answering wrongly, is to be
// left out of replica choice now.
func (sc Score) IsExcluded(now time.Time) bool {
	return !sc.Excluded.IsZero() && now.Before(sc.Excluded)
}

// Excluded reports whether peer is excluded now (see Convict).
func (s *Store) Excluded(peer string) bool { return s.Score(peer).IsExcluded(s.cfg.Now()) }

// Score returns peer's score now.
func (s *Store) Score(peer string) Score {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.peers[peer]
	if !ok {
		return Score{Value: 1}
	}
	w := decay(r.wrongs, r.wrongAt, now, s.cfg.Forgiveness)
	f := s.decayed(r, now) + s.cfg.WrongWeight*w
	sc := Score{Value: 1 / (1 + f), Failures: f, Wrong: w, Streak: r.streak}
	if r.streak > 0 {
		if until := r.failedAt.Add(s.cfg.Cooldown << min(r.streak-1, 4)); now.Before(until) {
			sc.Backoff = until
		}
	}
	if now.Before(r.excluded) {
		sc.Excluded = r.excluded
	}
	sc.Suspect = r.suspect
	if f > 0 {
		for _, k := range []Kind{Failure, Stalled, BadData, Wrong} {
			if n := r.counts[k]; n > 0 {
				sc.Reasons = append(sc.Reasons, fmt.Sprintf("%d %s", n, k))
			}
		}
		if r.detail != "" {
			sc.Reasons = append(sc.Reasons, "last: "+r.detail)
		}
	}
	if sc.InBackoff(now) {
		sc.Reasons = append(sc.Reasons, fmt.Sprintf("%d failures in a row", r.streak))
	}
	if !sc.Suspect.IsZero() {
		sc.Reasons = append(sc.Reasons, "suspect since "+sc.Suspect.UTC().Format(time.RFC3339)+": "+r.whySusp)
	}
	if sc.IsExcluded(now) {
		sc.Reasons = append(sc.Reasons, "excluded until "+sc.Excluded.UTC().Format(time.RFC3339)+" for wrong answers")
	}
	return sc
}

// Perf is a peer's measured speed for one model: the best of its last
// PerfWindow calls rather than a mean. A busy network or CPU, at either end,
// only ever slows a call, so the best recent one is the nearest to what the
// peer can do and the steadiest to rank it by; a peer that really got
// slower is followed within PerfWindow calls (and its failures, stalls and
// announced load say so sooner). On a loaded 2-core machine an EWMA read
// times to first token two to three times the true ones
// (internal/worldtest).
type Perf struct {
	TTFT      time.Duration // least time to first token of the last PerfWindow calls; 0 if never measured
	DecodeTPS float64       // greatest decode tokens/s of the last PerfWindow calls; 0 if never measured
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
	var out Perf
	out.Calls = p.n
	for i := range min(p.nt, PerfWindow) {
		if out.TTFT == 0 || p.ttft[i] < out.TTFT {
			out.TTFT = p.ttft[i]
		}
	}
	for i := range min(p.nr, PerfWindow) {
		out.DecodeTPS = max(out.DecodeTPS, p.tps[i])
	}
	return out
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

// Rank orders peers for trying in turn: those not in backoff first, then
// those in backoff, then suspects, then excluded ones, each group by cost (lower first; nil
// cost: by Score.Value, higher first), ties in the given order. It returns a
// new slice. Replica choice leaves excluded peers out altogether.
func (s *Store) Rank(peers []string, cost func(peer string) float64) []string {
	return RankBy(s, peers, func(p string) string { return p }, cost)
}

// RankBy is Rank over any peer type; id names a peer as the store knows it
// (peer.ID.String for libp2p's IDs).
func RankBy[P any](s *Store, peers []P, id func(P) string, cost func(P) float64) []P {
	type ranked struct {
		p    P
		back int // 0 fine, 1 in backoff, 2 suspect, 3 excluded
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
		back := 0
		switch {
		case sc.IsExcluded(now):
			back = 3
		case !sc.Suspect.IsZero():
			back = 2
		case sc.InBackoff(now):
			back = 1
		}
		rs[i] = ranked{p, back, c}
	}
	slices.SortStableFunc(rs, func(a, b ranked) int {
		if a.back != b.back {
			return cmp.Compare(a.back, b.back)
		}
		return cmp.Compare(a.cost, b.cost)
	})
	out := make([]P, len(rs))
	for i, r := range rs {
		out[i] = r.p
	}
	return out
}
