// Package ledger is a peer's book of accounts: the embedded database in the
// data dir (File, ledger.db) that keeps every receipt and tally this peer
// is a party to, the balance of credit with each counterpart, and the API
// keys of the local HTTP API with their token budgets.
//
// The store is SQLite through the pure-Go driver modernc.org/sqlite, in WAL
// mode with synchronous=FULL: a receipt Put has returned for survives the
// process being killed and the machine losing power, and a crash at any
// moment leaves no half-written receipt (a transaction is all or nothing).
// A second process (the mwpeer ledger and keys commands) may open the same
// file while the peer runs. The schema is versioned; Open applies missing
// migrations in one transaction and refuses a file newer than it knows.
//
// Receipts are verified before they are stored: the server's signature
// always, the requester's when present. A receipt without the requester's
// signature is kept as unsigned and counts for nothing; when the same receipt
// later arrives countersigned it is upgraded. Each receipt is stored once,
// by its ID: the same receipt again changes nothing, a different receipt
// under a stored ID is ErrConflict. The signed bytes are kept as they came,
// so a Statement can be checked by anyone with VerifyStatement.
//
// Tallies (receipt.SignedTally: expert calls and shard bytes a worker did
// for a payer over a window, settled at once) are kept by the same rules
// (PutTally): the payer's signature is always verified, the worker's when
// present; one without it is disputed, counts for nothing, and is upgraded
// when it arrives countersigned; each is stored once by its ID. A signed
// tally counts as a receipt does: earned when we were its worker, spent
// when we were its payer, so the compute a peer serves through expert calls
// and shard seeding weighs in its balances and in who is served first.
//
// Per counterpart, an aggregate row is updated in the same transaction as
// each receipt or tally, so a Balance is one indexed row read however many
// there are. Amounts are micro-credits (receipt.Micro to a credit).
//
// API keys are stored as the SHA-256 of their secret; the secret is shown
// once, by AddKey. A key has a budget of tokens per period, the period
// starting when the key was made; the unused part of a period's budget
// carries into the next period and no further.
//
// Accounting connects a Ledger to a running peer: the infer protocol's
// receipt hooks, the tally protocol's store hook, and the scheduling class
// of a remote caller (the rule itself is inference.ClassOf). The package
// does not price receipts or tallies (package receipt), settle tallies
// (package inference/tally) or answer HTTP requests (package api); it keeps
// the books they read and write.
package ledger
