package experts

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
	return keyOf("mwpeer/" + kind + "/" + name)
}

// SaltedKey is the key under which the peers of announcement shard shard
// among 2^bits provide kind/name: SHA-256 over
// "mwpeer/<kind>@<bits>/<shard>/<name>", and Key itself when bits is 0.
//
// Why salt: kad-dht stores every provider of a key on the ~20 DHT peers
// closest to it and answers a GET_PROVIDERS with all of them in one
// message (records/providers_manager.go and handleGetProviders in
// go-libp2p-kad-dht v0.36.0; internal/scale models it), so in a swarm of 100,000 the
// key of a domain every peer declares would make those 20 a hot spot,
// and its answer would pass the 4 MiB a libp2p message may have. Salted
// by announcement shard, a key has at most a shard's peers as providers,
// and the keys of one name land on 2^bits different sets of DHT peers.
//
// The salt sits next to the kind, which never holds '@' or '/', so that no
// model name (they may hold '/': "hf.co/org/repo:q4") makes one key look
// like another.
func SaltedKey(kind, name string, bits, shard int) cid.Cid {
	if bits <= 0 {
		return Key(kind, name)
	}
	return keyOf(fmt.Sprintf("mwpeer/%s@%d/%d/%s", kind, bits, shard, name))
}

