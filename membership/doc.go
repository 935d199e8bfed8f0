// Package membership owns the certificates of a certified swarm: an
// operator's Ed25519 key signs, for one peer ID and a window of time, that
// the peer is a member; peers that trust the operator's public key serve and
// route to members only.
//
// A certificate is a small versioned binary form (see Issue for the layout),
// carried as base64 text by people and as bytes in announcements and infer
// requests. Checker verifies a certificate against a set of trusted issuers,
// caching the signature check by the certificate's bytes and checking the
// window at every use.
//
// It knows nothing of inference, gossip or the wire: callers decide what a
// refusal means (the peer maps every error here to a consent refusal).
package membership
