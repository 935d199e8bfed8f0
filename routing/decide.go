package routing

import (
	"strings"
	"unicode/utf8"
)

// Thresholds of ChooseK.
const (
	// DefaultMaxK caps K when the caller's maxK is below 1.
	DefaultMaxK = 3
	// LongPrompt is the length, in characters, beyond which a prompt is long.
	LongPrompt = 400
	// ManySentences is the number of sentences that makes a prompt long
	// however short they are.
	ManySentences = 4
	// SecondDomain is the score a domain other than general needs to count
	// towards a multi-domain prompt.
	SecondDomain = 0.5
)

// ChooseK says how many experts to ask in parallel:
//
//	1  a short prompt in at most one domain;
//	2  a long prompt (more than LongPrompt characters or at least
//	   ManySentences sentences), or one in two or more domains (other than
//	   general) scoring SecondDomain or more;
//	3  a prompt both long and multi-domain.
//
// requested, when above 0, replaces that choice. Either way the result is
// capped by maxK (DefaultMaxK when maxK < 1) and is at least 1. Capping by
// the number of candidates is the caller's (Decide does it).
func ChooseK(prompt string, domains []DomainScore, maxK, requested int) int {
	if maxK < 1 {
		maxK = DefaultMaxK
	}
	if requested > 0 {
		return min(requested, maxK)
	}
	long := utf8.RuneCountInString(prompt) > LongPrompt || sentences(prompt) >= ManySentences
	n := 0
	for _, d := range domains {
		if d.Score >= SecondDomain && !strings.EqualFold(d.Domain, General) {
			n++
		}
	}
	multi := n >= 2
	k := 1
	switch {
	case long && multi:
		k = 3
	case long || multi:
		k = 2
	}
	return min(k, maxK)
}

// sentences counts sentence ends: runs of . ? ! followed by whitespace or
// the end of the text, after a letter, digit or closing bracket or quote.
func sentences(p string) int {
	n := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '.' && c != '?' && c != '!' {
			continue
		}
		if i == 0 || !endsWord(p[i-1]) {
			continue
		}
		j := i
		for j < len(p) && (p[j] == '.' || p[j] == '?' || p[j] == '!') {
			j++
		}
		if j == len(p) || isSpaceByte(p[j]) {
			n++
		}
		i = j - 1
	}
	return n
}

func endsWord(c byte) bool {
	return isWordByte(c) || c == ')' || c == '"' || c == '\'' || c >= 0x80
}

// Decision is a routing answer, as POST /api/route returns it: the
// prompt's domains, K, every candidate scored (best first), and the K
// chosen.
type Decision struct {
	Domains    []DomainScore `json:"domains"`
	K          int           `json:"k"`
	Candidates []Scored      `json:"candidates"`
	Chosen     []Scored      `json:"chosen"`
}

// Decide routes one prompt. The domains are forcedDomains, each scored 1,
// when any is given, else Classify(prompt). It ranks cands (Rank), chooses
// K (ChooseK), caps K by the number of distinct peers, and takes the K best
// candidates on distinct peers (asking one peer twice buys nothing) and, where
// the candidates allow it, in distinct networks (see Diverse). The zero
// Weights means DefaultWeights. Slices in the Decision are never nil.
func Decide(prompt string, cands []Candidate, w Weights, maxK, requestedK int, forcedDomains []string) Decision {
	domains := forced(forcedDomains)
	if len(domains) == 0 {
		domains = Classify(prompt)
	}
	d := Decision{Domains: domains, Candidates: Rank(cands, domains, w)}
	peers := map[string]bool{}
	for _, c := range cands {
		peers[c.Peer] = true
	}
	d.K = min(ChooseK(prompt, domains, maxK, requestedK), len(peers))
	d.Chosen = Diverse(d.Candidates, d.K)
	return d
}

// Diverse takes k of ranked (best first) on distinct peers, spread over
// network prefixes: first the best candidate of each prefix not yet taken,
// in rank order; then, if fewer than k were found, the best of the rest.
// Several peers in one /24 may be one operator, and K answers from one
// operator are one answer asked K times: a Sybil with many identities on
// one network must not take every slot. When every candidate shares a
// prefix (a LAN, or a test swarm on loopback), the rule gives way and the
// choice is by rank alone. An unknown prefix ("") counts as one prefix of
// its own; the local peer counts in none. The result is in rank order and
// never nil.
func Diverse(ranked []Scored, k int) []Scored {
	pick := make([]bool, len(ranked))
	peers := make(map[string]bool, k)
	nets := make(map[string]bool, k)
	n := 0
	for pass := 0; pass < 2 && n < k; pass++ {
		for i, s := range ranked {
			if n == k {
				break
			}
			if pick[i] || peers[s.Peer] || (pass == 0 && !s.Local && nets[s.Prefix]) {
				continue
			}
			pick[i], peers[s.Peer] = true, true
			if !s.Local {
				nets[s.Prefix] = true
			}
			n++
		}
	}
	out := make([]Scored, 0, n)
	for i, s := range ranked {
		if pick[i] {
			out = append(out, s)
		}
	}
	return out
}

// forced turns domain names into scores of 1: trimmed, lowercased, empty
// names and repeats dropped, in the order given.
func forced(names []string) []DomainScore {
	var out []DomainScore
	seen := map[string]bool{}
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, DomainScore{Domain: n, Score: 1})
	}
	return out
}