func keyOf(text string) cid.Cid {
	sum := sha256.Sum256([]byte(text))
	h, err := mh.Encode(sum[:], mh.SHA2_256)
	if err != nil { // only for an unknown hash code, and SHA2_256 is known
		panic(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

// Salted says whether keys of kind are salted by announcement shard: those
// of domains and models, which a large share of a swarm may provide. Keys
// of expert shards (KindShard, by hash) and of announcement shards
// (KindAnnounceShard, one per shard already) have few providers each (a
// shard's replicas, a shard's peers) and stay as they are: salting them
// would make a lookup try many keys to find a few peers. The MoE manifests
// a sharding peer provides as KindModel/<manifest ID> go through
// Advertiser.Set's plain keys for the same reason.
func Salted(kind string) bool { return kind == KindDomain || kind == KindModel }

// Widths are the announcement shard widths (bits) a peer provides its
// salted keys under, the current one first. Outside a change of width it
// is one width; while the swarm's width changes it is the new one and the
// previous one, so that peers still on either find this one. Lookups use
// the first. A nil Widths is the unsharded swarm, []int{0}: unsalted keys,
// as before salting existed.
//
// The contract for whoever supplies it (mwpeer wires the static
// Config.AnnounceShardBits by default; the automatic width replaces it with
// the gossip's view): it is called often (on every lookup, and by the
// Advertiser every WidthsPoll) from any goroutine, so it must be cheap and
// safe for concurrent use and must not block; values outside 0 to
// MaxAnnounceShardBits are ignored, and duplicates count once. After a
// change, Advertiser.WidthsChanged provides the new keys at once rather
// than at the next poll.
type Widths func() []int

// current returns the usable widths of w, the first first; never empty.
func (w Widths) current() []int {
	if w == nil {
		return []int{0}
	}
	var out []int
	for _, b := range w() {
		if b >= 0 && b <= MaxAnnounceShardBits && !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return []int{0}
	}
	return out
}

// StaticWidths is Widths for a swarm whose width does not change.
func StaticWidths(bits int) Widths { return func() []int { return []int{bits} } }

// FindProviders returns up to max peers that provide kind/name on the DHT
// under its unsalted key.
func FindProviders(ctx context.Context, r routing.ContentRouting, kind, name string, max int) ([]peer.AddrInfo, error) {
	return findKey(ctx, r, Key(kind, name), kind+"/"+name, max)
}

func findKey(ctx context.Context, r routing.ContentRouting, key cid.Cid, what string, max int) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for ai := range r.FindProvidersAsync(ctx, key, max) {
		out = append(out, ai)
	}
	if len(out) == 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("find providers of %s: %w", what, ctx.Err())
	}
	return out, nil
}

// Defaults of a Finder.
const (
	// DefaultLookupParallel salted keys are looked up at once: each is its
	// own Kademlia lookup with its own α queries in flight, so a few keep a
	// lookup quick without flooding the DHT.
	DefaultLookupParallel = 4
	// DefaultLookupKeys bounds the salted keys one lookup tries: with
	// shards of up to 2,000 peers a model served in this many other shards
	// is found; a rarer one beyond this many shards is found by chance
	// (MaxKeys/(2^bits-1)), and the caller's deadline bounds the time.
	DefaultLookupKeys = 32
)

// Finder finds the providers of content keys, salted ones (Salted) across
// the other announcement shards.
type Finder struct {
	Routing routing.ContentRouting
	Self    peer.ID
	Widths  Widths // nil: unsalted keys
	// Parallel salted keys are looked up at once (0:
	// DefaultLookupParallel), MaxKeys at most in all (0: DefaultLookupKeys).
	Parallel, MaxKeys int
}

// Find returns up to max providers of kind/name, other than Self. Keys of
// kinds Salted, at a width of N > 0 bits (the first of Widths), are looked
// up under the unsalted key first, where a rare name's few providers are
// (DefaultFewProviders), then, when it has none, under the salted keys
// of the other 2^N-1 shards (this peer's own
// shard's providers are in its catalog already), Parallel at a time, in a
// random order, so that no shard's key takes every lookup, until MaxKeys
// keys were tried or ctx ends, or providers were found: once one is, no
// further key is started (those under way finish, up to max providers),
// since a few candidates serve a prompt and every key is a Kademlia
// lookup of its own. Other kinds, and every kind at width 0, are one
// lookup of the unsalted key.
func (f Finder) Find(ctx context.Context, kind, name string, max int) ([]peer.AddrInfo, error) {
	if max <= 0 {
		return nil, nil
	}
	bits := f.Widths.current()[0]
	if !Salted(kind) || bits == 0 {
		found, err := FindProviders(ctx, f.Routing, kind, name, max+1)
		return f.others(found, max), err
	}
	// A rare name is under its unsalted key too (DefaultFewProviders).
	if few, err := FindProviders(ctx, f.Routing, kind, name, max+1); len(f.others(few, max)) > 0 || err != nil {
		return f.others(few, max), err
	}
	keys := f.lookupKeys(kind, name, bits)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		found []peer.AddrInfo
		seen  = map[peer.ID]bool{f.Self: true}
	)
	next := make(chan cid.Cid)
	var wg sync.WaitGroup
	for range min(cmp0(f.Parallel, DefaultLookupParallel), len(keys)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range next {
				mu.Lock()
				some := len(found) > 0
				mu.Unlock()
				if some { // found meanwhile: start no further key
					continue
				}
				for ai := range f.Routing.FindProvidersAsync(lctx, key, max+1) {
					mu.Lock()
					if !seen[ai.ID] && len(found) < max {
						seen[ai.ID] = true
						found = append(found, ai)
					}
					full := len(found) >= max
					mu.Unlock()
					if full {
						cancel() // the other keys' lookups end too
					}
				}
			}
		}()
	}
feed:
	for _, k := range keys {
		select {
		case next <- k:
		case <-lctx.Done():
			break feed
		}
		mu.Lock()
		some := len(found) > 0
		mu.Unlock()
		if some {
			break
		}
	}
	close(next)
	wg.Wait()
	if len(found) == 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("find providers of %s/%s in %d shards: %w", kind, name, 1<<bits, ctx.Err())
	}
	return found, nil
}

// lookupKeys are the salted keys of kind/name of the shards other than
// Self's at bits, in a random order, at most MaxKeys.
func (f Finder) lookupKeys(kind, name string, bits int) []cid.Cid {
	own, n := AnnounceShard(f.Self, bits), cmp0(f.MaxKeys, DefaultLookupKeys)
	var shards []int
	if others := 1<<bits - 1; others <= 4*n {
		for s := range 1 << bits {
			if s != own {
				shards = append(shards, s)
			}
		}
		rand.Shuffle(len(shards), func(i, j int) { shards[i], shards[j] = shards[j], shards[i] })
		shards = shards[:min(len(shards), n)]
	} else { // many shards: draw n distinct without listing them all
		picked := map[int]bool{own: true}
		for len(shards) < n {
			if s := rand.IntN(1 << bits); !picked[s] {
				picked[s] = true
				shards = append(shards, s)
			}
		}
	}
	keys := make([]cid.Cid, len(shards))
	for i, s := range shards {
		keys[i] = SaltedKey(kind, name, bits, s)
	}
	return keys
}

