// Package receipt is the signed record of work one peer did for another:
// the Receipt a serving peer signs when an answer ends on /mwpeer/infer and
// the requester countersigns, and the Cost rule that prices it in credits.
//
// A receipt travels and is stored in one compact, deterministic binary form
// (Marshal). Signatures are libp2p key signatures over that form under a
// domain string of their own, so a server signature can never pass as a
// requester's. Peer IDs of Ed25519 keys carry the public key, so anyone
// holding a Signed receipt can check both signatures with nothing else
// (Signed.Verify).
//
// The package does no I/O; the ledger stores receipts, the infer protocol
// carries them.
package receipt
