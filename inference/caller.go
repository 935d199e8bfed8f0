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