// others is found without Self, at most max.
func (f Finder) others(found []peer.AddrInfo, max int) []peer.AddrInfo {
	found = slices.DeleteFunc(found, func(ai peer.AddrInfo) bool { return ai.ID == f.Self })
	return found[:min(len(found), max)]
}

// cmp0 is v, or def when v is not positive.
func cmp0(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// DefaultWidthsPoll is how often an Advertiser reads its Widths for a
// change nobody announced with WidthsChanged.
const DefaultWidthsPoll = 10 * time.Second

// Advertiser keeps this peer listed on the DHT as a provider of its keys:
// it provides each key when it appears, retries with backoff while the
// routing table is empty, and re-provides well within the records' 48-hour
// validity. Salted keys are provided under each of Widths (SaltedKey at
// this peer's shard), and again when the widths change; the records of
// keys it no longer provides expire on the DHT (kad-dht has no withdrawal).
type Advertiser struct {
	r         routing.ContentRouting
	log       *slog.Logger
	changed   chan struct{}
	Reprovide time.Duration
	// Self is this peer, whose announcement shard salts its keys; Widths
	// the widths to provide them under (nil: unsalted), read every
	// WidthsPoll (0: DefaultWidthsPoll). Set them before Run.
	Self       peer.ID
	Widths     Widths
	WidthsPoll time.Duration
	// Few: at widths > 0 a salted name is provided under its unsalted Key
	// too while fewer than Few other peers provide it there (0:
	// DefaultFewProviders; < 0: never). See DefaultFewProviders.
	Few int

	mu       sync.Mutex
	plain    []string // "kind/name", under Key
	salted   []string // "kind/name", under SaltedKey at each width
	provided map[cid.Cid]time.Time
	full     map[cid.Cid]time.Time // unsalted keys found with Few providers, when
}

// DefaultFewProviders bounds the providers of a name's unsalted key in a
// sharded swarm. Salting alone would leave a rare model (one server, in
// one shard) behind one key among 2^bits: a lookup would try up to
// DefaultLookupKeys of them and, past 33 shards, find it by chance only.
// So a peer also provides the unsalted key while a lookup of it finds
// fewer than this many other providers: a rare name is found there in one
// O(log N) lookup, and a popular one's unsalted key stays small (the peers
// that check at once can pass the bound together; those that find it full
// at their next re-provide stop, and their records expire in 48 hours).
const DefaultFewProviders = 16

// NewAdvertiser returns an advertiser over r; call Run to start it.
func NewAdvertiser(r routing.ContentRouting, log *slog.Logger) *Advertiser {
	if log == nil {
		log = slog.Default()
	}
	return &Advertiser{r: r, log: log, changed: make(chan struct{}, 1), Reprovide: 12 * time.Hour,
		provided: make(map[cid.Cid]time.Time), full: make(map[cid.Cid]time.Time)}
}

// Set replaces the keys this peer provides, each "kind/name": plain ones
// under their unsalted Key whatever the width (expert shards, MoE
// manifests, announcement shards), salted ones (ServingKeys: its domains
// and models) under SaltedKey at each of Widths.
func (a *Advertiser) Set(plain, salted []string) {
	a.mu.Lock()
	a.plain, a.salted = sorted(plain), sorted(salted)
	a.mu.Unlock()
	a.wake()
}

// WidthsChanged tells the advertiser that Widths changed, so that it
// provides the keys of the new widths now rather than within WidthsPoll.
func (a *Advertiser) WidthsChanged() { a.wake() }

func (a *Advertiser) wake() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

func sorted(keys []string) []string {
	keys = slices.Clone(keys)
	slices.Sort(keys)
	return slices.Compact(keys)
}

// Provided reports whether kind/name was provided successfully under its
// unsalted key.
func (a *Advertiser) Provided(kind, name string) bool { return a.providedKey(Key(kind, name)) }

// ProvidedAt reports whether kind/name was provided successfully under its
// salted key at width bits (this peer's shard; the unsalted key at 0).
func (a *Advertiser) ProvidedAt(kind, name string, bits int) bool {
	return a.providedKey(SaltedKey(kind, name, bits, AnnounceShard(a.Self, bits)))
}

// Crowded reports whether a salted kind/name was not provided under its
// unsalted key because Few others provide it there.
func (a *Advertiser) Crowded(kind, name string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.full[Key(kind, name)]
	return ok
}

func (a *Advertiser) providedKey(k cid.Cid) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.provided[k]
	return ok
}

