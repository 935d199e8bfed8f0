package routing

import (
	"strings"
	"sync"
	"testing"
)

func score(ds []DomainScore, domain string) float64 {
	for _, d := range ds {
		if d.Domain == domain {
			return d.Score
		}
	}
	return 0
}

func TestClassify(t *testing.T) {
	cases := []struct {
		prompt string
		top    string   // the best domain
		also   []string // other domains that must score at least 0.4
		not    []string // domains that must not appear at all
	}{
		// Words, never substrings.
		{prompt: "Summarize this article for me", top: General, not: []string{Math}},
		{prompt: "Please give me a summary of the meeting", top: General, not: []string{Math}},
		{prompt: "What is the last digit of my phone number?", top: General, not: []string{Code}},
		{prompt: "digital gitter", top: General, not: []string{Code, Math}},
		{prompt: "My therapist says I overthink", top: General, not: []string{Math, Science}},
		{prompt: "We stored it in the cellar with the timestamps", top: General, not: []string{Science, Code}},
		{prompt: "hello", top: General},
		{prompt: "", top: General},
		{prompt: "Tell me about the weather today", top: General},
		{prompt: "Translate 'good morning' into French", top: General},
		{prompt: "The meeting is on 2024-01-02 at 10:30, call 555-1234", top: General, not: []string{Math}},
		{prompt: "see the file(s) attached", top: General, not: []string{Code}},
		{prompt: "I want to go. Go away", top: General, not: []string{Code}},
		{prompt: "I went to example.com and google.co.uk", top: General, not: []string{Code}},

		// Code.
		{prompt: "Fix this Python function that throws a KeyError", top: Code},
		{prompt: "```go\nfunc main() {}\n```\nwhy does this not print", top: Code},
		{prompt: "Refactor main.go to use goroutines", top: Code},
		{prompt: "what does foo() return", top: Code},
		{prompt: "I get a segfault when I run my C++ program", top: Code},
		{prompt: "Here is the stack trace from my server", top: Code},
		{prompt: "What is the time complexity of quicksort?", top: Code, not: []string{Math}},
		{prompt: "The kubernetes pod keeps crashing with exit code 137", top: Code},
		{prompt: "if (a == b && c != d) { return x; }", top: Code},
		{prompt: "Why does parse_config return nil when the path is empty?", top: Code},
		{prompt: "Is it idiomatic to write a web server in Go?", top: Code},
		{prompt: "```\nsum := total / count\nmatrix[i] = 2 * x\n```", top: Code, not: []string{Math}},

		// Math.
		{prompt: "Solve for x: 2x + 3 = 7", top: Math},
		{prompt: "2x + 3 = 7", top: Math},
		{prompt: "What is 12*7?", top: Math},
		{prompt: "Compute the integral of x^2 from 0 to 1", top: Math},
		{prompt: "Find the derivative of sin(x) cos(x)", top: Math},
		{prompt: "Prove that there are infinitely many prime numbers", top: Math},
		{prompt: "Is the median of 2, 4 and 9 bigger than the average?", top: Math},
		{prompt: "x² + √2 ≈ ?", top: Math},

		// Creative.
		{prompt: "Write a poem about the sea", top: Creative},
		{prompt: "Write a haiku about autumn leaves", top: Creative},
		{prompt: "Compose a limerick about a cat", top: Creative},
		{prompt: "Once upon a time there was a dragon. Continue the story.", top: Creative},

		// Science.
		{prompt: "How does photosynthesis work in plant cells?", top: Science},
		{prompt: "Explain quantum entanglement", top: Science},
		{prompt: "Describe the DNA replication process", top: Science},

		// Reasoning.
		{prompt: "Why is the sky blue? Explain step by step.", top: Reasoning},
		{prompt: "Riddle: what has keys but can't open locks?", top: Reasoning},
		{prompt: "Should I learn Rust or Go? Pros and cons please", top: Reasoning, also: []string{Code}},
		{prompt: "Think through the trade-offs of renting versus buying", top: Reasoning},

		// Several domains.
		{prompt: "Write a Python function to compute the integral of a polynomial", top: Math, also: []string{Code}},
		{prompt: "Write a poem that explains the theory of relativity", top: Creative, also: []string{Science}},
		{prompt: "Write a story about a programmer who finds a bug in the matrix", top: Creative, also: []string{Code}},
	}
	for _, c := range cases {
		t.Run(c.prompt, func(t *testing.T) {
			got := Classify(c.prompt)
			if len(got) == 0 || got[0].Domain != c.top {
				t.Fatalf("Classify(%q) = %v, want %s first", c.prompt, got, c.top)
			}
			for _, d := range c.also {
				if s := score(got, d); s < 0.4 {
					t.Errorf("Classify(%q) = %v, want %s >= 0.4", c.prompt, got, d)
				}
			}
			for _, d := range c.not {
				if s := score(got, d); s > 0 {
					t.Errorf("Classify(%q) = %v, want no %s", c.prompt, got, d)
				}
			}
			checkWellFormed(t, got)
		})
	}
}

