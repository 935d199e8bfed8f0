package routing

import (
	"math"
	"sort"
	"strings"
	"unicode"
)

// DomainScore is how strongly a prompt belongs to a domain, in [0, 1].
type DomainScore struct {
	Domain string  `json:"domain"`
	Score  float64 `json:"score"`
}

// Domains the classifier knows.
var Domains = []string{"general", "code", "math", "creative", "science", "reasoning"}

// Cue weights: a strong cue alone is enough to call a domain; weak cues add up.
const (
	strong = 1.0
	weak   = 0.4
)

// lexicon maps a lowercase word, or a phrase of words separated by single
// spaces, to its domain and weight. Matching is by whole words, so "sum"
// does not fire inside "summarize" nor "git" inside "digit".
var lexicon = map[string][]cue{}

type cue struct {
	domain string
	weight float64
}

func init() {
	add := func(domain string, w float64, words ...string) {
		for _, x := range words {
			lexicon[x] = append(lexicon[x], cue{domain, w})
		}
	}
	add("code", strong, "code", "function", "bug", "compile", "compiler", "debug", "python", "golang", "javascript",
		"typescript", "rust", "java", "kotlin", "haskell", "sql", "regex", "api", "refactor", "segfault", "stack trace",
		"unit test", "null pointer", "git", "github", "docker", "kubernetes", "json", "yaml", "html", "css", "npm",
		"programming", "variable", "exception", "syntax error", "pull request", "algorithm",
		"time complexity", "big o", "linked list", "binary tree", "hash map", "c++", "goroutine", "struct",
		"endpoint", "database", "bash", "linux", "golang's")
	add("code", weak, "implement", "install", "error", "loop", "array", "string", "server", "build", "test", "run",
		"class", "method", "query", "library", "framework", "deploy", "shell", "program", "script")
	add("math", strong, "equation", "integral", "derivative", "calculus", "algebra", "theorem", "lemma", "proof",
		"prove that", "matrix", "eigenvalue", "polynomial", "logarithm", "probability", "statistics", "geometry",
		"trigonometry", "factorial", "prime number", "prime numbers", "solve for", "arithmetic", "fraction",
		"percentage", "square root", "modulo", "integer", "integers", "limit of", "sum of",
		"multiply", "divided by", "median", "variance", "math", "mathematics")
	add("math", weak, "solve", "calculate", "compute", "number", "numbers", "sum", "average", "digit", "digits",
		"vector", "series", "divide", "times", "plus", "minus", "mean")
	add("creative", strong, "poem", "poetry", "story", "short story", "haiku", "lyrics", "song", "novel",
		"fiction", "screenplay", "limerick", "sonnet", "fairy tale", "narrative", "metaphor", "rhyme",
		"fantasy", "slogan", "tagline")
	add("creative", weak, "creative", "funny", "joke", "describe", "invent", "character", "plot", "imagine")
	add("science", strong, "physics", "chemistry", "biology", "quantum", "molecule", "atom", "photosynthesis",
		"evolution", "gravity", "relativity", "cell", "dna", "protein", "enzyme", "climate", "astronomy", "planet",
		"galaxy", "electron", "neutron", "chemical", "reaction", "species", "ecosystem", "genetics", "neuron",
		"thermodynamics", "entropy", "velocity", "acceleration", "experiment", "hypothesis")
	add("science", weak, "energy", "scientific", "scientist", "theory", "research", "element", "force", "mass")
	add("reasoning", strong, "why", "explain why", "step by step", "reasoning", "logic", "logical", "puzzle",
		"riddle", "deduce", "infer", "implies", "therefore", "argument", "fallacy", "compare", "pros and cons",
		"trade-off", "tradeoff", "think through", "what if", "should i", "which is better", "analyze", "analyse")
	add("reasoning", weak, "because", "reason", "decide", "evaluate", "consider", "plan")
}

// maxPhrase is the longest phrase in the lexicon, in words.
const maxPhrase = 3

// words splits text into lowercase words. Letters, digits and a few symbols
// that belong inside technical words (+, #, ', -) stay; the rest split.
func words(text string) []string {
	return strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '+' || r == '#' || r == '\'' || r == '-')
	})
}

// Classify returns the prompt's domains, best first, each scored in [0, 1].
// "general" is always present: it is the fallback when nothing else fires
// and a low baseline otherwise.
func Classify(prompt string) []DomainScore {
	raw := map[string]float64{}
	ws := words(prompt)
	for i := range ws {
		phrase := ""
		for n := 1; n <= maxPhrase && i+n <= len(ws); n++ {
			if n == 1 {
				phrase = ws[i]
			} else {
				phrase += " " + ws[i+n-1]
			}
			for _, c := range lexicon[phrase] {
				raw[c.domain] += c.weight
			}
		}
	}
	structuralCues(prompt, raw)
	out := make([]DomainScore, 0, len(Domains))
	best := 0.0
	for _, d := range Domains {
		if d == "general" {
			continue
		}
		if s := raw[d]; s > 0 {
			// 1 - e^-x feels right: one strong cue is 0.63, three are 0.95.
			score := 1 - expNeg(s)
			out = append(out, DomainScore{Domain: d, Score: round3(score)})
			best = max(best, score)
		}
	}
	general := 1.0
	if best > 0 {
		general = round3(max(0.1, 0.5*(1-best)))
	}
	out = append(out, DomainScore{Domain: "general", Score: general})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Score > out[j].Score })
	return out
}

// structuralCues looks at the prompt's shape rather than its words: code
// fences, call syntax, file names, and equations.
func structuralCues(p string, raw map[string]float64) {
	if strings.Contains(p, "```") {
		raw["code"] += 2 * strong
	}
	for _, f := range strings.Fields(p) {
		f = strings.Trim(f, ".,;:!?\"'`()[]{}")
		if i := strings.LastIndexByte(f, '.'); i > 0 && i < len(f)-1 {
			switch f[i+1:] {
			case "go", "py", "js", "ts", "rs", "java", "c", "cpp", "h", "rb", "sh", "sql", "yaml", "yml", "json", "toml", "tsx", "jsx":
				raw["code"] += strong
			}
		}
		if j := strings.Index(f, "("); j > 0 && strings.HasSuffix(f, ")") && isIdent(f[:j]) {
			raw["code"] += weak
		}
	}
	if hasEquation(p) {
		raw["math"] += strong
	}
}

func isIdent(s string) bool {
	for i, r := range s {
		if !(r == '_' || r == '.' || unicode.IsLetter(r) || (i > 0 && unicode.IsDigit(r))) {
			return false
		}
	}
	return s != ""
}

// hasEquation spots arithmetic like "2x + 3 = 7" or "12*7": a digit, an
// operator and another operand, not a date or a version number.
func hasEquation(p string) bool {
	ops := 0
	digits := 0
	for _, r := range p {
		switch {
		case unicode.IsDigit(r):
			digits++
		case strings.ContainsRune("+*/=^×÷", r):
			ops++
		}
	}
	return digits > 0 && ops > 0 && (strings.ContainsAny(p, "=^×÷") || ops >= 1 && digits >= 2)
}

func expNeg(x float64) float64 { return math.Exp(-x) }

func round3(x float64) float64 { return float64(int(x*1000+0.5)) / 1000 }
