package routing

import (
	"sort"
	"strings"
	"time"
)

// Candidate is one expert that could answer: a peer serving a model.
type Candidate struct {
	Peer       string        `json:"peer"`
	Local      bool          `json:"local"`
	Model      string        `json:"model"`
	Domains    []string      `json:"domains"`
	RTT        time.Duration `json:"-"`
	RTTKnown   bool          `json:"rtt_known"`
	TTFT       time.Duration `json:"-"` // measured time to first token; 0 if never measured
	DecodeTPS  float64       `json:"decode_tps"`
	Capacity   int           `json:"capacity"`
	Load       int           `json:"load"`
	DistanceKm float64       `json:"distance_km"` // < 0 when unknown
	Failures   int           `json:"failures"`    // recent failures, decaying
}

// Weights of the score's parts. Relevance, Speed and Capacity add;
// Load, Distance and Failure subtract.
type Weights struct {
	Relevance float64 `json:"relevance"`
	Speed     float64 `json:"speed"`
	Capacity  float64 `json:"capacity"`
	Load      float64 `json:"load"`
	Distance  float64 `json:"distance"`
	Failure   float64 `json:"failure"`
}

// DefaultWeights starts from Microwave's 0.35 relevance / 0.45 speed /
// 0.20 capacity and adds penalties: 0.30 for a candidate at or over its
// capacity (scaled by how full it is beyond half), 0.05 for distance, 0.25
// per recent failure (capped at two).
func DefaultWeights() Weights {
	return Weights{Relevance: 0.35, Speed: 0.45, Capacity: 0.20, Load: 0.30, Distance: 0.05, Failure: 0.25}
}

// Parts are a score's contributions, already weighted (penalties negative).
type Parts struct {
	Relevance float64 `json:"relevance"`
	Speed     float64 `json:"speed"`
	Capacity  float64 `json:"capacity"`
	Load      float64 `json:"load"`
	Distance  float64 `json:"distance"`
	Failure   float64 `json:"failure"`
}

// Scored is a candidate with its score.
type Scored struct {
	Candidate
	RTTMs  float64 `json:"rtt_ms"`
	TTFTMs float64 `json:"ttft_ms"`
	Score  float64 `json:"score"`
	Parts  Parts   `json:"parts"`
}

// Reference points of the speed score: each term is ref/(ref+x), so a value
// equal to the reference scores 0.5 and zero scores 1.
const (
	rttRef  = 50 * time.Millisecond
	ttftRef = 500 * time.Millisecond
	tpsRef  = 20.0 // tokens/s scoring 0.5
	// neutral is the score of an unknown quantity: middling, never the best.
	neutral = 0.5
	// distanceRef: a candidate this far away loses half the distance weight.
	distanceRef = 5000.0
)

// relevance is the classified weight of the domains the candidate declares,
// relative to the best-scored domain; "general" peers get a floor of 0.3
// of the general score for anything.
func relevance(c Candidate, domains []DomainScore) float64 {
	if len(domains) == 0 {
		return neutral
	}
	top := domains[0].Score
	if top <= 0 {
		return neutral
	}
	best := 0.0
	for _, d := range domains {
		for _, cd := range c.Domains {
			if strings.EqualFold(cd, d.Domain) {
				best = max(best, d.Score/top)
			}
		}
	}
	for _, cd := range c.Domains {
		if cd == "general" {
			best = max(best, 0.3)
		}
	}
	return best
}

// speed combines predicted network RTT, measured time to first token and
// measured decode speed, each in [0,1], unknowns neutral; the mean of three.
func speed(c Candidate) float64 {
	rtt := neutral
	if c.RTTKnown || c.Local {
		rtt = float64(rttRef) / float64(rttRef+c.RTT)
	}
	ttft := neutral
	if c.TTFT > 0 {
		ttft = float64(ttftRef) / float64(ttftRef+c.TTFT)
	}
	tps := neutral
	if c.DecodeTPS > 0 {
		tps = c.DecodeTPS / (c.DecodeTPS + tpsRef)
	}
	return (rtt + ttft + tps) / 3
}

