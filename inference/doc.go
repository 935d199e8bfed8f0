// Package inference owns running a prompt: the API types of a request and its
// answer, the backends that generate tokens (an Ollama client and a synthetic
// backend for measuring the overlay itself), and dispatch over several experts
// at once with the fastest, confidence and blend strategies and mid-stream
// failover. The /mwpeer/infer/1.0.0 protocol that carries a request to a
// remote peer lives in package infer below it, with its own wire schema.
//
// It does not choose experts (package routing does) and does not speak HTTP
// (package api does); callers hand Dispatch the targets they picked, and map
// the sentinel errors (ErrUnknownModel, ErrBusy, ErrRefused, ErrNoExpert,
// ErrInvalidRequest) to their edge. Work that came from another peer carries
// that peer's ID in its context (see Caller).
//
// # Continuation
//
// Failover relies on Request.Continue: the text already delivered to the
// client. A backend must produce only what follows it, so that the client sees
// one uninterrupted answer. The synthetic backend resumes its deterministic
// sequence; the Ollama backend renders the prompt with the model's template,
// appends the delivered text and continues with a raw generate (see Ollama).
package inference
