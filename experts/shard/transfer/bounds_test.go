package transfer

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/internal/wire"
)

// scaled is the server's default configuration with its write timeout and
// stream life divided by k, and the fetcher's patience with busy answers
// the same: the logic of a 9 s drip against 20 s and 2 min limits holds, k
// times faster. The request timeout is left at twice the drip, so that a
// drip scheduled late on a busy machine does not end its stream: only the
// stream's life may.
func scaled(k time.Duration, every time.Duration) (ServerConfig, time.Duration) {
	c := DefaultServerConfig()
	c.RequestTimeout = 2 * every
	c.WriteTimeout /= k
	c.MaxStreamLife /= k
	return c, 2 * time.Minute / k
}

// dripper holds shard streams open as a hostile peer would: each stream
// asks for one byte, reads it, waits every, and asks again, so it never
// leaves a read or a write waiting long enough for a timeout. With reopen,
// a stream the server ends is replaced at once.
type dripper struct {
	h       host.Host
	longest atomic.Int64 // the longest a stream lasted, in ns
	wg      sync.WaitGroup
}

func drip(ctx context.Context, t *testing.T, to host.Host, hash string, streams int, every time.Duration, reopen bool) *dripper {
	t.Helper()
	d := &dripper{h: newHost(t)}
	connect(t, d.h, to)
	for range streams {
		d.wg.Go(func() {
			for ctx.Err() == nil {
				life := d.hold(ctx, to.ID(), hash, every)
				if l := int64(life); l > d.longest.Load() {
					d.longest.Store(l) // one writer per stream; a lost race loses little
				}
				if !reopen {
					return
				}
				select { // refused: try again soon, not in a spin
				case <-time.After(every / 10):
				case <-ctx.Done():
				}
			}
		})
	}
	t.Cleanup(d.wg.Wait)
	return d
}

// hold keeps one stream dripping until the server ends it or ctx ends.
func (d *dripper) hold(ctx context.Context, p peer.ID, hash string, every time.Duration) time.Duration {
	start := time.Now()
	s, err := wire.Open(ctx, d.h, p, ID, ServiceName)
	if err != nil {
		return 0
	}
	defer s.Reset()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	r := wire.NewReader(s, MaxHeaderSize)
	one := make([]byte, 1)
	for {
		if wire.WriteJSON(s, request{Hash: hash, Offset: 0, Length: 1}, MaxRequestSize) != nil {
			return time.Since(start)
		}
		var hd header
		if wire.ReadJSON(r, &hd) != nil || hd.Error != nil || hd.Length != 1 {
			return time.Since(start)
		}
		if _, err := io.ReadFull(s, one); err != nil {
			return time.Since(start)
		}
		select {
		case <-time.After(every):
		case <-ctx.Done():
			return time.Since(start)
		}
	}
}

// TestShardSlotHoldersDoNotStopAFetch: peers hold shard streams open by
// asking one byte every 9 s (scaled down 20 times here). One peer with 32
// such streams, reopening each one the server ends, holds MaxPeerStreams of
// them at most, each for MaxStreamLife, and another peer's fetch completes
// meanwhile. Four peers holding all 32 slots delay it only until the
// streams' lives end.
func TestShardSlotHoldersDoNotStopAFetch(t *testing.T) {
	const k = 20
	every := 9 * time.Second / k
	cfg, busyFor := scaled(k, every)
	m, dir := splitTiny(t)
	hash := m.Dense().Hash

	for _, tc := range []struct {
		name            string
		holders, each   int
		reopen          bool
		fetchWithinLife bool
	}{
		{"one peer, 32 streams, reopening", 1, 32, true, true},
		{"four peers, 8 streams each", 4, 8, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := seed(t, dir)
			src.srv.Close()
			src.srv = NewServer(src.h, src.s, cfg)
			t.Cleanup(func() { src.srv.Close() })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var holders []*dripper
			for range tc.holders {
				holders = append(holders, drip(ctx, t, src.h, hash, tc.each, every, tc.reopen))
			}
			// Wait until the holders hold what they can.
			want := min(tc.holders*tc.each, cfg.MaxStreams, tc.holders*cfg.MaxPeerStreams)
			deadline := time.Now().Add(10 * time.Second)
			for {
				held := 0
				for _, d := range holders {
					held += src.srv.Streams(d.h.ID())
				}
				if held == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("holders hold %d streams, want %d", held, want)
				}
				time.Sleep(10 * time.Millisecond)
			}

			c := newHost(t)
			connect(t, c, src.h)
			s, err := shard.OpenStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			f := &Fetcher{Host: c, Store: s, Timeout: 30 * time.Second / k, BusyFor: busyFor,
				Sources: func(context.Context, string) []peer.ID { return []peer.ID{src.h.ID()} }}
			start := time.Now()
			fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
			defer fcancel()
			if err := f.Fetch(fctx, m, m.Shards); err != nil {
				t.Fatalf("fetch while %d streams are held: %v", want, err)
			}
			took := time.Since(start)
			if !s.Verify().OK() {
				t.Fatal("fetched store does not verify")
			}
			for _, d := range holders {
				if n := src.srv.Streams(d.h.ID()); n > cfg.MaxPeerStreams {
					t.Errorf("a holder has %d streams, more than %d", n, cfg.MaxPeerStreams)
				}
			}
			if tc.fetchWithinLife && took > cfg.MaxStreamLife {
				t.Errorf("the fetch took %s, longer than a held stream lives (%s): it waited for the holders", took, cfg.MaxStreamLife)
			}
			// Every held stream ended within its life (and a write's grace).
			if !tc.reopen {
				for _, d := range holders {
					d.wg.Wait()
				}
			} else {
				time.Sleep(cfg.MaxStreamLife + cfg.WriteTimeout)
			}
			cancel()
			var longest time.Duration
			for _, d := range holders {
				d.wg.Wait()
				longest = max(longest, time.Duration(d.longest.Load()))
			}
			if limit := cfg.MaxStreamLife + cfg.WriteTimeout + time.Second; longest > limit {
				t.Errorf("a held stream lived %s, more than %s", longest, limit)
			}
			if longest < cfg.MaxStreamLife/2 {
				t.Errorf("the longest held stream lived %s: the holders did not hold (the test proves nothing)", longest)
			}
			t.Logf("%s: fetch of %d bytes took %s while %d streams were held (a drip every %s, streams live %s); longest held stream %s",
				tc.name, m.Size(), took.Round(time.Millisecond), want, every, cfg.MaxStreamLife, longest.Round(time.Millisecond))
		})
	}
}