// Score computes one candidate's score against the classified domains.
func Score(c Candidate, domains []DomainScore, w Weights) Scored {
	capacity := max(c.Capacity, 1)
	free := float64(capacity-c.Load) / float64(capacity)
	free = min(max(free, 0), 1)
	fill := float64(c.Load) / float64(capacity)
	var p Parts
	p.Relevance = w.Relevance * relevance(c, domains)
	p.Speed = w.Speed * speed(c)
	p.Capacity = w.Capacity * free
	if fill > 0.5 { // busy peers fall behind smoothly; full ones far behind
		p.Load = -w.Load * min((fill-0.5)*2, 2)
	}
	if c.DistanceKm > 0 {
		p.Distance = -w.Distance * c.DistanceKm / (c.DistanceKm + distanceRef)
	}
	if c.Failures > 0 {
		p.Failure = -w.Failure * float64(min(c.Failures, 2))
	}
	s := Scored{Candidate: c, Parts: p}
	s.Score = round3(p.Relevance + p.Speed + p.Capacity + p.Load + p.Distance + p.Failure)
	if c.RTTKnown || c.Local {
		s.RTTMs = float64(c.RTT.Microseconds()) / 1000
	}
	s.TTFTMs = float64(c.TTFT.Microseconds()) / 1000
	return s
}

// Rank scores every candidate and sorts them best first; ties go to the
// local peer, then by peer ID, so the order is deterministic.
func Rank(cands []Candidate, domains []DomainScore, w Weights) []Scored {
	out := make([]Scored, len(cands))
	for i, c := range cands {
		out[i] = Score(c, domains, w)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Score != out[j].Score {
			return out[i].Score > out[j].Score
		}
		if out[i].Local != out[j].Local {
			return out[i].Local
		}
		return out[i].Peer < out[j].Peer
	})
	return out
}

// Thresholds of ChooseK.
const (
	longPrompt     = 400 // characters
	manySentences  = 4
	secondDomainAt = 0.5 // a second domain scoring this much makes a prompt multi-domain
)

// ChooseK says how many experts to ask in parallel: 1 for a short prompt
// in one domain; 2 for a long one (over 400 characters or 4 sentences) or a
// multi-domain one (a second domain scoring 0.5 or more); 3 for one that is
// both. requested (> 0) overrides; maxK caps either.
func ChooseK(prompt string, domains []DomainScore, maxK, requested int) int {
	if maxK < 1 {
		maxK = 1
	}
	if requested > 0 {
		return min(requested, maxK)
	}
	long := len(prompt) > longPrompt || sentences(prompt) >= manySentences
	multi := false
	n := 0
	for _, d := range domains {
		if d.Domain != "general" && d.Score >= secondDomainAt {
			n++
		}
	}
	multi = n >= 2
	k := 1
	switch {
	case long && multi:
		k = 3
	case long || multi:
		k = 2
	}
	return min(k, maxK)
}

func sentences(p string) int {
	n := 0
	for i, r := range p {
		if (r == '.' || r == '?' || r == '!') && (i+1 == len(p) || p[i+1] == ' ' || p[i+1] == '\n') {
			n++
		}
	}
	return n
}

// Decision is a routing answer: the prompt's domains, K, every candidate
// scored (best first) and the K chosen.
type Decision struct {
	Domains    []DomainScore `json:"domains"`
	K          int           `json:"k"`
	Candidates []Scored      `json:"candidates"`
	Chosen     []Scored      `json:"chosen"`
}

// Decide classifies the prompt (or takes forcedDomains, each scored 1),
// ranks the candidates and chooses K of them. A peer appears at most once
// among the chosen: asking one peer twice buys nothing.
func Decide(prompt string, cands []Candidate, w Weights, maxK, requestedK int, forcedDomains []string) Decision {
	var domains []DomainScore
	if len(forcedDomains) > 0 {
		for _, d := range forcedDomains {
			domains = append(domains, DomainScore{Domain: d, Score: 1})
		}
	} else {
		domains = Classify(prompt)
	}
	d := Decision{Domains: domains, Candidates: Rank(cands, domains, w)}
	d.K = ChooseK(prompt, domains, maxK, requestedK)
	seen := map[string]bool{}
	for _, s := range d.Candidates {
		if len(d.Chosen) == d.K {
			break
		}
		if seen[s.Peer] {
			continue
		}
		seen[s.Peer] = true
		d.Chosen = append(d.Chosen, s)
	}
	if d.Chosen == nil {
		d.Chosen = []Scored{}
	}
	if d.Candidates == nil {
		d.Candidates = []Scored{}
	}
	return d
}
