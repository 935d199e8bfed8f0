package inference

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"
)

type callerKey struct{}

// WithCaller returns ctx carrying the peer that asked for the work. The
// serving side of the infer protocol sets it from the secure channel, never
// from anything the caller says, so a backend, an admission policy or a
// ledger can know who is served.
func WithCaller(ctx context.Context, p peer.ID) context.Context {
	return context.WithValue(ctx, callerKey{}, p)
}

// Caller returns the peer set by WithCaller; ok is false for work that did
// not come from another peer (the local user, a test).
func Caller(ctx context.Context) (p peer.ID, ok bool) {
	p, ok = ctx.Value(callerKey{}).(peer.ID)
	return p, ok && p != ""
}

type credentialsKey struct{}

// Credentials are what a caller presents to be served beyond what the
// serving peer's policy gives anyone: a consent token the serving peer
// signed for it (Grant) and a membership certificate from an issuer both
// trust (Cert). Both are checked against the caller's peer ID by the
// serving peer; they are opaque bytes here.
type Credentials struct {
	Grant []byte
	Cert  []byte
}

// MaxCredential caps each credential on the wire.
const MaxCredential = 2048

// WithCredentials returns ctx carrying the credentials a caller presented.
func WithCredentials(ctx context.Context, c Credentials) context.Context {
	return context.WithValue(ctx, credentialsKey{}, c)
}

// CredentialsOf returns the credentials set by WithCredentials (zero when
// none were presented).
func CredentialsOf(ctx context.Context) Credentials {
	c, _ := ctx.Value(credentialsKey{}).(Credentials)
	return c
}
