package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/errgroup"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference/tally"
	"github.com/mwpeer/mwpeer/internal/wire"
	"github.com/mwpeer/mwpeer/receipt"
)

// Fetcher downloads manifests and shards from peers into a Store. Pieces of
// a shard are spread over its sources, each source's own share first (piece
// i goes to source i mod n) and then whatever is left; every piece is checked
// against the manifest as it arrives. A source that sends a bad piece, fails
// or stalls is dropped for the rest of the Fetch and its pieces are fetched
// from the others. Verified pieces are kept in the store's partial files
// (shard.Store.OpenPartial), so a fetch that is interrupted resumes where it
// stopped.
//
// Set Host, Store and Sources; the other fields are optional. A Fetcher may
// be used for several fetches at once.
type Fetcher struct {
	Host  host.Host
	Store *shard.Store
	// Sources returns peers that may hold hash (a shard hash or a model ID).
	// The host must be able to dial them (addresses in its peerstore).
	Sources func(ctx context.Context, hash string) []peer.ID
	// Progress, if set, is called after each verified piece, when a shard
	// completes and when a source is dropped; calls do not overlap.
	Progress func(Progress)

	// Window is the number of requests in flight per source and shard (default 2).
	Window int
	// Parallel is the number of shards fetched at once (default 4).
	Parallel int
	// Timeout bounds each request: a source that has not sent a whole piece
	// by then is dropped as stalled (default 30s).
	Timeout time.Duration
	// BusyFor is how long a source may answer busy, with nothing served in
	// between, before it is given up for the shard (default 2 min: longer
	// than a stream lives on a seeder, ServerConfig.MaxStreamLife, so slots
	// that strangers hold free up before a fetch gives up).
	BusyFor time.Duration
	// MinFree is the free disk a Fetch leaves in the store's first
	// directory (default 256 MiB): a Fetch that would leave less fails with
	// shard.ErrNoSpace before it grows any file. FreeSpace reads the free
	// disk (nil: shard.FreeSpace).
	MinFree   int64
	FreeSpace func(dir string) (int64, error)

	// Meter counts the verified bytes received, per source, model "": a
	// verified piece, or a request of a manifest that hashed right, is a
	// call. Nil: the Fetcher makes one on first use.
	Meter *tally.Meter
	// Payer, if set, settles with the sources (see Settle). Nil: bytes are
	// counted, never settled.
	Payer *tally.Payer

	once  sync.Once
	mu    sync.Mutex
	using map[peer.ID]int // fetches (and manifest fetches) using each source
}

func (f *Fetcher) meter() *tally.Meter {
	f.once.Do(func() {
		if f.Meter == nil {
			f.Meter = tally.NewMeter(0)
		}
	})
	return f.Meter
}

// use notes that one more operation fetches from p.
func (f *Fetcher) use(p peer.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.using == nil {
		f.using = make(map[peer.ID]int)
	}
	f.using[p]++
}

// done notes that an operation stopped fetching from the sources it used
// and settles with each that no other operation uses, so that neither side
// has bytes in flight: what the fetcher verified from it since the last
// settlement, proposed by Payer. A source dropped for what it sent is
// proposed what was verified from it, if only zero bytes: its own count of
// the bad bytes makes the tally disputed rather than left for later. It
// waits for the settlements, each bounded by the Payer's timeout, even when
// ctx has ended: the bytes were received.
func (f *Fetcher) done(ctx context.Context, used map[peer.ID]bool, dropped map[peer.ID]error) {
	var idle []peer.ID
	f.mu.Lock()
	for p := range used {
		if f.using[p]--; f.using[p] <= 0 {
			delete(f.using, p)
			idle = append(idle, p)
		}
	}
	f.mu.Unlock()
	if f.Payer == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for _, p := range idle {
		w, start, ok := f.meter().Take(p, "")
		if !ok && dropped[p] != nil {
			w, start, ok = tally.Work{}, time.Now(), true
		}
		if !ok {
			continue
		}
		wg.Go(func() {
			_, err := f.Payer.Settle(ctx, receipt.Tally{Kind: receipt.KindShard, Worker: p, Calls: w.Calls, Bytes: w.Bytes, Start: start, End: time.Now()})
			if errors.Is(err, tally.ErrNotProposed) && !w.IsZero() {
				f.meter().Add(p, "", w) // still owed: next time
			}
		})
	}
	wg.Wait()
}

