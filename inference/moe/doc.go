// Package moe runs the experts of a Mixture-of-Experts model across the
// swarm. The peer that holds a model's dense shard runs the forward pass
// (attention, norms and every layer's gate); for each layer it sends the rows
// routed to an expert to a peer hosting that expert over
// /mwpeer/expert/1.0.0 (package expert), all chosen experts of the layer at
// once, and sums the answers with the gate weights.
//
// Experts implements llama.Experts for one model: it runs an expert in this
// process when the peer holds it (in its expert.Server), otherwise asks the
// best-ranked live host through an expert.Client and fails over to the next
// replica on error or timeout. A call that no host can answer fails with
// ErrNoHost, never with a wrong answer. LoadDense and LoadExpert build the
// engine's model and experts from the shards a shard.Store verified.
//
// Answers are checked. One holding a NaN or an infinity is rejected (the
// call fails over) and its host convicted. A share Verify of remote calls
// (DefaultVerify, 2%) goes to two replicas at once and their answers must
// agree bit for bit, since the engine's kernels are deterministic; on a
// disagreement more replicas are asked until two agree, that answer is
// used, and the host outvoted is convicted. A convicted host is excluded
// from replica choice by the trust store (trust.Store.Convict) and reported
// to OnBadHost once per offence.
//
// The runner pays for its remote calls: when a generation ends (and every
// FlushEvery of a long one) Settle proposes to each host a signed tally of
// the calls it answered since the last settlement (package tally), holding
// back new calls to that host meanwhile so both sides count the same calls.
package moe
