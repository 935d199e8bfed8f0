package experts

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	mh "github.com/multiformats/go-multihash"
)

// Kinds of DHT content keys.
const (
	KindDomain = "domain"
	KindModel  = "model"
	KindShard  = "shard"
)

// Key is the DHT content key under which providers of kind/name are found:
// a CIDv1 (raw codec) of SHA-256 over "mwpeer/<kind>/<name>".
func Key(kind, name string) cid.Cid {
	sum := sha256.Sum256([]byte("mwpeer/" + kind + "/" + name))
	h, err := mh.Encode(sum[:], mh.SHA2_256)
	if err != nil { // only for an unknown hash code, and SHA2_256 is known
		panic(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

// FindProviders returns up to max peers that provide kind/name on the DHT.
func FindProviders(ctx context.Context, r routing.ContentRouting, kind, name string, max int) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for ai := range r.FindProvidersAsync(ctx, Key(kind, name), max) {
		out = append(out, ai)
	}
	if len(out) == 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("find providers of %s/%s: %w", kind, name, ctx.Err())
	}
	return out, nil
}

// Advertiser keeps this peer listed on the DHT as a provider of its keys:
// it provides each key when it appears, retries with backoff while the
// routing table is empty, and re-provides well within the records' 48-hour
// validity.
type Advertiser struct {
	r         routing.ContentRouting
	log       *slog.Logger
	changed   chan struct{}
	Reprovide time.Duration

	mu       sync.Mutex
	keys     []string // "kind/name"
	provided map[string]time.Time
}

// NewAdvertiser returns an advertiser over r; call Run to start it.
func NewAdvertiser(r routing.ContentRouting, log *slog.Logger) *Advertiser {
	if log == nil {
		log = slog.Default()
	}
	return &Advertiser{r: r, log: log, changed: make(chan struct{}, 1), Reprovide: 12 * time.Hour, provided: make(map[string]time.Time)}
}

// Set replaces the keys this peer provides, each "kind/name".
func (a *Advertiser) Set(keys []string) {
	keys = slices.Clone(keys)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	a.mu.Lock()
	a.keys = keys
	a.mu.Unlock()
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// Provided reports whether kind/name was provided successfully.
func (a *Advertiser) Provided(kind, name string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.provided[kind+"/"+name]
	return ok
}

// Run provides keys until ctx ends.
func (a *Advertiser) Run(ctx context.Context) {
	backoff := time.Second
	for {
		a.mu.Lock()
		keys := slices.Clone(a.keys)
		a.mu.Unlock()
		failed := false
		for _, k := range keys {
			a.mu.Lock()
			at, ok := a.provided[k]
			a.mu.Unlock()
			if ok && time.Since(at) < a.Reprovide {
				continue
			}
			kind, name, _ := cut(k)
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := a.r.Provide(pctx, Key(kind, name), true)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				a.log.Debug("DHT provide failed; will retry", "key", k, "err", err)
				failed = true
				continue
			}
			a.mu.Lock()
			a.provided[k] = time.Now()
			a.mu.Unlock()
		}
		wait := time.Hour
		if failed {
			wait, backoff = backoff, min(backoff*2, time.Minute)
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-a.changed:
		case <-time.After(wait):
		}
	}
}

func cut(k string) (kind, name string, ok bool) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

// ServingKeys are the content keys a peer serving models provides: each
// domain it declares and each model (none when it serves no model).
func ServingKeys(domains []string, models []Model) []string {
	if len(models) == 0 {
		return nil
	}
	keys := make([]string, 0, len(domains)+len(models))
	for _, d := range domains {
		keys = append(keys, KindDomain+"/"+d)
	}
	for _, m := range models {
		keys = append(keys, KindModel+"/"+m.Name)
	}
	return keys
}
