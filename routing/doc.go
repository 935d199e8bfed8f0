// Package routing decides which experts answer a prompt.
//
// It owns three pure steps, all computed from a snapshot the caller hands in:
//
//   - Classify: a fast, deterministic, multi-label guess at a prompt's
//     domains (general, code, math, creative, science, reasoning) from
//     words, phrases and a few symbol patterns (code fences, calls such as
//     foo(), file names such as main.go, equations such as 2x + 3 = 7).
//   - Rank: a score per candidate expert from relevance, speed (the
//     expected time to its first token in milliseconds, FirstToken: round
//     trip plus server time; and the decode rate), load, recent failures,
//     and as tie-breakers free capacity and, when the round trip is
//     unknown, distance, with every part kept so POST /api/route can show
//     it. What nobody measured counts as the median measured candidate
//     (Priors), or as what the peer reports of itself when it does; a
//     measurement of one or two calls counts as no worse than the median.
//   - ChooseK: how many experts to ask in parallel, from the prompt's length
//     and how many domains it spans.
//
// Decide ties the three together into a Decision, choosing the K on distinct
// peers spread over network prefixes where it can (Diverse). Every input of
// a Candidate carries its source (Sources): measured by this peer, predicted,
// or reported by the candidate itself; announced capacity and load are
// capped (MaxCapacity, MaxLoad).
//
// The package does no I/O, keeps no state between calls, starts no
// goroutines and imports nothing of mwpeer or libp2p: it does not measure
// RTTs, read the catalog, keep failure counts or dispatch requests. The
// caller adapts catalog entries and measurements into Candidate values.
package routing
