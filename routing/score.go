package routing

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"time"
)

// Candidate is one expert that could answer: a peer serving a model, as the
// caller sees it in its snapshot of the swarm.
type Candidate struct {
	Peer     string        `json:"peer"`  // peer ID (base58)
	Local    bool          `json:"local"` // this peer itself
	Model    string        `json:"model"`
	Domains  []string      `json:"domains"`   // domains the peer declares
	RTT      time.Duration `json:"-"`         // predicted round trip; JSON rtt_ms
	RTTKnown bool          `json:"rtt_known"` // RTT is a measurement or a prediction, not a guess
	TTFT     time.Duration `json:"-"`         // measured time to first token; 0 if never measured; JSON ttft_ms
	// Calls is how many calls TTFT and DecodeTPS were measured over; 0
	// when the caller does not count them (then TTFT counts as established).
	Calls      int     `json:"calls,omitempty"`
	DecodeTPS  float64 `json:"decode_tps"`  // measured (else reported) decode tokens/s; 0 if unknown
	Capacity   int     `json:"capacity"`    // most concurrent requests it accepts (< 1 counts as 1)
	Load       int     `json:"load"`        // requests it is running now
	DistanceKm float64 `json:"distance_km"` // geographic distance; < 0 when unknown
	Failures   int     `json:"failures"`    // recent failures (a decaying count kept by the caller)
	// ReportedTTFT is the time to first token the peer reports of its own
	// engine, from the request's arrival there (no round trip); 0 if it
	// says nothing. Speed uses it when TTFT is 0, and as the most a
	// measurement of fewer than three calls counts for (see FirstToken).
	// JSON reported_ttft_ms.
	ReportedTTFT time.Duration `json:"-"`
	// ReportedTPS is the decode rate the peer reports of its own engine;
	// 0 if it says nothing. Speed uses it as the least a decode rate
	// measured over fewer than three calls counts for (see FirstToken).
	ReportedTPS float64 `json:"reported_tps,omitempty"`
	// Prefix is the network the peer is reached in (an IPv4 /24 or IPv6
	// /48, as the caller names it; "" when unknown): Decide spreads the K
	// experts of a prompt over different prefixes where it can.
	Prefix string `json:"prefix,omitempty"`
	// Sources says where each input above came from (see Sources).
	Sources Sources `json:"sources"`
}

// Where a candidate's input came from, from the most to the least
// trustworthy. The caller fills them in; routing only shows them (POST
// /api/route), it scores a value the same whatever its source, so the caller
// must not hand in a claim where a measurement exists.
const (
	// SourceLocal: this peer about itself.
	SourceLocal = "local"
	// SourceMeasured: this peer observed it (its pings, the timings of its
	// own calls, their failures, a busy answer).
	SourceMeasured = "measured"
	// SourceCoordinates, SourceDistance: an RTT predicted from network
	// coordinates or from geographic distance.
	SourceCoordinates = "coordinates"
	SourceDistance    = "distance"
	// SourceReported: the candidate says so of itself (its announcement).
	SourceReported = "reported"
	// SourceUnknown: nothing to go on; the input scores as neutral.
	SourceUnknown = "unknown"
)

// Sources names the source of each of a Candidate's inputs.
type Sources struct {
	RTT       string `json:"rtt"`
	TTFT      string `json:"ttft"`
	DecodeTPS string `json:"decode_tps"`
	Capacity  string `json:"capacity"`
	Load      string `json:"load"`
	Domains   string `json:"domains"`
	Distance  string `json:"distance"`
	Failures  string `json:"failures"`
}

// MaxCapacity caps the capacity a candidate can count for. What a peer
// announces is its own say-so; a free slot is worth the same share of the
// capacity reward whether 256 or 2^30 are claimed, but a cap keeps a claim
// from hiding any load: at 256 concurrent requests one machine is already
// a data centre. MaxLoad caps load alike (past twice the capacity the
// overload penalty no longer grows).
const (
	MaxCapacity = 256
	MaxLoad     = 2 * MaxCapacity
)

// Weights of a score's parts. Relevance, Speed and Capacity reward;
// Load, Distance and Failures penalize. Every part before weighting lies in
// [0, 1] (Load in [0, 2]), so the weights say directly how much each
// consideration can move a score.
type Weights struct {
	Relevance float64 `json:"relevance"`
	Speed     float64 `json:"speed"`
	Capacity  float64 `json:"capacity"`
	Load      float64 `json:"load"`
	Distance  float64 `json:"distance"`
	Failures  float64 `json:"failures"`
}