// Progress reports how a Fetch goes.
type Progress struct {
	Model     string      // model ID
	Shard     shard.Shard // the shard this report is about
	Done      int64       // bytes of Shard verified so far (Shard.Size when complete)
	TotalDone int64       // bytes verified over every shard of the Fetch
	Total     int64       // bytes of every shard of the Fetch
	Received  int64       // bytes received from peers by this Fetch, rejected ones included

	// Dropped, when set, is a source dropped for the rest of the Fetch, and
	// Err says why.
	Dropped peer.ID
	Err     error
}

// ErrNoSource is wrapped when no source is left for a shard or manifest.
var ErrNoSource = errors.New("no source")

func (f *Fetcher) timeout() time.Duration {
	if f.Timeout > 0 {
		return f.Timeout
	}
	return 30 * time.Second
}

func (f *Fetcher) busyFor() time.Duration {
	if f.BusyFor > 0 {
		return f.BusyFor
	}
	return 2 * time.Minute
}

// DefaultMinFree is Fetcher.MinFree's default.
const DefaultMinFree = 256 << 20

// checkSpace fails with shard.ErrNoSpace when the store's disk cannot take
// todo, shards of m, and keep MinFree free.
func (f *Fetcher) checkSpace(m *shard.Manifest, todo []shard.Shard) error {
	var need int64
	for _, sh := range todo {
		need += f.Store.Grow(sh)
	}
	if need == 0 {
		return nil
	}
	free := f.FreeSpace
	if free == nil {
		free = shard.FreeSpace
	}
	dir := f.Store.Dirs()[0]
	have, err := free(dir)
	if errors.Is(err, errors.ErrUnsupported) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fetch %s: %w", m.ID(), err)
	}
	keep := f.MinFree
	if keep <= 0 {
		keep = DefaultMinFree
	}
	if need > have-keep {
		return fmt.Errorf("fetch %s (%s): %d shards need %s more in %s, which has %s free and keeps %s: %w",
			m.Name, m.ID(), len(todo), bytesText(need), dir, bytesText(have), bytesText(keep), shard.ErrNoSpace)
	}
	return nil
}

