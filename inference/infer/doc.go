// Package infer is the /mwpeer/infer/1.0.0 protocol: it carries one
// inference.Request to a remote peer and streams its tokens back. Service
// serves a host's inference.Backend to other peers; Call runs a request on
// one of them, and Target makes that peer a dispatch target.
//
// One stream carries one call:
//
//	client -> server: request frame
//	server -> client: chunk frame*, then one final or error frame
//	server -> client: receipt frame                (after a final, if the server keeps receipts)
//	client -> server: countersign or refuse frame  (if the client keeps receipts)
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
// Receipts. A server configured with ServiceConfig.Receipts follows every
// final frame with {"receipt":"<base64>"}: a receipt.Signed in its binary
// form, signed by the server only, at most MaxReceiptFrameSize bytes. It
// holds a random ID the server picks, the caller's peer ID from the secure
// channel, the server's, the model as asked and its digest, the final's
// token counts, the stream's arrival time and the server's time to first
// token, the SHA-256 of the request frame as read and of the concatenated
// text of the chunks sent, and the cost by receipt.Cost, halved when the
// answer ended after the request's timeout_ms. A client calling CallWith
// with a key reads it within ReceiptTimeout and checks it against what it
// sent and received (requester, server, model, counts, both hashes, time to
// first token no longer than the whole call, start within MaxClockSkew of
// its own clock, cost no more than the rule gives for its own view of the
// model's size, an ID it has not countersigned lately, the server's
// signature), then answers {"countersign":"<base64 signature>"} having
// stored the both-signed receipt, or {"refuse":"<reason>"} and stores
// nothing; either way it then closes its side. The server waits at most
// ServerReceipts.Wait for that answer, checks the signature and stores the
// receipt with both signatures, or with its own only when the requester
// refused, signed wrongly, closed its side without answering (as Call and
// clients older than receipts do) or did not answer in time. Failed and
// cancelled calls get no receipt. The answer is the client's once the final
// arrived: nothing in this exchange fails the call. A server without
// receipts closes its side after the final, which a client waiting for a
// receipt reads as "none".
//
// Beyond text, a request frame may carry "tools" (a JSON array),
// "tool_choice", "format" (JSON) and "input" (strings to embed), and its
// messages "images" (base64), "tool_calls", "tool_call_id" and "tool_name";
// a chunk frame may carry "tool_calls" and "embedding". Peers that predate
// them ignore them, so requests that need them are routed only to peers
// announcing the capability (see inference.Needs); a server whose model
// cannot do what is asked answers the error code "unsupported"
// (inference.ErrUnsupported).
//
// The schema is this package's own structs (request, frame with chunk,
// final, errorFrame and the receipt, and answer in wire.go), converted to and from inference's API types field
// by field. Those types are free to grow; the protocol is not. New content on
// the wire comes as a new frame type or a new protocol version, never as a
// new field on an inference type that happens to be serialized.
//
// Bounds, whatever the other side does. A request from another peer runs
// with at most ServiceConfig.TokensCap tokens (DefaultMaxTokens when it set
// none) and for at most MaxDuration; a caller that keeps the server waiting
// to take its frames for MaxWriteWait in all loses its call, and with it
// its serving slot. A stream beyond the resource manager's stream limits
// for the service is answered busy. On the asking side, CallWith hands on
// at most max_tokens chunks (MaxTokens when the request set none): up to
// TokenSlack more are read and dropped, and beyond them, or beyond a byte
// cap (CallOptions.MaxBytes), it resets the stream, which cancels the
// remote work, and returns ErrAnswerTooLong; a dispatch ends the answer
// there with finish reason length.
//
// The serving side knows who asks: the caller's peer ID, from the secure
// channel, travels to the backend in the context (inference.Caller), to an
// admission hook before the backend runs (ServiceConfig.Admit) and to a
// completion hook after every call (ServiceConfig.Complete).
package infer