// DefaultWeights returns the weights mwpeer starts with.
//
// Relevance and Speed keep Microwave's proportion (0.35 to 0.45) and share
// all but a tie-breaker's part of the reward, so a perfect candidate scores
// 1. Time is counted once, in Speed, from the expected time to the first
// token in milliseconds (FirstToken: round trip plus server time), so
// that nothing unitless outweighs a large difference in it.
//   - Capacity 0.005: a tie-breaker between candidates of the same
//     expected time, in favour of headroom; all slots free against all in
//     use is worth about 15 ms of a 200 ms first token. At 0.20, as a
//     reward apart from time, a quarter of a candidate's slots in use
//     (0.05) outweighed a round trip three times as long (30 against 90
//     ms) in the latency-shaped world (internal/worldtest); at 0.02, half
//     of them in use (an announced load, seconds old) outweighed a round
//     trip 73 ms shorter for a first token as soon (Stockholm chose Seoul,
//     121 ms away, over Madrid, 48 ms away, by 0.001). Speed has the rest.
//   - Load 0.40: a candidate at or over its capacity loses 0.40 (up to 0.80
//     at twice its capacity): it would answer busy or queue the request
//     for a whole answer, which the expected time does not hold, so it
//     falls behind any candidate with a free slot that is otherwise
//     similar, yet stays in the ranking when it is all there is.
//   - Distance 0.05: only when the round trip is unknown (it measures, or
//     a coordinate predicts, what distance guesses from a location the peer
//     claims); a tie-breaker among the unknown.
//   - Failures 0.30: one recent failure costs 0.15, three 0.225.
func DefaultWeights() Weights {
	return Weights{Relevance: 0.43, Speed: 0.565, Capacity: 0.005, Load: 0.40, Distance: 0.05, Failures: 0.30}
}

// Parts are a score's contributions, already weighted; penalties are
// negative or zero. Score is their sum.
type Parts struct {
	Relevance float64 `json:"relevance"`
	Speed     float64 `json:"speed"`
	Capacity  float64 `json:"capacity"`
	Load      float64 `json:"load"`
	Distance  float64 `json:"distance"`
	Failures  float64 `json:"failures"`
}

// Scored is a candidate with its score and the parts that make it up.
type Scored struct {
	Candidate
	Score float64 `json:"score"`
	Parts Parts   `json:"parts"`
	// FirstToken is the expected time from asking the candidate to its
	// first token arriving here, that Speed scores (see FirstToken); JSON
	// first_token_ms.
	FirstToken time.Duration `json:"-"`
}

// Reference points. Each turns a measurement x into a score with a smooth
// curve, ref/(ref+x) or x/(x+ref), that is 0.5 at the reference.
const (
	refRTT  = 100 * time.Millisecond
	refTTFT = 500 * time.Millisecond
	refTPS  = 5.0    // decode tokens/s: reading pace (see Speed)
	refKm   = 2000.0 // distance
	// neutral is the score of something unknown.
	neutral = 0.5
	// generalMatch is the relevance of a general (or undeclared) peer to a
	// specialist domain, and specialistGeneral that of a specialist peer to
	// the general domain: every model can chat, few can prove theorems.
	generalMatch      = 0.3
	specialistGeneral = 0.5
	// minSamples is how many candidates must be measured before their
	// median stands in for the unmeasured ones (see Priors): a median of
	// one or two is a peer's luck, not the swarm's.
	minSamples = 3
)

// Priors are what a candidate is taken to have where nothing was measured:
// how long a server takes from a request's arrival to its first token, its
// decode rate, and the round trip to a peer with neither a measurement nor
// a prediction.
//
// Rank takes them from the candidates it ranks (see PriorsOf): an
// unmeasured peer counts as the median measured one, so it is tried when
// the known peers are worse than typical and not when they are better, and
// what tells unmeasured peers apart is what is known of them, the
// predicted round trip. A fixed reference would instead be optimistic in a
// slow swarm (every unknown peer is tried before a known good one) and
// pessimistic in a fast one (a near unknown peer is never tried).
type Priors struct {
	ServerTTFT time.Duration
	DecodeTPS  float64
	RTT        time.Duration
}