// bytesText writes n in binary units.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func (f *Fetcher) sources(ctx context.Context, h string) []peer.ID {
	if f.Sources == nil {
		return nil
	}
	var out []peer.ID
	seen := map[peer.ID]bool{f.Host.ID(): true}
	for _, p := range f.Sources(ctx, h) {
		if !seen[p] && p != "" {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// FetchManifest returns the manifest of model id, from the store or else from
// the first source that sends bytes hashing to id.
func (f *Fetcher) FetchManifest(ctx context.Context, id string) (*shard.Manifest, error) {
	if !shard.ValidHash(id) {
		return nil, fmt.Errorf("model ID %.80q is not a lowercase hex SHA-256", id)
	}
	if m, ok := f.Store.Manifest(id); ok {
		return m, nil
	}
	used, bad := make(map[peer.ID]bool), make(map[peer.ID]error)
	defer func() { f.done(ctx, used, bad) }()
	var errs []error
	for _, p := range f.sources(ctx, id) {
		used[p] = true
		f.use(p)
		raw, requests, err := f.getManifest(ctx, p, id)
		if err == nil {
			if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != id {
				err = fmt.Errorf("peer %s sent a manifest that hashes to %x", p.ShortString(), sum)
				bad[p] = err
			}
		}
		if err == nil {
			f.meter().Add(p, "", tally.Work{Calls: uint64(requests), Bytes: uint64(len(raw))})
			return f.Store.AddManifest(raw)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("fetch manifest %s: %w", id, errors.Join(append([]error{ErrNoSource}, errs...)...))
}

// getManifest returns the bytes p sends for manifest id, and the requests
// that brought some.
func (f *Fetcher) getManifest(ctx context.Context, p peer.ID, id string) ([]byte, int, error) {
	c, err := dial(ctx, f.Host, p)
	if err != nil {
		return nil, 0, err
	}
	defer c.close()
	var raw []byte
	requests := 0
	for {
		data, size, err := c.get(ctx, id, int64(len(raw)), MaxLength, f.timeout(), nil)
		if err != nil {
			return nil, 0, err
		}
		if size > shard.MaxManifestSize {
			return nil, 0, fmt.Errorf("peer %s: manifest of %d bytes exceeds the %d-byte cap", p.ShortString(), size, shard.MaxManifestSize)
		}
		if len(data) > 0 {
			requests++
		}
		raw = append(raw, data...)
		if int64(len(raw)) >= size {
			return raw, requests, nil
		}
		if len(data) == 0 {
			return nil, 0, fmt.Errorf("peer %s: empty answer at offset %d of %d", p.ShortString(), len(raw), size)
		}
	}
}

// Fetch downloads the shards of m that the store lacks. It returns when every
// one is stored and verified, or with the first error; what was verified is
// kept for the next attempt. At its end, with a Payer, it settles with each
// source it used that no other fetch of f is using the verified bytes
// received from it (see Payer).
func (f *Fetcher) Fetch(ctx context.Context, m *shard.Manifest, shards []shard.Shard) error {
	ft := &fetch{f: f, m: m, dropped: make(map[peer.ID]error), used: make(map[peer.ID]bool)}
	defer func() { f.done(ctx, ft.used, ft.dropped) }()
	known := make(map[string]shard.Shard, len(m.Shards))
	for _, sh := range m.Shards {
		known[sh.Hash] = sh
	}
	seen := make(map[string]bool)
	var todo []shard.Shard
	for _, sh := range shards {
		if seen[sh.Hash] {
			continue
		}
		k, ok := known[sh.Hash]
		if !ok {
			return fmt.Errorf("fetch: shard %s is not in model %s", sh.Hash, m.ID())
		}
		seen[sh.Hash] = true
		ft.total += k.Size
		todo = append(todo, k)
	}
	if err := f.checkSpace(m, todo); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	parallel := f.Parallel
	if parallel <= 0 {
		parallel = 4
	}
	g.SetLimit(parallel)
	for _, sh := range todo {
		g.Go(func() error { return ft.fetchShard(gctx, sh) })
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return nil
}

// fetch is the state of one Fetch call.
type fetch struct {
	f     *Fetcher
	m     *shard.Manifest
	total int64

	mu        sync.Mutex // guards the fields below and serializes Progress calls
	dropped   map[peer.ID]error
	used      map[peer.ID]bool // sources a worker started on
	totalDone int64
	received  int64
}

func (ft *fetch) isDropped(p peer.ID) bool { return ft.whyDropped(p) != nil }

// use notes that a worker fetches from p.
func (ft *fetch) use(p peer.ID) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if !ft.used[p] {
		ft.used[p] = true
		ft.f.use(p)
	}
}

// whyDropped returns the error p was dropped for, or nil.
func (ft *fetch) whyDropped(p peer.ID) error {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.dropped[p]
}

func (ft *fetch) drop(sh shard.Shard, done int64, p peer.ID, err error) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if _, ok := ft.dropped[p]; ok {
		return
	}
	ft.dropped[p] = err
	ft.report(Progress{Shard: sh, Done: done, Dropped: p, Err: err})
}

// advance records n more bytes of sh verified (done in all) and reports it.
func (ft *fetch) advance(sh shard.Shard, done, n int64) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.totalDone += n
	ft.report(Progress{Shard: sh, Done: done})
}

func (ft *fetch) receive(n int64) {
	ft.mu.Lock()
	ft.received += n
	ft.mu.Unlock()
}

// report calls Progress; ft.mu is held.
func (ft *fetch) report(p Progress) {
	if ft.f.Progress == nil {
		return
	}
	p.Model, p.TotalDone, p.Total, p.Received = ft.m.ID(), ft.totalDone, ft.total, ft.received
	ft.f.Progress(p)
}

// fetchShard fetches one shard into the store's partial/ and moves it into the
// store.
func (ft *fetch) fetchShard(ctx context.Context, sh shard.Shard) error {
	part, err := ft.f.Store.OpenPartial(ctx, ft.m, sh)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", sh, err)
	}
	defer part.Close()
	have, done := part.Verified()
	ft.advance(sh, done, done)
	p := &target{Partial: part, sc: newScheduler(have)}
	if p.sc.remaining > 0 {
		if err := ft.download(ctx, sh, p); err != nil {
			return err
		}
	}
	if err := p.Commit(); err != nil {
		return fmt.Errorf("fetch %s: %w", sh, err)
	}
	return nil
}

// target is a shard being fetched: the store's partial file of it, and the
// scheduler that hands its missing pieces to the workers.
type target struct {
	*shard.Partial
	sc *scheduler
}

// download fetches the pieces p lacks from the shard's sources.
func (ft *fetch) download(ctx context.Context, sh shard.Shard, p *target) error {
	var srcs []peer.ID
	for _, src := range ft.f.sources(ctx, sh.Hash) {
		if !ft.isDropped(src) {
			srcs = append(srcs, src)
		}
	}
	if len(srcs) == 0 {
		return fmt.Errorf("fetch %s (%s): %w", sh, sh.Hash, ErrNoSource)
	}
	window := ft.f.Window
	if window <= 0 {
		window = 2
	}
	var (
		mu      sync.Mutex
		reasons = make(map[peer.ID]error) // sources given up for this shard
	)
	g, gctx := errgroup.WithContext(ctx)
	for k, src := range srcs {
		for range window {
			g.Go(func() error {
				err := ft.worker(gctx, sh, p, k, len(srcs), src)
				var se *sourceError
				if errors.As(err, &se) {
					mu.Lock()
					reasons[src] = se.err
					mu.Unlock()
					return nil
				}
				return err
			})
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if p.sc.left() > 0 {
		var errs []error
		for src, err := range reasons {
			errs = append(errs, fmt.Errorf("%s: %w", src.ShortString(), err))
		}
		return fmt.Errorf("fetch %s (%s): %d pieces left: %w", sh, sh.Hash, p.sc.left(), errors.Join(append([]error{ErrNoSource}, errs...)...))
	}
	return nil
}

// sourceError is a worker's reason to stop using its source.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }

// worker fetches pieces of sh from src (the k-th of n sources) until none is
// left, src is dropped, or a local error occurs (returned as is).
func (ft *fetch) worker(ctx context.Context, sh shard.Shard, p *target, k, n int, src peer.ID) error {
	var c *conn
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	buf := make([]byte, ft.m.PieceSize)
	busy := 0
	var busySince time.Time // of the answers busy in a row
	ft.use(src)
	for {
		if why := ft.whyDropped(src); why != nil {
			// Another worker dropped src: give its reason, not just "dropped".
			return &sourceError{why}
		}
		i, wait := p.sc.take(k, n)
		if i < 0 {
			if wait == nil {
				return nil
			}
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		off, size := ft.m.Piece(sh, i)
		var data []byte
		var err error
		if c == nil {
			c, err = dial(ctx, ft.f.Host, src)
		}
		if err == nil {
			var total int64
			data, total, err = c.get(ctx, sh.Hash, off, size, ft.f.timeout(), buf)
			ft.receive(int64(len(data)))
			if err == nil && (total != sh.Size || int64(len(data)) != size) {
				err = fmt.Errorf("sent %d bytes of a %d-byte file for piece %d (%d bytes of %d)", len(data), total, i, size, sh.Size)
			}
		}
		if err == nil {
			// The store checks the piece against the manifest before it
			// keeps it: a mismatch (shard.ErrCorrupt) is the source's fault,
			// anything else this peer's.
			if err = p.WritePiece(i, data); err != nil && !errors.Is(err, shard.ErrCorrupt) {
				p.sc.put(i, false)
				return fmt.Errorf("fetch %s: %w", sh, err)
			}
		}
		if err != nil {
			p.sc.put(i, false)
			if c != nil {
				c.reset()
				c = nil
			}
			if ctx.Err() != nil {
				return nil
			}
			var re *RemoteError
			if errors.As(err, &re) && re.Code == CodeBusy {
				if busy == 0 {
					busySince = time.Now()
				}
				if time.Since(busySince) < ft.f.busyFor() {
					// Back off 50 ms, 200 ms, 450 ms ... up to 2 s, with jitter.
					busy++
					wait := min(time.Duration(busy*busy)*50*time.Millisecond, 2*time.Second)
					select {
					case <-time.After(wait + rand.N(50*time.Millisecond)):
						continue
					case <-ctx.Done():
						return nil
					}
				}
			}
			if errors.Is(err, shard.ErrNotFound) || errors.Is(err, ErrRefused) {
				return &sourceError{err} // it lacks this shard (or will not seed it): no fault of the source
			}
			ft.drop(sh, p.sc.doneBytes(ft.m, sh), src, fmt.Errorf("%s: %w", sh, err))
			return &sourceError{err}
		}
		busy = 0
		ft.f.meter().Add(src, "", tally.Work{Calls: 1, Bytes: uint64(size)})
		p.sc.put(i, true)
		ft.advance(sh, p.sc.doneBytes(ft.m, sh), size)
	}
}

// scheduler hands out the pieces of one shard to workers.
type scheduler struct {
	mu        sync.Mutex
	state     []int8 // pieceWanted, pieceTaken or pieceDone
	remaining int    // pieces not done
	wake      chan struct{}
}

const (
	pieceWanted = iota
	pieceTaken
	pieceDone
)

func newScheduler(done []bool) *scheduler {
	sc := &scheduler{state: make([]int8, len(done)), wake: make(chan struct{})}
	for i, d := range done {
		if d {
			sc.state[i] = pieceDone
		} else {
			sc.remaining++
		}
	}
	return sc
}

// take returns a wanted piece for the k-th of n sources, preferring its own
// share (i mod n == k), and marks it taken. With none wanted it returns -1
// and a channel closed on the next change, or nil once every piece is done.
func (sc *scheduler) take(k, n int) (int, <-chan struct{}) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.remaining == 0 {
		return -1, nil
	}
	pick := -1
	for i := k; i < len(sc.state); i += n {
		if sc.state[i] == pieceWanted {
			pick = i
			break
		}
	}
	if pick < 0 {
		for i, st := range sc.state {
			if st == pieceWanted {
				pick = i
				break
			}
		}
	}
	if pick < 0 {
		return -1, sc.wake
	}
	sc.state[pick] = pieceTaken
	return pick, nil
}

// put marks piece i done, or wanted again, and wakes waiting workers.
func (sc *scheduler) put(i int, done bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if done {
		sc.state[i] = pieceDone
		sc.remaining--
	} else {
		sc.state[i] = pieceWanted
	}
	close(sc.wake)
	sc.wake = make(chan struct{})
}

func (sc *scheduler) left() int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.remaining
}

func (sc *scheduler) doneBytes(m *shard.Manifest, sh shard.Shard) int64 {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	var n int64
	for i, st := range sc.state {
		if st == pieceDone {
			_, k := m.Piece(sh, i)
			n += k
		}
	}
	return n
}

// conn is one stream to a source, carrying requests one after the other.
type conn struct {
	p peer.ID
	s network.Stream
	r wire.Reader
}

func dial(ctx context.Context, h host.Host, p peer.ID) (*conn, error) {
	s, err := wire.Open(ctx, h, p, ID, ServiceName)
	if err != nil {
		return nil, err
	}
	return &conn{p: p, s: s, r: wire.NewReader(s, MaxHeaderSize)}, nil
}

func (c *conn) close() { _ = c.s.Close() }
func (c *conn) reset() { _ = c.s.Reset() }

// get asks for n bytes of hash at off and returns them (in buf if it is large
// enough) with the size of the whole file. The request must complete within
// timeout.
func (c *conn) get(ctx context.Context, hash string, off, n int64, timeout time.Duration, buf []byte) ([]byte, int64, error) {
	stop := context.AfterFunc(ctx, func() { c.s.Reset() })
	defer stop()
	_ = c.s.SetDeadline(time.Now().Add(timeout))
	fail := func(err error) ([]byte, int64, error) {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		return nil, 0, fmt.Errorf("peer %s: %w", c.p.ShortString(), err)
	}
	if err := wire.WriteJSON(c.s, request{Hash: hash, Offset: off, Length: n}, MaxRequestSize); err != nil {
		return fail(fmt.Errorf("send request: %w", err))
	}
	var hd header
	if err := wire.ReadJSON(c.r, &hd); err != nil {
		return fail(fmt.Errorf("read header: %w", err))
	}
	if hd.Error != nil {
		return nil, 0, codes.Remote(c.p, hd.Error.Code, hd.Error.Message)
	}
	if err := hd.check(off, n); err != nil {
		return fail(err)
	}
	if int64(len(buf)) < hd.Length {
		buf = make([]byte, hd.Length)
	}
	data := buf[:hd.Length]
	if _, err := io.ReadFull(c.s, data); err != nil {
		return fail(fmt.Errorf("read %d bytes: %w", hd.Length, err))
	}
	return data, hd.Size, nil
}
