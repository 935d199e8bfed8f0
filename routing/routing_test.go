package routing

import (
	"fmt"
	"testing"
	"time"
)

func top(ds []DomainScore) string {
	if len(ds) == 0 {
		return ""
	}
	return ds[0].Domain
}

func has(ds []DomainScore, d string, atLeast float64) bool {
	for _, x := range ds {
		if x.Domain == d && x.Score >= atLeast {
			return true
		}
	}
	return false
}

func TestClassify(t *testing.T) {
	cases := []struct {
		prompt string
		want   string // top domain
	}{
		{"Write a poem about the sea", "creative"},
		{"Summarize this article for me", "general"}, // "sum" is not inside "summarize"
		{"What is the last digit of my phone number?", "math"},
		{"Why is the sky blue? Explain step by step.", "reasoning"},
		{"Fix this Python function that throws a KeyError", "code"},
		{"```go\nfunc main() {}\n```\nwhy does this not print", "code"},
		{"Solve for x: 2x + 3 = 7", "math"},
		{"What is 12*7?", "math"},
		{"Compute the integral of x^2 from 0 to 1", "math"},
		{"How does photosynthesis work in plant cells?", "science"},
		{"Explain quantum entanglement", "science"},
		{"Tell me about the weather today", "general"},
		{"hello", "general"},
		{"", "general"},
		{"My therapist says I overthink", "general"}, // "the", "rapist", nothing math
		{"Refactor main.go to use goroutines", "code"},
		{"Write a haiku about autumn leaves", "creative"},
		{"Prove that there are infinitely many prime numbers", "math"},
		{"What is the time complexity of quicksort?", "code"},
		{"Compose a limerick about a cat", "creative"},
		{"I get a segfault when I run my C++ program", "code"},
		{"Riddle: what has keys but can't open locks?", "reasoning"},
		{"Describe the DNA replication process", "science"},
		{"Should I learn Rust or Go? Pros and cons please", "reasoning"},
		{"Translate 'good morning' into French", "general"},
		{"The kubernetes pod keeps crashing with exit code 137", "code"},
		{"Is the mean of 2, 4 and 9 bigger than the median?", "math"},
	}
	for _, c := range cases {
		t.Run(c.prompt, func(t *testing.T) {
			got := Classify(c.prompt)
			if top(got) != c.want {
				t.Fatalf("Classify(%q) = %v, want %s first", c.prompt, got, c.want)
			}
			for i := 1; i < len(got); i++ {
				if got[i].Score > got[i-1].Score {
					t.Fatalf("not sorted: %v", got)
				}
			}
		})
	}
}

func TestClassifyWordsNotSubstrings(t *testing.T) {
	for _, p := range []string{"summarize", "summary", "digital", "gitter", "therapist", "timestamps", "cellar"} {
		got := Classify(p)
		if top(got) != "general" {
			t.Errorf("%q classified as %v: a word matched inside another word", p, got)
		}
	}
}

func TestClassifyMultiLabel(t *testing.T) {
	got := Classify("Write a Python function to compute the integral of a polynomial")
	if !has(got, "code", 0.5) || !has(got, "math", 0.5) {
		t.Fatalf("want code and math both >= 0.5, got %v", got)
	}
}

func cand(peer string, domains ...string) Candidate {
	return Candidate{Peer: peer, Model: "m", Domains: domains, Capacity: 2, DistanceKm: -1}
}