// DefaultPriors are the references: a first token refTTFT after the
// request arrived, refTPS tokens/s, a round trip of refRTT.
func DefaultPriors() Priors {
	return Priors{ServerTTFT: refTTFT, DecodeTPS: refTPS, RTT: refRTT}
}

// PriorsOf takes priors from cands: each is the median over the remote
// candidates that have the input measured (the server's part of a measured
// time to first token is that time less the candidate's round trip; a
// reported decode rate does not count), or the reference when fewer than
// three have it.
func PriorsOf(cands []Candidate) Priors {
	p := DefaultPriors()
	var ttft []time.Duration
	var tps []float64
	var rtts []time.Duration
	for _, c := range cands {
		if c.Local {
			continue
		}
		if c.RTTKnown && c.RTT >= 0 {
			rtts = append(rtts, c.RTT)
		}
		if c.TTFT > 0 {
			server := c.TTFT
			if c.RTTKnown {
				server = max(c.TTFT-max(c.RTT, 0), 0)
			}
			ttft = append(ttft, server)
		}
		if c.DecodeTPS > 0 && !math.IsInf(c.DecodeTPS, 0) && c.Sources.DecodeTPS != SourceReported {
			tps = append(tps, c.DecodeTPS)
		}
	}
	if len(ttft) >= minSamples {
		p.ServerTTFT = median(ttft)
	}
	if len(tps) >= minSamples {
		p.DecodeTPS = median(tps)
	}
	if len(rtts) >= minSamples {
		p.RTT = median(rtts)
	}
	return p
}

// median is the lower median of xs, which it sorts.
func median[T cmp.Ordered](xs []T) T {
	slices.Sort(xs)
	return xs[(len(xs)-1)/2]
}

// Relevance is how well c's declared domains cover the classified ones, in
// [0, 1]: the score-weighted mean over the classified domains of
//
//	1    when c declares the domain (or it is general and c declares nothing),
//	0.3  when it does not but is a general peer (declares general, or nothing),
//	0.5  for the general domain when c declares only specialist domains,
//	0    otherwise.
//
// With no classified domains it is neutral (0.5).
func Relevance(c Candidate, domains []DomainScore) float64 {
	general := len(c.Domains) == 0 || declares(c, General)
	var sum, total float64
	for _, d := range domains {
		if d.Score <= 0 {
			continue
		}
		total += d.Score
		isGeneral := strings.EqualFold(d.Domain, General)
		switch {
		case declares(c, d.Domain), isGeneral && general:
			sum += d.Score
		case isGeneral:
			sum += specialistGeneral * d.Score
		case general:
			sum += generalMatch * d.Score
		}
	}
	if total == 0 {
		return neutral
	}
	return sum / total
}

func declares(c Candidate, domain string) bool {
	for _, x := range c.Domains {
		if strings.EqualFold(x, domain) {
			return true
		}
	}
	return false
}

