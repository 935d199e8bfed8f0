// Package moe runs the experts of a Mixture-of-Experts model across the
// swarm. The peer that holds a model's dense shard runs the forward pass
// (attention, norms and every layer's gate); for each layer it sends the rows
// routed to an expert to a peer hosting that expert over
// /mwpeer/expert/1.0.0, all chosen experts of the layer at once, and sums the
// answers with the gate weights.
//
// Server answers expert calls for the experts this peer hosts. Client keeps
// a few reusable streams per remote peer and makes one call per stream at a
// time. Experts implements llama.Experts for one model: it runs an expert in
// this process when the peer holds it, otherwise asks the best-ranked live
// host and fails over to the next replica on error or timeout. A call that no
// host can answer fails with ErrNoHost, never with a wrong answer.
// LoadDense and LoadExpert build the engine's model and experts from the
// shards a shard.Store verified.
//
// The wire format of /mwpeer/expert/1.0.0 (ID) is binary: a fixed header
// naming the model (its 32-byte ID), the layer, the expert, the row count and
// the row length, followed by the rows as little-endian float32; the answer
// is a status byte, an optional message, and the rows. Both sides cap sizes,
// and every call has a deadline. The server puts each stream in the
// ServiceName resource scope and reserves a call's rows, in and out, before
// reading them; a call the resource manager will not budget is answered busy.
// A Client opens streams only over direct connections unless its Prepare
// hook (the relay policy) allows a limited one.
package moe
