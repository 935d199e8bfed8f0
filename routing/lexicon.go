package routing

import "strings"

// Domains the classifier knows.
const (
	General   = "general"
	Code      = "code"
	Math      = "math"
	Creative  = "creative"
	Science   = "science"
	Reasoning = "reasoning"
)

// Domain indexes. The order is also the tie-break order of Classify:
// specialists before general.
const (
	dCode = iota
	dMath
	dScience
	dReasoning
	dCreative
	dGeneral
	numDomains
)

var domainNames = [numDomains]string{Code, Math, Science, Reasoning, Creative, General}

// Cue weights. Raw evidence per domain is summed and squashed with 1-e^-x,
// so one strong cue alone scores 0.63, a medium one 0.45, a weak one 0.26.
const (
	strong = 1.0
	medium = 0.6
	weak   = 0.3
)

// lexicon lists the words and phrases that are evidence for a domain. Each
// line is one domain and weight; terms are separated by commas. A term of
// several words is a phrase and matches only those words in that order,
// within one sentence. Terms are tokenized exactly like prompts (so
// "trade-off" is the phrase "trade off"), and match whole words only: "sum"
// never fires inside "summarize", nor "git" inside "digit". A word ending
// in s that is not listed falls back to its singular ("equations",
// "stories"), so plurals need no entry of their own.
var lexicon = []struct {
	domain int
	weight float64
	terms  string
}{
	{dCode, strong, `code, coding, programming, programmer, compile, compiler, compiling, compilation error, debug, debugging,
		debugger, refactor, refactoring, python, golang, javascript, typescript, kotlin, haskell, clojure, erlang, elixir,
		fortran, cobol, php, perl, sql, postgres, postgresql, mysql, sqlite, mongodb, regex, regexp, segfault,
		segmentation fault, stack trace, stacktrace, traceback, null pointer, nullpointerexception, syntax error, compile error,
		runtime error, type error, unit test, pull request, merge conflict, git, github, gitlab, docker, dockerfile,
		kubernetes, kubectl, npm, pip install, webpack, goroutine, mutex, struct, enum, bytecode, api, endpoint, json,
		yaml, html, css, stdout, stderr, stdin, localhost, linux, bash, shell script, command line, codebase, source code,
		data structure, linked list, binary tree, binary search, hash map, hashmap, hash table, time complexity,
		space complexity, big o, memory leak, for loop, while loop, if statement, async, await, nodejs, rustc, jvm, llvm,
		gcc, clang, makefile, cmake, pytest, junit, sdk, oauth, jwt, sockets, in go, go code, go program, go function,
		go module, go routine, race condition, quicksort, mergesort, frontend, backend, microservice, repo, repository,
		function signature, return value, exit code, vscode, typeerror, keyerror, valueerror, indexerror`},
	{dCode, medium, `function, functions, variable, exception, bug, array, algorithm, database, framework, deploy, deployment,
		pointer, concurrency, lambda, interpreter, recursion, recursive, rust, java, scala, terminal, http, https, cli,
		implement, script, crash, react, django, flask, lint, linter, neural network, machine learning, deep learning, thread, callback, xml, compiles, boolean`},
	{dCode, weak, `error, loop, string, class, method, object, server, library, query, implementation, bytes, binary, hex,
		swift, ruby, kernel, integer, csv, cache, parse, parser, install, build, test, tests, program, socket, tcp, udp,
		pipeline, package, module, null, nil, config, matrix, fibonacci, sort, sorting`},

	{dMath, strong, `math, maths, mathematics, equation, integral, derivative, differentiate, differentiation, antiderivative,
		calculus, algebra, theorem, lemma, corollary, prove that, show that, eigenvalue, eigenvector, determinant,
		polynomial, quadratic, logarithm, factorial, prime number, greatest common divisor, least common multiple, gcd, lcm,
		modulo, arithmetic, fraction, percentage, square root, cube root, sqrt, geometry, trigonometry, sine, cosine,
		hypotenuse, standard deviation, solve for, divided by, linear algebra, linear equation, combinatorics, permutation,
		binomial, parabola, asymptote, topology, integer solutions, real numbers, natural numbers, differential equation,
		pythagorean, π`},
	{dMath, medium, `mathematical, integrate, proof, prove, matrix, matrices, exponent, exponential, prime, divisor, divisible,
		modular, percent, triangle, radius, diameter, perimeter, probability, statistics, statistical, median, variance,
		sum of, product of, solve, calculate, calculation, multiply, multiplication, divide, squared, cubed, infinity,
		fibonacci, limit of, converge, convergence, vector, inequality, slope, pi, integers, dice, odds`},
	{dMath, weak, `integration, decimal, circle, area, volume, angle, mean, average, sum, product, compute, how many, number,
		digit, integer, division, plus, minus, times, infinite, series, sequence, limit, graph, axis, coordinate,
		combination, tangent, ratio`},

	{dCreative, strong, `poem, poetry, haiku, limerick, sonnet, stanza, lyrics, song lyrics, short story, bedtime story,
		fairy tale, fable, fiction, science fiction, screenplay, protagonist, write a poem, write a story, write a song,
		once upon a time, story about, poem about, song about, slogan, tagline, worldbuilding, in the style of, creative writing, villanelle, write a haiku, write a limerick`},
	{dCreative, medium, `verse, rhyme, song, story, tale, novel, plot, narrative, villain, fantasy, imagine, imaginative,
		creative, creativity, metaphor, joke, pun, humorous, brainstorm, roleplay, role play, character, characters,
		dialogue, poet, catchy, witty`},
	{dCreative, weak, `funny, hero, script, come up with, names for, essay, blog post, describe, invent, dragon, magic`},

	{dScience, strong, `physics, physicist, chemistry, chemist, biology, biologist, quantum, quantum mechanics, molecule,
		molecular, atom, atomic, photosynthesis, gravity, gravitational, relativity, dna, rna, protein, enzyme, genome,
		genetics, astronomy, astrophysics, galaxy, black hole, electron, proton, neutron, photon, chemical reaction,
		ecosystem, organism, bacteria, neuron, thermodynamics, kinetic energy, potential energy, periodic table, isotope,
		wavelength, electromagnetic, magnetism, speed of light, geology, tectonic, metabolism, anatomy, physiology,
		big bang, mitochondria, velocity, acceleration, chromosome, neuroscience, natural selection, entanglement`},
	{dScience, medium, `evolution, cell, gene, genetic, climate, planet, particle, chemical, species, virus, vaccine,
		entropy, momentum, neural network, machine learning, earth, experiment, hypothesis, scientific, scientist, science, laboratory,
		radiation, nuclear, fusion, fission, magnetic, orbit, volcano, earthquake, oxygen, hydrogen, acid, immune,
		newton, einstein, darwin, brain, ocean, temperature, physical`},
	{dScience, weak, `theory, force, mass, energy, reaction, element, frequency, voltage, circuit, carbon, mutation, lab,
		disease, medicine, solar, sky, light, heat, water`},

	{dReasoning, strong, `step by step, logic, puzzle, riddle, deduce, deduction, syllogism, fallacy, pros and cons,
		which is better, think through, think step by step, logic puzzle, brain teaser, knights and knaves,
		compare and contrast, reason about, chain of thought, if all`},
	{dReasoning, medium, `reasoning, logical, infer, implies, implication, therefore, premise, paradox, argument,
		counterargument, trade off, tradeoff, compare, comparison, should i, decide, decision, dilemma, what if,
		hypothetical, explain why, analyze, analyse, evaluate, strategy, contradiction, true or false, justify,
		if and only if, weigh, conclude, conclusion, which one, better or worse, versus, vs`},
	{dReasoning, weak, `why, reason, because, analysis, assess, plan, scenario, consequence, prioritize, critique,
		how would you, difference between, advantages, disadvantages, cause`},

	{dGeneral, strong, `hello, hi, hey, thanks, thank you, translate, translation, summarize, summarise, tldr, recipe, weather`},
	{dGeneral, medium, `summary, recommend, recommendation, advice, email, news, travel, restaurant, what is, who is,
		who was, tell me about, good morning, how are you`},
	{dGeneral, weak, `movie, book, history, help, explain, list, opinion`},
}

