// Package expert is the /mwpeer/expert/1.0.0 protocol: it carries the rows a
// forward pass routed to one expert of a Mixture-of-Experts model to a peer
// hosting that expert and brings the expert's output back. Server answers
// expert calls for the experts this peer hosts (each computed by an Engine,
// the engine's *llama.Expert); Client keeps a few reusable streams per
// remote peer and makes one call per stream at a time. Which host to ask,
// failing over to another and checking one host's answer against another's
// are package moe's business.
//
// The wire format of /mwpeer/expert/1.0.0 (ID) is binary. A stream carries
// calls one after the other:
//
//	client -> server: header, then rows × dim little-endian float32
//	server -> client: status byte, message length (uint16 LE), message,
//	                  then, for StatusOK, rows × dim little-endian float32
//
// The header is 52 bytes: the magic "mwx1", the model (its 32-byte ID, a
// ModelKey), then layer, expert, row count and row length as uint32 LE.
// Both sides cap sizes (MaxRows, MaxDim, MaxPayload, a 1 KiB message), and
// every call has a deadline. The client reads an answer into the rows the
// request had, exactly rows × dim values, and rejects one holding a NaN or
// an infinity (ErrNotFinite: the stream is dropped and the call is neither
// counted nor metered). After a busy or failed answer the stream stays
// in step and carries the next call; after refusing a call (not hosted, bad
// request) the server closes it. A RemoteError (a status other than
// StatusOK) unwraps to inference.ErrBusy for busy and to
// inference.ErrInvalidRequest for a bad request.
//
// The server puts each stream in the ServiceName resource scope and reserves
// a call's rows, in and out, before reading them; a call the resource manager
// will not budget is answered busy. Its Admit hook decides, knowing the
// caller from the secure channel, whether to compute a call. A Client opens
// streams only over direct connections unless its Prepare hook (the relay
// policy) allows a limited one.
//
// Both ends count the calls answered with rows in a tally.Meter, per peer
// and model ID: the Server once it has sent the answer, per caller; the
// Client once it has read it, per host. Each call counts one call, its rows
// and rows × row length values (receipt.ExpertFlops turns values into flops
// with the experts' hidden size). Package tally settles the two counts.
package expert