// want is a key to provide: its "kind/name@width" for logs, and whether
// it is a salted name's unsalted key, provided while few others do.
type want struct {
	what string
	few  bool
}

// target are the keys to provide now.
func (a *Advertiser) target(widths []int) map[cid.Cid]want {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[cid.Cid]want, len(a.plain)+(len(widths)+1)*len(a.salted))
	for _, k := range a.plain {
		kind, name, _ := cut(k)
		out[Key(kind, name)] = want{what: k}
	}
	for _, k := range a.salted {
		kind, name, _ := cut(k)
		for _, w := range widths {
			out[SaltedKey(kind, name, w, AnnounceShard(a.Self, w))] = want{what: fmt.Sprintf("%s@%d", k, w)}
		}
		if !slices.Contains(widths, 0) && a.Few >= 0 {
			out[Key(kind, name)] = want{what: k + "@few", few: true}
		}
	}
	// Forget keys no longer wanted: provided again if they return (a
	// width that comes back), their records left to expire.
	for c := range a.provided {
		if _, ok := out[c]; !ok {
			delete(a.provided, c)
		}
	}
	for c := range a.full {
		if _, ok := out[c]; !ok {
			delete(a.full, c)
		}
	}
	return out
}

// Run provides keys until ctx ends.
func (a *Advertiser) Run(ctx context.Context) {
	backoff := time.Second
	poll := time.NewTicker(cmpDur(a.WidthsPoll, DefaultWidthsPoll))
	defer poll.Stop()
	for {
		widths := a.Widths.current()
		failed := false
		for key, w := range a.target(widths) {
			a.mu.Lock()
			at, ok := a.provided[key]
			fullAt, full := a.full[key]
			a.mu.Unlock()
			if (ok && time.Since(at) < a.Reprovide) || (full && time.Since(fullAt) < a.Reprovide) {
				continue
			}
			if w.few && a.crowded(ctx, key) {
				a.log.Debug("unsalted key has enough providers; salted keys only", "key", w.what)
				a.mu.Lock()
				delete(a.provided, key)
				a.full[key] = time.Now()
				a.mu.Unlock()
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := a.r.Provide(pctx, key, true)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				a.log.Debug("DHT provide failed; will retry", "key", w.what, "err", err)
				failed = true
				continue
			}
			a.mu.Lock()
			a.provided[key] = time.Now()
			a.mu.Unlock()
		}
		wait := time.Hour
		if failed {
			wait, backoff = backoff, min(backoff*2, time.Minute)
		} else {
			backoff = time.Second
		}
		if !a.sleep(ctx, wait, poll.C, widths) {
			return
		}
	}
}

// crowded says whether Few other peers provide key already. A lookup that
// fails counts what it found: better one record too many than a rare
// name nobody finds.
func (a *Advertiser) crowded(ctx context.Context, key cid.Cid) bool {
	few := cmp0(a.Few, DefaultFewProviders)
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n := 0
	for ai := range a.r.FindProvidersAsync(lctx, key, few+1) {
		if ai.ID != a.Self {
			n++
		}
	}
	return n >= few
}

// sleep waits for wait, a Set or WidthsChanged, or a poll that finds the
// widths no longer what they were; false when ctx ended.
func (a *Advertiser) sleep(ctx context.Context, wait time.Duration, poll <-chan time.Time, widths []int) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-a.changed:
			return true
		case <-timer.C:
			return true
		case <-poll:
			if !slices.Equal(a.Widths.current(), widths) {
				return true
			}
		}
	}
}

func cmpDur(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
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
// domain it declares and each model (none when it serves no model). They
// are salted ones (Advertiser.Set).
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