// Speed is how fast c should answer, in [0, 1]:
//
//	speed  = 3/4 first + 1/4 decode
//	first  = ref / (ref + FirstToken + RTTExtra·rtt)   how soon the first token arrives
//	decode = DecodeTPS² / (DecodeTPS² + refTPS²)       whether the rest keeps up with a reader
//
// with ref = (1+RTTExtra)·refRTT + refTTFT (so a candidate at the
// references scores 0.5), refRTT 100 ms, refTTFT 500 ms and refTPS 5
// tokens/s.
//
// The round trip counts once more at RTTExtra (0.5) beyond its part of the
// first token, so that of two candidates whose first tokens are about as
// soon the nearer wins: it wins unless the farther one's first token is
// sooner by more than half the difference of their round trips (Stockholm
// in the latency-shaped world: Madrid, 40 ms away and 148 ms to serve,
// over Seoul, 121 ms away and 69 ms to serve, whose first tokens tie
// within 1%). The round trip is what this peer measured itself, a few
// samples' minimum, where the server's time is one figure over a few calls
// or its own report, and varies with its load and the prompt's length; and
// every later token of the answer, a retry after a failure and the next
// turn of a conversation pay the round trip again. A rule "within a margin,
// the lower RTT" would not be a score (it is not transitive, and three
// candidates could rank in a circle); this is its proportional form. It
// costs little in time to a first token: a nearer candidate is chosen over
// one whose first token is sooner only by less than half its extra round
// trip.
//
// What a user waits for, with a short prompt sent to one expert (K=1), is
// the first token: answers stream, and from the first token on the user
// reads. A decoder faster than the reader (about 4 words, 5 tokens, a
// second) only finishes text the user has not reached yet; a slower one
// keeps the user waiting on every token. So the decode part is a step
// about reading pace, refTPS 5 tokens/s, smoothed (squared, so that it
// levels off above the pace rather than creeping up for ever), and weighs
// a quarter: it tells 2 from 8 tokens/s apart (0.14 against 0.72), and
// 30 from 60 hardly at all (0.973 against 0.993, about 8 ms of first
// token). Referenced at 10 tokens/s and not squared, it made the
// latency-shaped world's routers pass nearer servers whose first tokens
// came as soon for farther ones that decoded 40 or 60 rather than 30
// tokens a second (Vienna chose Seoul, 117 ms away, over Madrid, 31 ms
// away; internal/worldtest), which no reader could tell.
//
// An unknown RTT, server TTFT or decode rate counts as its prior (see
// Priors; Speed uses DefaultPriors, so a candidate nobody has measured
// scores 0.5). A decode rate measured over fewer than three calls counts as
// at least the ReportedTPS, for the reasons FirstToken gives.
func Speed(c Candidate) float64 { return speed(c, DefaultPriors()) }

func speed(c Candidate, p Priors) float64 {
	return speedOf(c, p, FirstToken(c, p))
}

// RTTExtra is how much a candidate's round trip counts in Speed beyond its
// part of the time to the first token (see Speed).
const RTTExtra = 0.5

func speedOf(c Candidate, p Priors, first time.Duration) float64 {
	tps := p.DecodeTPS
	if c.DecodeTPS > 0 && !math.IsInf(c.DecodeTPS, 0) {
		tps = c.DecodeTPS
	}
	if c.Calls > 0 && c.Calls < minSamples && c.ReportedTPS > tps && !math.IsInf(c.ReportedTPS, 0) {
		tps = c.ReportedTPS // as with the first token (FirstToken): not yet established
	}
	ref := (1+RTTExtra)*refRTT.Seconds() + refTTFT.Seconds()
	cost := first.Seconds() + RTTExtra*roundTrip(c, p).Seconds()
	return 0.75*ref/(ref+cost) + 0.25*tps*tps/(tps*tps+refTPS*refTPS)
}

// roundTrip is the round trip FirstToken counts: 0 for the local peer, the
// measured or predicted RTT, else the priors'.
func roundTrip(c Candidate, p Priors) time.Duration {
	switch {
	case c.Local:
		return 0
	case c.RTTKnown:
		return max(c.RTT, 0)
	}
	return p.RTT
}

// FirstToken is how long after asking c its first token should arrive
// here, the round trip plus the server's time to a first token:
//
//   - the round trip is the measured or predicted RTT (the priors' when
//     unknown, 0 for the local peer);
//   - the server's time is the measured TTFT less the round trip, when
//     this peer measured one (it timed the request to the token's arrival,
//     so the round trip is in it once; a measurement below the round trip,
//     a stale one, counts as 0); else the ReportedTTFT, when the peer
//     reports one; else the priors' server TTFT.
//   - a measurement of fewer than minSamples calls counts as at most what
//     the peer reports of itself, or the priors' server TTFT (the swarm's
//     median) when it reports nothing: one slow call may be bad luck (a
//     first call's connection, a prompt queued behind others that arrived
//     at once, a loaded machine's late timers), and a peer passed over for
//     it would never be measured again. So it ranks as it did before it
//     was tried until it has three calls, and is judged by its own
//     measurements from then on; a peer that overstates its speed gets at
//     most three calls from each peer. A fast first call counts as
//     measured.
//
// Load below capacity adds nothing: capacity is how many requests the peer
// runs at once, each in its own slot, and an announced load is seconds old.
// It breaks ties instead (the Capacity part). A peer at its capacity would
// queue a request for a whole answer or refuse it, which no time to a first
// token holds: the Load part ranks it behind every free peer.
func FirstToken(c Candidate, p Priors) time.Duration {
	rtt := roundTrip(c, p)
	server := p.ServerTTFT
	switch {
	case c.TTFT > 0:
		server = max(c.TTFT-rtt, 0)
		if c.Calls > 0 && c.Calls < minSamples {
			ceiling := p.ServerTTFT
			if c.ReportedTTFT > 0 {
				ceiling = c.ReportedTTFT
			}
			server = min(server, ceiling)
		}
	case c.ReportedTTFT > 0:
		server = c.ReportedTTFT
	}
	return rtt + server
}

