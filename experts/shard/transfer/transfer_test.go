package transfer

import (
	"context"
	"encoding/json"
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
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/mwpeer/mwpeer/experts/shard"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
	"github.com/mwpeer/mwpeer/internal/p2ptest"
)

// seeder is a peer serving a full copy of a split model.
type seeder struct {
	h   host.Host
	s   *shard.Store
	srv *Server
	dir string
}

// seed copies the store directory dir into a new peer's store and serves it.
func seed(t testing.TB, dir string) *seeder {
	t.Helper()
	own := t.TempDir()
	if err := os.CopyFS(own, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	s, err := shard.OpenStore(own)
	if err != nil {
		t.Fatal(err)
	}
	h := newHost(t)
	srv := Serve(h, s)
	t.Cleanup(func() { srv.Close() })
	return &seeder{h: h, s: s, srv: srv, dir: own}
}

// corrupt flips one byte in every piece of every blob of the seeder's store,
// as bit rot would: the files keep their names.
func (sd *seeder) corrupt(t testing.TB, pieceSize int64) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(sd.dir, blobsDir))
	for _, e := range ents {
		path := filepath.Join(sd.dir, blobsDir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < int64(len(data)); off += pieceSize {
			data[off+(min(pieceSize, int64(len(data))-off))/2] ^= 0x40
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// splitTiny splits the tiny generated model into a store directory with
// 16 KiB pieces (so every shard has several).
func splitTiny(t testing.TB) (*shard.Manifest, string) {
	t.Helper()
	dir := t.TempDir()
	m, err := shard.SplitWith(genModel(t, randmodel.Tiny()), dir, shard.SplitOptions{PieceSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return m, dir
}

// progressLog records Progress reports.
type progressLog struct {
	mu      sync.Mutex
	last    Progress
	dropped map[peer.ID]error
}

func (l *progressLog) record(p Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.TotalDone < l.last.TotalDone || p.Received < l.last.Received {
		panic("progress went backwards")
	}
	l.last = p
	if p.Dropped != "" {
		if l.dropped == nil {
			l.dropped = make(map[peer.ID]error)
		}
		l.dropped[p.Dropped] = p.Err
	}
}

func TestFetchDropsCorruptSource(t *testing.T) {
	m, dir := splitTiny(t)
	good, bad := seed(t, dir), seed(t, dir)
	bad.corrupt(t, m.PieceSize)

	c := newHost(t)
	connect(t, c, good.h)
	connect(t, c, bad.h)
	s, err := shard.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var log progressLog
	f := &Fetcher{
		Host: c, Store: s, Progress: log.record,
		Sources: func(context.Context, string) []peer.ID { return []peer.ID{bad.h.ID(), good.h.ID()} },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := f.FetchManifest(ctx, m.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Fetch(ctx, got, got.Shards); err != nil {
		t.Fatal(err)
	}

	if err := log.dropped[bad.h.ID()]; !errors.Is(err, shard.ErrCorrupt) {
		t.Errorf("the corrupt source was not dropped for corruption: %v", err)
	}
	if _, ok := log.dropped[good.h.ID()]; ok {
		t.Errorf("the good source was dropped: %v", log.dropped[good.h.ID()])
	}
	if bad.srv.Sent() == 0 {
		t.Error("the corrupt source was never asked")
	}
	if bad.srv.Sent() > 2*2*m.PieceSize*int64(min(len(m.Shards), 4)) {
		t.Errorf("the corrupt source sent %d bytes after it was caught", bad.srv.Sent())
	}
	if log.last.TotalDone != m.Size() || log.last.Total != m.Size() {
		t.Errorf("progress ends at %d of %d bytes, want %d", log.last.TotalDone, log.last.Total, m.Size())
	}
	r := s.Verify()
	if !r.OK() || r.Count(shard.StatusOK) != len(m.Shards) {
		t.Fatalf("fetched store: %d ok, %d corrupt, %d missing", r.Count(shard.StatusOK), r.Count(shard.StatusCorrupt), r.Count(shard.StatusMissing))
	}
	if _, _, err := s.ReadExpert(m.ID(), 1, 3); err != nil {
		t.Fatal(err)
	}
	dense, _, err := s.OpenDense(m.ID())
	if err != nil {
		t.Fatal(err)
	}
	dense.Close()
	if ents, _ := os.ReadDir(filepath.Join(s.Dirs()[0], partialDir)); len(ents) != 0 {
		t.Errorf("%d files left in partial/", len(ents))
	}
}

func TestFetchResumesAfterInterruption(t *testing.T) {
	m, dir := splitTiny(t)
	src := seed(t, dir)
	c := newHost(t)
	connect(t, c, src.h)
	s, err := shard.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddManifest(m.Bytes()); err != nil {
		t.Fatal(err)
	}
	sources := func(context.Context, string) []peer.ID { return []peer.ID{src.h.ID()} }

	// Interrupt when half is done.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, stop := context.WithCancel(ctx)
	var at progressLog
	f := &Fetcher{Host: c, Store: s, Sources: sources, Parallel: 2, Progress: func(p Progress) {
		at.record(p)
		if p.TotalDone >= p.Total/2 {
			stop()
		}
	}}
	if err := f.Fetch(first, m, m.Shards); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted fetch: %v", err)
	}
	sentBefore := src.srv.Sent()

	var log progressLog
	f.Progress = log.record
	if err := f.Fetch(ctx, m, m.Shards); err != nil {
		t.Fatal(err)
	}
	again := src.srv.Sent() - sentBefore
	t.Logf("model %d bytes; interrupted after %d verified; the second fetch received %d", m.Size(), at.last.TotalDone, log.last.Received)
	if log.last.Received != again {
		t.Errorf("fetcher received %d bytes, server sent %d", log.last.Received, again)
	}
	// Everything verified before the interruption is kept.
	if again > m.Size()-at.last.TotalDone {
		t.Errorf("resumed fetch took %d bytes, more than the %d left", again, m.Size()-at.last.TotalDone)
	}
	if r := s.Verify(); !r.OK() || r.Count(shard.StatusOK) != len(m.Shards) {
		t.Fatalf("after resuming: %d of %d shards ok", r.Count(shard.StatusOK), len(m.Shards))
	}
}

func TestPartialPiecesAreRecheckedOnResume(t *testing.T) {
	m, dir := splitTiny(t)
	src := seed(t, dir)
	c := newHost(t)
	connect(t, c, src.h)
	s, err := shard.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddManifest(m.Bytes()); err != nil {
		t.Fatal(err)
	}
	// A partial file whose record claims every piece, but with one bad byte.
	sh := m.Dense()
	data, _ := os.ReadFile(filepath.Join(dir, blobsDir, blobPrefix+sh.Hash))
	data[3*m.PieceSize+7] ^= 1
	p := filepath.Join(s.Dirs()[0], partialDir, sh.Hash)
	os.WriteFile(p, data, 0o644)
	marks := make([]byte, len(sh.Pieces))
	for i := range marks {
		marks[i] = 1
	}
	os.WriteFile(p+".pieces", marks, 0o644)

	f := &Fetcher{Host: c, Store: s, Sources: func(context.Context, string) []peer.ID { return []peer.ID{src.h.ID()} }}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Fetch(ctx, m, []shard.Shard{sh}); err != nil {
		t.Fatal(err)
	}
	if got := src.srv.Sent(); got != m.PieceSize {
		t.Errorf("fetched %d bytes, want the one bad piece (%d)", got, m.PieceSize)
	}
	dense, _, err := s.OpenDense(m.ID())
	if err != nil {
		t.Fatal(err)
	}
	dense.Close()
}

// staller answers shard requests by never answering.
func staller(t testing.TB) host.Host {
	h := newHost(t)
	h.SetStreamHandler(ID, func(s network.Stream) {
		defer s.Reset()
		io.Copy(io.Discard, s) // returns when the client resets
	})
	return h
}

func TestFetchDropsStalledSource(t *testing.T) {
	m, dir := splitTiny(t)
	good := seed(t, dir)
	stuck := staller(t)
	c := newHost(t)
	connect(t, c, good.h)
	connect(t, c, stuck)
	s, err := shard.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddManifest(m.Bytes()); err != nil {
		t.Fatal(err)
	}
	var log progressLog
	f := &Fetcher{
		Host: c, Store: s, Progress: log.record, Timeout: 300 * time.Millisecond,
		Sources: func(context.Context, string) []peer.ID { return []peer.ID{stuck.ID(), good.h.ID()} },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := f.Fetch(ctx, m, m.Shards); err != nil {
		t.Fatal(err)
	}
	if err := log.dropped[stuck.ID()]; err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("stalled source dropped with %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("fetch took %v", d)
	}
	if r := s.Verify(); !r.OK() || r.Count(shard.StatusOK) != len(m.Shards) {
		t.Fatalf("%d of %d shards ok", r.Count(shard.StatusOK), len(m.Shards))
	}
}

func TestFetchFailsClearlyWithoutSources(t *testing.T) {
	m, dir := splitTiny(t)
	bad := seed(t, dir)
	bad.corrupt(t, m.PieceSize)
	c := newHost(t)
	connect(t, c, bad.h)
	s, _ := shard.OpenStore(t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	f := &Fetcher{Host: c, Store: s, Sources: func(context.Context, string) []peer.ID { return nil }}
	if _, err := f.FetchManifest(ctx, m.ID()); !errors.Is(err, ErrNoSource) {
		t.Errorf("manifest without sources: %v", err)
	}
	f.Sources = func(context.Context, string) []peer.ID { return []peer.ID{bad.h.ID()} }
	err := f.Fetch(ctx, m, m.Shards[:1])
	if !errors.Is(err, ErrNoSource) || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("only a corrupt source: %v", err)
	}
	if s.Has(m.Dense().Hash) {
		t.Error("a corrupt shard was stored")
	}
}

// ask sends raw bytes on a new stream to the server and returns the header
// frame it answers with.
func ask(t *testing.T, c host.Host, p peer.ID, frames ...[]byte) []header {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.NewStream(ctx, p, ID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	s.SetDeadline(time.Now().Add(5 * time.Second))
	var out []header
	r := msgio.NewVarintReaderSize(s, MaxHeaderSize)
	for _, fr := range frames {
		if err := msgio.NewVarintWriter(s).WriteMsg(fr); err != nil {
			t.Fatal(err)
		}
		msg, err := r.ReadMsg()
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		var h header
		if err := json.Unmarshal(msg, &h); err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
		if h.Error == nil {
			io.CopyN(io.Discard, s, h.Length)
		}
	}
	return out
}

func TestServerAnswersBadRequestsWithErrors(t *testing.T) {
	m, dir := splitTiny(t)
	sd := seed(t, dir)
	c := newHost(t)
	connect(t, c, sd.h)
	req := func(r request) []byte { b, _ := json.Marshal(r); return b }
	dense := m.Dense().Hash
	unknown := strings.Repeat("ab", 32)

	for _, tc := range []struct {
		name  string
		frame []byte
		code  string
	}{
		{"oversized", make([]byte, 10<<10), CodeBadRequest},
		{"garbage", []byte("\x00\x01garbage"), CodeBadRequest},
		{"bad hash", req(request{Hash: "../../etc/passwd", Length: 10}), CodeBadRequest},
		{"zero length", req(request{Hash: dense}), CodeBadRequest},
		{"too long", req(request{Hash: dense, Length: MaxLength + 1}), CodeBadRequest},
		{"negative offset", req(request{Hash: dense, Offset: -1, Length: 10}), CodeBadRequest},
		{"beyond the end", req(request{Hash: dense, Offset: m.Dense().Size + 1, Length: 10}), CodeBadRequest},
		{"unknown", req(request{Hash: unknown, Length: 10}), CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := ask(t, c, sd.h.ID(), tc.frame)[0]
			if h.Error == nil || h.Error.Code != tc.code {
				t.Fatalf("answer %+v, want error %s", h, tc.code)
			}
		})
	}

	// not_found keeps the stream; the next request is served.
	hs := ask(t, c, sd.h.ID(), req(request{Hash: unknown, Length: 10}), req(request{Hash: dense, Offset: 100, Length: MaxLength}), req(request{Hash: m.ID(), Length: 10}))
	if hs[1].Error != nil || hs[1].Size != m.Dense().Size || hs[1].Length != m.Dense().Size-100 {
		t.Errorf("ranged request after not_found: %+v", hs[1])
	}
	if hs[2].Error != nil || hs[2].Size != int64(len(m.Bytes())) || hs[2].Length != 10 {
		t.Errorf("manifest request: %+v", hs[2])
	}
}

func TestServerDropsSilentClients(t *testing.T) {
	_, dir := splitTiny(t)
	s, _ := shard.OpenStore(dir)
	h := newHost(t)
	srv := NewServer(h, s, ServerConfig{RequestTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { srv.Close() })
	c := newHost(t)
	connect(t, c, h)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.NewStream(ctx, h.ID(), ID)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Reset()
	st.Write([]byte{0x05}) // a length prefix, then nothing
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = st.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %v: the server kept a silent stream", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the server waited %v", d)
	}
}

func TestServerRefusesStreamsBeyondItsLimit(t *testing.T) {
	_, dir := splitTiny(t)
	s, _ := shard.OpenStore(dir)
	h := newHost(t)
	srv := NewServer(h, s, ServerConfig{MaxStreams: 1})
	t.Cleanup(func() { srv.Close() })
	c := newHost(t)
	connect(t, c, h)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	held, err := c.NewStream(ctx, h.ID(), ID)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Reset()
	held.Write([]byte{0x05}) // make the server take the stream
	// Wait until the server holds it (its one slot taken), then the next
	// stream is refused busy.
	deadline := time.Now().Add(5 * time.Second)
	for len(srv.slots) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server never took the held stream")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if hs := ask(t, c, h.ID(), []byte(`{}`)); hs[0].Error == nil || hs[0].Error.Code != CodeBusy {
		t.Fatalf("a stream beyond the limit was not refused busy: %+v", hs[0])
	}
}

// Loopback hosts for these tests.
var newHost, connect = p2ptest.NewHost, p2ptest.Connect

// Directories and names inside a store directory (package shard's on-disk
// layout), which these tests corrupt and inspect.
const (
	blobsDir   = "blobs"
	partialDir = "partial"
	blobPrefix = "sha256-"
)

// genModel writes the generated model c to a file in a temporary directory.
func genModel(t testing.TB, c randmodel.Config) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.gguf")
	if err := randmodel.WriteFile(path, c); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFetchSkipsSourceThatRefuses(t *testing.T) {
	m, dir := splitTiny(t)
	good := seed(t, dir)
	// The refuser is a seeder whose policy serves nobody.
	refuser := seed(t, dir)
	refuser.srv.Close()
	var asked atomic.Int32
	refuser.srv = NewServer(refuser.h, refuser.s, ServerConfig{Admit: func(peer.ID) error {
		asked.Add(1)
		return errors.New("this peer seeds no shards")
	}})
	t.Cleanup(func() { refuser.srv.Close() })

	c := newHost(t)
	connect(t, c, good.h)
	connect(t, c, refuser.h)
	s, err := shard.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &Fetcher{Host: c, Store: s, Sources: func(context.Context, string) []peer.ID { return []peer.ID{refuser.h.ID(), good.h.ID()} }}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := f.FetchManifest(ctx, m.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Fetch(ctx, got, got.Shards); err != nil {
		t.Fatal(err)
	}
	if asked.Load() == 0 || refuser.srv.Sent() != 0 {
		t.Fatalf("refuser asked %d times, sent %d bytes; want asked and nothing sent", asked.Load(), refuser.srv.Sent())
	}
	if r := s.Verify(); !r.OK() || r.Count(shard.StatusOK) != len(m.Shards) {
		t.Fatal("the fetched store is incomplete")
	}
	// A direct request gets the refused code, which unwraps to ErrRefused.
	hs := ask(t, c, refuser.h.ID(), []byte(`{"hash":"x"}`))
	if len(hs) != 1 || hs[0].Error == nil || hs[0].Error.Code != CodeRefused || !errors.Is(codes.Remote(refuser.h.ID(), hs[0].Error.Code, hs[0].Error.Message), ErrRefused) {
		t.Fatalf("direct request: %+v", hs)
	}
}