// Words that must never fall back to a singular that is a cue ("means" is
// not "mean", "times" is its own entry).
const stopWords = `means, comments, sums, is, was, has, does, goes, this, its, yes, us, thus, plus, analysis, lets, uses`

// File extensions that make "name.ext" a source file name.
const fileExts = `go, py, js, mjs, ts, tsx, jsx, rs, java, kt, c, h, cc, cpp, hpp, cs, rb, php, swift, scala, sh, bash,
	zsh, sql, html, css, scss, json, yaml, yml, toml, lua, pl, ex, exs, erl, hs, ml, zig, proto, mod, ipynb, dockerfile,
	vue, svelte, gradle, tf`

// Names that, followed by "(", are mathematical functions, not code.
const mathFuncs = `sin, cos, tan, cot, sec, csc, log, ln, exp, sqrt, arcsin, arccos, arctan, sinh, cosh, tanh, det, max, min,
	gcd, lcm, lim, f, g, h, p`

// hit is one domain's evidence from a term.
type hit struct {
	domain uint8
	weight float64
}

// entry is one vocabulary item: a word, or a phrase (then never matched by
// lookup, only through phrasesByFirst).
type entry struct {
	hits     []hit
	ext      bool // a source file extension
	mathFunc bool // a mathematical function name
	stop     bool // never fall back to the singular
}