// Score scores one candidate against the classified domains:
//
//	score = Relevance·relevance + Speed·speed + Capacity·free
//	        - Load·overload - Distance·far - Failures·failing
//
// where relevance and speed are as in Relevance and Speed, and
//
//	free     = (capacity - load) / capacity, clamped to [0, 1], with
//	           capacity in [1, MaxCapacity] and load in [0, MaxLoad]
//	overload = 0 below capacity, else 1 + (load - capacity)/capacity, at most 2
//	far      = km / (km + 2000); 0.5 when unknown; 0 for the local peer and
//	           when the RTT is known (measured or predicted: it says what
//	           distance guesses, and a location is the peer's claim)
//	failing  = failures / (failures + 1)
//
// Parts hold each weighted term, rounded to 1e-4; Score is their sum. The
// zero Weights means DefaultWeights. Unmeasured inputs count as
// DefaultPriors; Rank uses the priors of the candidates it ranks.
func Score(c Candidate, domains []DomainScore, w Weights) Scored {
	return scoreWith(c, domains, w, DefaultPriors())
}

func scoreWith(c Candidate, domains []DomainScore, w Weights, pr Priors) Scored {
	if w == (Weights{}) {
		w = DefaultWeights()
	}
	capacity := float64(min(max(c.Capacity, 1), MaxCapacity))
	load := float64(min(max(c.Load, 0), MaxLoad))
	free := min(max((capacity-load)/capacity, 0), 1)
	overload := 0.0
	if load >= capacity {
		overload = min(1+(load-capacity)/capacity, 2)
	}
	far := neutral
	switch {
	case c.Local, c.RTTKnown:
		far = 0
	case c.DistanceKm >= 0 && !math.IsInf(c.DistanceKm, 0):
		far = c.DistanceKm / (c.DistanceKm + refKm)
	}
	failures := float64(max(c.Failures, 0))
	first := FirstToken(c, pr)
	p := Parts{
		Relevance: round4(w.Relevance * Relevance(c, domains)),
		Speed:     round4(w.Speed * speedOf(c, pr, first)),
		Capacity:  round4(w.Capacity * free),
		Load:      round4(-w.Load * overload),
		Distance:  round4(-w.Distance * far),
		Failures:  round4(-w.Failures * failures / (failures + 1)),
	}
	return Scored{
		Candidate:  c,
		Score:      round4(p.Relevance + p.Speed + p.Capacity + p.Load + p.Distance + p.Failures),
		Parts:      p,
		FirstToken: first,
	}
}

// round4 rounds to 1e-4 and turns -0 into 0, so that parts print cleanly
// and float noise cannot reorder equal candidates.
func round4(x float64) float64 {
	if x = math.Round(x*1e4) / 1e4; x == 0 {
		return 0
	}
	return x
}

// Rank scores every candidate (see Score), with what is not measured
// taken from the others (PriorsOf), and sorts them best first. Equal
// scores are ordered by peer ID, then model, so the order never depends on
// the input's. The zero Weights means DefaultWeights.
func Rank(cands []Candidate, domains []DomainScore, w Weights) []Scored {
	scored := make([]Scored, len(cands))
	order := make([]int, len(cands))
	pr := PriorsOf(cands)
	for i, c := range cands {
		scored[i] = scoreWith(c, domains, w, pr)
		order[i] = i
	}
	// Sort indexes, not the large Scored values; the input index last makes
	// the order total, so the unstable sort is deterministic.
	slices.SortFunc(order, func(i, j int) int {
		a, b := &scored[i], &scored[j]
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		if c := strings.Compare(a.Peer, b.Peer); c != 0 {
			return c
		}
		if c := strings.Compare(a.Model, b.Model); c != 0 {
			return c
		}
		return cmp.Compare(i, j)
	})
	out := make([]Scored, len(cands))
	for k, i := range order {
		out[k] = scored[i]
	}
	return out
}
