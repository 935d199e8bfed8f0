// Package consent decides what this peer serves to whom: the policy file a
// volunteer writes (which models are shared, who may use them, per-peer
// limits, hours of service, what else the peer offers), the consent tokens
// it signs for particular peers, and the Enforcer that applies both on the
// serving path.
//
// A refusal is inference.ErrConsentRefused (not allowed) or
// inference.ErrQuotaExceeded (allowed, but a limit is used up): both wrap
// inference.ErrRefused, travel as their own wire codes, and make the asking
// peer's dispatch ask another expert without counting it against this peer.
//
// The package knows nothing of the ledger or of membership certificates: the
// Enforcer asks hooks for a caller's balance and membership. It applies only
// to work asked by other peers; the local user is never refused by it.
package consent
