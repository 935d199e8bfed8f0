// Package trust is a peer's one memory of the other peers: what each did when
// this peer dealt with it. Dispatch reports every expert's calls (time to
// first token, tokens, failures, stalls), the distributed-MoE client its
// expert calls (and the hosts it caught answering wrongly, Convict), and the
// shard fetcher the sources that sent bad pieces; each becomes an Event
// passed to Store.Observe. Store.Score turns a peer's record into one number
// with its reasons, and Store.Perf gives the measured speed of a peer for
// one model.
//
// Routing, the choice of MoE replica and the order of shard sources all read
// this store, so a peer that misbehaves on one path is ranked lower on all of
// them; a peer convicted of a wrong answer is excluded from replica choice
// for a while. A peer whose ping failed or whose stream stalled is a suspect
// (Store.Suspect: frozen or gone, maybe), tried after every other until a
// ping or an answer clears it (Store.Alive); suspicions are not saved, since
// they are about the peer now. Everything here is measured by this peer itself; nothing a
// peer says about itself is recorded. Peers are named by their peer ID
// strings; the package imports nothing of libp2p. Its only I/O is its own
// file (Config.Path): Open reads it and Save, Run and Close keep it, so
// scores survive a restart and keep decaying across it.
package trust
