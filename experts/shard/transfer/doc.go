// Package transfer is the /mwpeer/shard/1.0.0 protocol: it moves the shards
// and manifests of a shard.Store between peers, verified piece by piece.
// Server serves a store's shards and manifests to other peers; Fetcher
// downloads manifests and shards from them into a store, spreading each
// shard's pieces over its sources, checking every piece against the manifest
// as it arrives, dropping a source that sends a bad piece, fails or stalls,
// and resuming an interrupted fetch from the store's partial files.
//
// It does not decide which shards a peer wants or where to find them: the
// caller names the shards and gives a function that returns the peers that
// may hold a hash. What a shard is, and the store, are package shard's.
//
// A stream carries requests one after the other:
//
//	client -> server: request frame {"hash","offset","length"}
//	server -> client: header frame {"size","length"} then exactly length raw bytes,
//	                  or header frame {"error":{"code","message"}}
//
// Frames are a varint length and a JSON object; requests are at most
// MaxRequestSize bytes, headers MaxHeaderSize. The hash is a shard's SHA-256
// or a model ID (the manifest's bytes are served). The server sends
// min(length, size-offset) bytes; length must be 1..MaxLength. After an error
// frame of code bad_request or busy the server closes the stream; after
// not_found the client may ask again. The client closes its write side when
// done. A not_found error frame reaches the client as a RemoteError that
// unwraps to shard.ErrNotFound.
//
// The server puts each stream in the ServiceName resource scope and reserves
// its copy buffer before reading a request; it serves at most
// ServerConfig.MaxStreams streams at once, MaxPeerStreams to one peer, and
// refuses the rest busy (as it does a stream over the resource manager's
// limits). A stream lives MaxStreamLife at most: a later request is
// answered busy, so that a peer asking a byte at a time, each request in
// time, still gives its slot up. Uploads keep to UploadRate overall and
// PeerUploadRate to each peer. A Fetcher waits out busy answers (BusyFor,
// longer than a stream lives) before it gives a source up, and checks that
// the disk can take the shards a manifest declares, keeping MinFree, before
// it grows any file (shard.ErrNoSpace).
//
// Seeding earns credit. The Server counts the bytes of every full answer
// per requester (Server.Meter), the Fetcher the bytes it verified per source
// (Fetcher.Meter); at the end of a Fetch or FetchManifest, a Fetcher with a
// Payer settles with each source it used that no other of its fetches is
// using: it proposes a signed tally of those bytes (package tally), which
// the source countersigns when its own count agrees. Bytes that fail
// verification are counted by the source only, so its tally is disputed.
package transfer
