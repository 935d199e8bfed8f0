// Package tally counts the many small pieces of work peers do for each
// other (expert calls, shard bytes) and settles them as signed tallies
// (receipt.SignedTally) over the /mwpeer/tally/1.0.0 protocol: one
// settlement per pair of peers (and model) per window, rather than a
// receipt per call.
//
// Each side counts in a Meter, per counterpart and model, from its last
// settlement on: the expert client and server count calls answered with
// rows, the shard fetcher and server count bytes (package expert and
// package transfer own the counting points). When its work ends (a
// generation, every 30 s of a long one, a fetch), the payer (the runner,
// the fetcher) takes its count from its Meter and proposes it, signed, to
// the worker (the expert host, the shard source) with a Payer; the worker's
// Service takes its own count for that payer and model and countersigns
// when the two agree exactly, or refuses with a reason. The payer proposes:
// it knows when its work ends, and it never signs more than it counted
// itself. Both sides store the outcome through their Store hook: the
// both-signed tally, or the payer-signed one, disputed, when the counts
// disagree (the worker stores it only when it had counted work of that
// payer, so a stranger cannot fill its ledger). Taking a count starts the
// next window on both sides, agreed or not.
//
// The wire format of /mwpeer/tally/1.0.0 (ID); one stream carries one
// settlement:
//
//	payer -> worker: proposal frame: a receipt.SignedTally in its binary
//	                 form, with the payer's signature only
//	worker -> payer: answer frame: 'c' then the worker's signature,
//	                 'r' then the reason for refusing (UTF-8), or
//	                 'b' alone: busy, nothing taken, propose later
//
// Frames are a varint length and the body (internal/wire); proposals are at
// most MaxProposal bytes, answers MaxAnswer. The payer closes its write side
// after the proposal, the worker its stream after the answer. A refusal
// reaches the payer as a wire.RemoteError wrapping ErrRefused; a busy answer,
// or no stream at all, as an error wrapping ErrNotProposed, after which the
// payer counts the work again for its next settlement.
//
// The worker knows the payer from the secure channel and refuses a proposal
// for another payer or worker, badly signed, with a cost off the rule, a
// window ending more than MaxClockSkew from its clock, an ID it settled
// lately, or work it did not count. It puts each stream in the ServiceName
// resource scope and reserves the proposal and the answer before reading,
// serves at most ServiceConfig.MaxStreams at once and bounds each exchange
// with a deadline. Since the payer counts a call once it has read the
// answer and the worker once it has sent it, the worker waits up to
// ServiceConfig.CatchUp for its count to reach the proposal's before it
// compares. A Meter is bounded (DefaultMaxEntries counterparts, least
// recently used forgotten), so a stranger cannot make a peer keep unbounded
// state.
//
// What the counts must cover exactly is the callers' business: moe.Experts
// holds back new calls to a host while it settles with it, so no call is in
// flight on either side.
package tally