func checkWellFormed(t *testing.T, got []DomainScore) {
	t.Helper()
	seen := map[string]bool{}
	for i, d := range got {
		if d.Score < 0 || d.Score > 1 {
			t.Errorf("%s scores %v, outside [0, 1]", d.Domain, d.Score)
		}
		if i > 0 && d.Score > got[i-1].Score {
			t.Errorf("not sorted best first: %v", got)
		}
		if seen[d.Domain] {
			t.Errorf("%s twice: %v", d.Domain, got)
		}
		seen[d.Domain] = true
	}
	if !seen[General] {
		t.Errorf("general missing: %v", got)
	}
}

func TestClassifyGeneralIsFallbackAndBaseline(t *testing.T) {
	if got := Classify("good evening, how was your day"); len(got) != 1 || got[0] != (DomainScore{General, 1}) {
		t.Errorf("nothing specific: got %v, want general 1 alone", got)
	}
	got := Classify("```python\ndef f(): pass\n```\nThis raises a TypeError in my Django app")
	if g := score(got, General); g != generalFloor {
		t.Errorf("certain code prompt: general scores %v, want the baseline %v (%v)", g, generalFloor, got)
	}
}

func TestClassifyIgnoresCase(t *testing.T) {
	a, b := Classify("WRITE A POEM ABOUT PYTHON"), Classify("write a poem about python")
	if len(a) != len(b) {
		t.Fatalf("%v != %v", a, b)
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("%v != %v", a, b)
		}
	}
}

func TestClassifyRepeatsSaturate(t *testing.T) {
	once := score(Classify("poem"), Creative)
	many := score(Classify(strings.Repeat("poem ", 1000)), Creative)
	if many > 1-0.25*(1-once) || many < once {
		t.Errorf("poem once %v, a thousand times %v: repeats should count little", once, many)
	}
}

func TestClassifyLongPromptIsBounded(t *testing.T) {
	p := "Write a poem. " + strings.Repeat("lorem ipsum ", 1<<20) + "integral derivative theorem"
	got := Classify(p)
	if got[0].Domain != Creative || score(got, Math) > 0 {
		t.Errorf("Classify read past MaxClassifyBytes: %v", got)
	}
}

func TestClassifyConcurrent(t *testing.T) {
	prompts := []string{"Write a poem", "Solve 2x + 3 = 7", "fix main.go", "why? step by step", "hi"}
	want := make([][]DomainScore, len(prompts))
	for i, p := range prompts {
		want[i] = Classify(p)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 200; n++ {
				i := n % len(prompts)
				got := Classify(prompts[i])
				if len(got) != len(want[i]) || got[0] != want[i][0] {
					t.Errorf("Classify(%q) = %v, want %v", prompts[i], got, want[i])
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestLexiconIsWellFormed(t *testing.T) {
	for _, l := range lexicon {
		for _, term := range splitTerms(l.terms) {
			if strings.ToLower(term) != term {
				t.Errorf("term %q is not lowercase", term)
			}
		}
	}
	for _, s := range []string{"c++", "c#"} {
		if got := Classify("I write " + s); got[0].Domain != Code {
			t.Errorf("%s: %v", s, got)
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	prompts := []struct{ name, text string }{
		{"short", "Write a Python function that computes the integral of a polynomial, and explain step by step why it works."},
		{"long", strings.Repeat("The quick brown fox jumps over the lazy dog while we solve 2x + 3 = 7 in main.go. ", 50)},
	}
	for _, p := range prompts {
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(int64(len(p.text)))
			b.ReportAllocs()
			for b.Loop() {
				Classify(p.text)
			}
		})
	}
}

func TestLexiconHasNoDuplicates(t *testing.T) {
	seen := map[string]bool{}
	for _, l := range lexicon {
		for _, term := range splitTerms(l.terms) {
			key := domainNames[l.domain] + ":" + term
			if seen[key] {
				t.Errorf("%q listed twice for %s", term, domainNames[l.domain])
			}
			seen[key] = true
		}
	}
}