// phrase is a multi-word term: the vocabulary ids of its words, in order,
// and the entry whose hits it carries.
type phrase struct {
	words []int32
	entry int32
}

var (
	vocab          = map[string]int32{} // lowercase word -> entry id
	entries        []entry
	phrasesByFirst [][]phrase // by the id of a phrase's first word
)

func init() {
	for _, l := range lexicon {
		for _, term := range splitTerms(l.terms) {
			id := termID(term)
			entries[id].hits = append(entries[id].hits, hit{uint8(l.domain), l.weight})
		}
	}
	for _, w := range splitTerms(stopWords) {
		entries[wordID(w)].stop = true
	}
	for _, w := range splitTerms(fileExts) {
		entries[wordID(w)].ext = true
	}
	for _, w := range splitTerms(mathFuncs) {
		entries[wordID(w)].mathFunc = true
	}
}

func splitTerms(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.Join(strings.Fields(t), " "); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// wordID returns the entry id of one lowercase word, adding it if new.
func wordID(w string) int32 {
	if id, ok := vocab[w]; ok {
		return id
	}
	id := int32(len(entries))
	vocab[w] = id
	entries = append(entries, entry{})
	phrasesByFirst = append(phrasesByFirst, nil)
	return id
}

// termID returns the entry id of a term. A term of several words becomes a
// phrase with an entry of its own, keyed by the words joined with spaces (a
// key no single word can have).
func termID(term string) int32 {
	var words []string
	for _, t := range lex(term, nil).toks {
		if t.kind == tokWord {
			words = append(words, strings.ToLower(term[t.start:t.end]))
		}
	}
	switch len(words) {
	case 0:
		panic("routing: lexicon term without words: " + term)
	case 1:
		return wordID(words[0])
	}
	key := strings.Join(words, " ")
	if id, ok := vocab[key]; ok {
		return id
	}
	id := wordID(key)
	p := phrase{entry: id}
	for _, w := range words {
		p.words = append(p.words, wordID(w))
	}
	first := p.words[0]
	phrasesByFirst[first] = append(phrasesByFirst[first], p)
	return id
}