func TestRank(t *testing.T) {
	code := Classify("fix this golang bug")
	w := DefaultWeights()
	cases := []struct {
		name string
		a, b Candidate // a must outrank b
	}{
		{"domain match beats no match", cand("a", "code"), cand("b", "creative")},
		{"closer wins", func() Candidate { c := cand("b", "code"); c.RTT, c.RTTKnown = 5*time.Millisecond, true; return c }(),
			func() Candidate { c := cand("a", "code"); c.RTT, c.RTTKnown = 200*time.Millisecond, true; return c }()},
		{"faster decode wins", func() Candidate { c := cand("z", "code"); c.DecodeTPS = 80; return c }(),
			func() Candidate { c := cand("a", "code"); c.DecodeTPS = 5; return c }()},
		{"less loaded wins", cand("z", "code"), func() Candidate { c := cand("a", "code"); c.Load = 2; return c }()},
		{"unknown RTT is neutral, not best", func() Candidate { c := cand("z", "code"); c.RTT, c.RTTKnown = 10*time.Millisecond, true; return c }(), cand("a", "code")},
		{"unknown RTT beats a slow one", cand("z", "code"), func() Candidate { c := cand("a", "code"); c.RTT, c.RTTKnown = time.Second, true; return c }()},
		{"failures fall behind", cand("z", "code"), func() Candidate { c := cand("a", "code"); c.Failures = 1; return c }()},
		{"general gets some relevance", cand("z", "general"), cand("a", "creative")},
		{"nearer wins", func() Candidate { c := cand("z", "code"); c.DistanceKm = 100; return c }(),
			func() Candidate { c := cand("a", "code"); c.DistanceKm = 9000; return c }()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Rank([]Candidate{c.b, c.a}, code, w)
			if r[0].Peer != c.a.Peer {
				t.Fatalf("got order %s (%.3f %+v), %s (%.3f %+v)", r[0].Peer, r[0].Score, r[0].Parts, r[1].Peer, r[1].Score, r[1].Parts)
			}
		})
	}
	// An overloaded candidate falls behind but is still ranked (it may be all there is).
	over := cand("a", "code")
	over.Load = 5
	r := Rank([]Candidate{over}, code, w)
	if len(r) != 1 || r[0].Parts.Load >= 0 {
		t.Fatalf("overloaded candidate: %+v", r)
	}
}

func TestChooseK(t *testing.T) {
	long := ""
	for i := 0; i < 50; i++ {
		long += "please help. "
	}
	cases := []struct {
		name            string
		prompt          string
		maxK, requested int
		want            int
	}{
		{"short simple", "hello there", 3, 0, 1},
		{"long", long, 3, 0, 2},
		{"multi-domain", "Write a Python function to compute the integral of a polynomial", 3, 0, 2},
		{"long and multi-domain", long + " Write a Python function to compute the integral of a polynomial", 3, 0, 3},
		{"capped by config", long + " Write a Python function to compute the integral of a polynomial", 2, 0, 2},
		{"requested", "hi", 3, 2, 2},
		{"requested capped", "hi", 3, 7, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ChooseK(c.prompt, Classify(c.prompt), c.maxK, c.requested); got != c.want {
				t.Fatalf("ChooseK = %d, want %d (domains %v)", got, c.want, Classify(c.prompt))
			}
		})
	}
}

func TestDecide(t *testing.T) {
	cands := []Candidate{cand("p1", "code"), cand("p2", "math"), cand("p3", "creative"), cand("p1", "code")}
	d := Decide("fix my golang build", cands, DefaultWeights(), 3, 2, nil)
	if d.K != 2 || len(d.Chosen) != 2 || len(d.Candidates) != 4 {
		t.Fatalf("decision %+v", d)
	}
	if d.Chosen[0].Peer != "p1" || d.Chosen[1].Peer == "p1" {
		t.Fatalf("chosen %s, %s: want p1 once, first", d.Chosen[0].Peer, d.Chosen[1].Peer)
	}
	forced := Decide("fix my golang build", cands, DefaultWeights(), 3, 1, []string{"creative"})
	if forced.Chosen[0].Peer != "p3" || forced.Domains[0].Domain != "creative" {
		t.Fatalf("forced domains ignored: %+v", forced.Chosen)
	}
	empty := Decide("hi", nil, DefaultWeights(), 3, 0, nil)
	if empty.Chosen == nil || len(empty.Chosen) != 0 {
		t.Fatalf("no candidates: %+v", empty)
	}
}

func BenchmarkClassify(b *testing.B) {
	p := "Write a Python function that computes the integral of a polynomial, and explain step by step why it works."
	for i := 0; i < b.N; i++ {
		Classify(p)
	}
}

func BenchmarkRank(b *testing.B) {
	var cands []Candidate
	for i := 0; i < 100; i++ {
		c := cand(fmt.Sprintf("peer%03d", i), Domains[i%len(Domains)])
		c.RTT, c.RTTKnown = time.Duration(i)*time.Millisecond, i%3 != 0
		c.Load = i % 3
		cands = append(cands, c)
	}
	ds := Classify("fix this golang bug")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Rank(cands, ds, DefaultWeights())
	}
}