// TestFetchChecksFreeDiskFirst: a fetch that would leave less than MinFree
// on the store's disk fails with shard.ErrNoSpace, saying how much it needs
// and has, before any partial file exists; with room it goes on.
func TestFetchChecksFreeDiskFirst(t *testing.T) {
	m, dir := splitTiny(t)
	src := seed(t, dir)
	c := newHost(t)
	connect(t, c, src.h)
	s, err := shard.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	free := int64(m.Size()) // what the fake disk has free
	asked := ""
	f := &Fetcher{Host: c, Store: s, MinFree: 1 << 20,
		Sources:   func(context.Context, string) []peer.ID { return []peer.ID{src.h.ID()} },
		FreeSpace: func(d string) (int64, error) { asked = d; return free, nil }}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = f.Fetch(ctx, m, m.Shards)
	if !errors.Is(err, shard.ErrNoSpace) {
		t.Fatalf("fetch onto a full disk: %v", err)
	}
	if asked != s.Dirs()[0] || !strings.Contains(err.Error(), "free") {
		t.Errorf("asked about %q; error %q", asked, err)
	}
	t.Log(err)
	if ents, _ := os.ReadDir(filepath.Join(s.Dirs()[0], partialDir)); len(ents) != 0 {
		t.Fatalf("%d partial files grown before the check", len(ents))
	}
	free = m.Size() + 1<<20
	if err := f.Fetch(ctx, m, m.Shards); err != nil {
		t.Fatalf("fetch with room: %v", err)
	}
	// Shards held need nothing: fetching them again asks nothing.
	free = 0
	if err := f.Fetch(ctx, m, m.Shards); err != nil {
		t.Fatalf("fetch of held shards: %v", err)
	}
	// The real disk: some bytes free, a clear error for a missing directory.
	if n, err := shard.FreeSpace(t.TempDir()); err != nil || n <= 0 {
		t.Fatalf("FreeSpace: %d, %v", n, err)
	}
	if _, err := shard.FreeSpace(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("FreeSpace of a missing directory")
	}
}

// TestUploadRateIsBounded: a seeder with a per-peer upload rate of 1 MiB/s
// takes about a second to upload the 1 MiB tiny model, and one with an
// overall rate the same; without either it takes a fraction of that.
func TestUploadRateIsBounded(t *testing.T) {
	m, dir := splitTiny(t)
	for _, tc := range []struct {
		name      string
		all, peer float64
	}{{"per peer", 0, 1 << 20}, {"overall", 1 << 20, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			src := seed(t, dir)
			src.srv.Close()
			cfg := DefaultServerConfig()
			cfg.UploadRate, cfg.PeerUploadRate = tc.all, tc.peer
			src.srv = NewServer(src.h, src.s, cfg)
			t.Cleanup(func() { src.srv.Close() })
			c := newHost(t)
			connect(t, c, src.h)
			s, err := shard.OpenStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			f := &Fetcher{Host: c, Store: s, Sources: func(context.Context, string) []peer.ID { return []peer.ID{src.h.ID()} }}
			start := time.Now()
			if err := f.Fetch(context.Background(), m, m.Shards); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			// The burst is one 64 KiB buffer: the rest goes at the rate.
			if want := time.Duration(float64(m.Size()-copyBuffer) / (1 << 20) * float64(time.Second)); took < want*9/10 {
				t.Fatalf("%d bytes in %s at 1 MiB/s, want at least %s", m.Size(), took, want)
			}
			t.Logf("%s: %d bytes in %s", tc.name, m.Size(), took.Round(time.Millisecond))
		})
	}
}
