package membership

import (
	"crypto/ed25519"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// maxCached bounds the verified certificates a Checker remembers; past it
// the cache starts over (a swarm has far fewer members than this).
const maxCached = 4096

// Checker admits the members certified by a set of trusted issuers.
type Checker struct {
	// Now is the clock of the window checks (nil: time.Now); tests set it.
	Now func() time.Time

	issuers map[string]bool // string(public key)

	mu    sync.Mutex
	cache map[string]verdict // by the certificate's bytes
}

// verdict is what is known of a certificate whatever the time and holder:
// its decoding and whether a trusted issuer signed it.
type verdict struct {
	cert *Cert
	err  error
}

// NewChecker trusts the given issuers' public keys.
func NewChecker(issuers []ed25519.PublicKey) *Checker {
	m := make(map[string]bool, len(issuers))
	for _, k := range issuers {
		m[string(k)] = true
	}
	return &Checker{issuers: m, cache: make(map[string]verdict)}
}

// Trusts reports whether pub is a trusted issuer.
func (k *Checker) Trusts(pub ed25519.PublicKey) bool { return k.issuers[string(pub)] }

// Check returns nil when cert is a certificate for id from a trusted
// issuer, valid now. The signature check is cached by the certificate's
// bytes; the subject and the window are checked at every call.
func (k *Checker) Check(id peer.ID, cert []byte) error {
	if len(cert) == 0 {
		return ErrNoCert
	}
	if len(cert) > MaxSize {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(cert), MaxSize)
	}
	k.mu.Lock()
	v, ok := k.cache[string(cert)]
	k.mu.Unlock()
	if !ok {
		v = k.verify(cert)
		k.mu.Lock()
		if len(k.cache) >= maxCached {
			clear(k.cache)
		}
		k.cache[string(cert)] = v
		k.mu.Unlock()
	}
	if v.err != nil {
		return v.err
	}
	now := time.Now
	if k.Now != nil {
		now = k.Now
	}
	return v.cert.Valid(id, now())
}

func (k *Checker) verify(cert []byte) verdict {
	c, err := Parse(cert)
	if err != nil {
		return verdict{err: err}
	}
	if !k.Trusts(c.Issuer) {
		return verdict{err: fmt.Errorf("%w: %s", ErrUntrustedIssuer, FormatIssuer(c.Issuer))}
	}
	if err := c.VerifySignature(); err != nil {
		return verdict{err: err}
	}
	return verdict{cert: c}
}
