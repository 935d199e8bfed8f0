// Package infer is the /mwpeer/infer/1.0.0 protocol: it carries one
// inference.Request to a remote peer and streams its tokens back. Service
// serves a host's inference.Backend to other peers; Call runs a request on
// one of them, and Target makes that peer a dispatch target.
//
// One stream carries one call:
//
//	client -> server: request frame
//	server -> client: chunk frame*, then one final or error frame
//
// Every frame is a varint length prefix and a JSON object. A request frame
// holds the request's fields and "timeout_ms" (the remaining deadline,
// relative so clocks need not agree) and is at most MaxRequestSize bytes;
// the server's frames are {"chunk":{...}}, {"final":{...}} or
// {"error":{"code":...,"message":...}}, at most MaxFrameSize bytes each. The
// client keeps its write side open: it resets the stream to cancel, and the
// server cancels the backend call when its read side sees the reset. Error
// codes unwrap to inference's sentinels on the client (see the Code
// constants), so errors.Is(err, inference.ErrBusy) holds across peers.
//
// The schema is this package's own structs (request, chunk, final and
// errorFrame in wire.go), converted to and from inference's API types field
// by field. Those types are free to grow; the protocol is not. New content on
// the wire comes as a new frame type or a new protocol version, never as a
// new field on an inference type that happens to be serialized.
//
// The serving side knows who asks: the caller's peer ID, from the secure
// channel, travels to the backend in the context (inference.Caller), to an
// admission hook before the backend runs (ServiceConfig.Admit) and to a
// completion hook after every call (ServiceConfig.Complete).
package infer
