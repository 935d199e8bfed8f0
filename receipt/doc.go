// Package receipt is the signed record of work one peer did for another:
// the Receipt a serving peer signs when an answer ends on /mwpeer/infer and
// the requester countersigns; the Tally of many small pieces of work (expert
// calls, shard bytes) between two peers over a window, which the payer
// signs and the worker countersigns; and the cost rule that prices both in
// credits.
//
// Receipts and tallies travel and are stored in one compact, deterministic
// binary form each (Marshal). Signatures are libp2p key signatures over that
// form under a domain string of their own for each role (receipt server,
// receipt requester, tally payer, tally worker), so a signature made in one
// role never passes in another. Peer IDs of Ed25519 keys carry the public
// key, so anyone holding a Signed receipt or a SignedTally can check both
// signatures with nothing else (Verify).
//
// The package does no I/O; the ledger stores receipts and tallies, the infer
// and tally protocols carry them.
package receipt
