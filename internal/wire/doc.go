// Package wire holds what every mwpeer libp2p protocol shares, so that each
// protocol package keeps only its own schema and handler:
//
//   - frames: a varint length prefix and a body, JSON or raw, capped in size
//     on both the writing and the reading side;
//   - RemoteError, the one error type for what a serving peer reported, whose
//     code unwraps to a sentinel through the Codes table a protocol declares,
//     so errors.Is(err, inference.ErrBusy) holds across peers;
//   - Attach and Open, which put a stream in its protocol's resource-manager
//     service scope and reserve its memory before anything is read;
//   - Default, which fills the zero fields of a protocol's config.
//
// It knows no protocol, schema or sentinel of its own.
package wire
