package shard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Errors a Store wraps.
var (
	// ErrNotFound: the store holds no manifest or shard of that hash.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt: a file's bytes do not match the hash it is stored under.
	ErrCorrupt = errors.New("corrupt")
)

// Directory names inside a store directory.
const (
	manifestsDir = "manifests"
	blobsDir     = "blobs"
	partialDir   = "partial"
	blobPrefix   = "sha256-"
)

// Store holds manifests and shards by content in one or more directories.
// New files go to the first directory. It is safe for concurrent use.
type Store struct {
	dirs []string

	mu        sync.RWMutex
	manifests map[string]*Manifest
	blobs     map[string]string // hash -> path
	bad       map[string]error  // path of an unreadable manifest -> why

	vmu     sync.Mutex
	checked map[string]fileCheck // path -> last hash computed

	fmu      sync.Mutex
	fetching map[string]chan struct{} // hash -> closed when its fetch ends
}

// fileCheck is the hash of a file as it was when hashed.
type fileCheck struct {
	size  int64
	mtime time.Time
	sum   string
}

// OpenStore opens a store over dirs. The first is created if missing; the
// others must exist. Unreadable or invalid manifest files are left out (Verify
// reports them).
func OpenStore(dirs ...string) (*Store, error) {
	if len(dirs) == 0 {
		return nil, errors.New("open shard store: no directory")
	}
	s := &Store{
		dirs:      slices.Clone(dirs),
		manifests: make(map[string]*Manifest),
		blobs:     make(map[string]string),
		bad:       make(map[string]error),
		checked:   make(map[string]fileCheck),
		fetching:  make(map[string]chan struct{}),
	}
	for _, sub := range []string{manifestsDir, blobsDir, partialDir} {
		if err := os.MkdirAll(filepath.Join(dirs[0], sub), 0o755); err != nil {
			return nil, fmt.Errorf("open shard store: %w", err)
		}
	}
	for _, d := range dirs {
		if err := s.scan(d); err != nil {
			return nil, fmt.Errorf("open shard store %s: %w", d, err)
		}
	}
	return s, nil
}

// scan indexes the manifests and blobs of dir.
func (s *Store) scan(dir string) error {
	if fi, err := os.Stat(dir); err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("not a directory")
	}
	ents, err := os.ReadDir(filepath.Join(dir, manifestsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") {
			continue
		}
		path := filepath.Join(dir, manifestsDir, name)
		m, err := readManifest(path)
		if err == nil && m.ID()+".json" != name {
			err = fmt.Errorf("%w: its ID is %s", ErrCorrupt, m.ID())
		}
		if err != nil {
			s.bad[path] = err
			continue
		}
		if _, ok := s.manifests[m.ID()]; !ok {
			s.manifests[m.ID()] = m
		}
	}
	ents, err = os.ReadDir(filepath.Join(dir, blobsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range ents {
		h, ok := strings.CutPrefix(e.Name(), blobPrefix)
		if !ok || !ValidHash(h) || !e.Type().IsRegular() {
			continue
		}
		if _, ok := s.blobs[h]; !ok {
			s.blobs[h] = filepath.Join(dir, blobsDir, e.Name())
		}
	}
	return nil
}

func readManifest(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return nil, err
	}
	return Parse(raw)
}

// Dirs returns the store's directories; new files go to the first.
func (s *Store) Dirs() []string { return slices.Clone(s.dirs) }

// Models returns the manifests in the store, by name then ID.
func (s *Store) Models() []*Manifest {
	s.mu.RLock()
	ms := slices.Collect(maps.Values(s.manifests))
	s.mu.RUnlock()
	slices.SortFunc(ms, func(a, b *Manifest) int {
		return cmpOr(strings.Compare(a.Name, b.Name), strings.Compare(a.ID(), b.ID()))
	})
	return ms
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// Manifest returns the manifest of model id.
func (s *Store) Manifest(id string) (*Manifest, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.manifests[id]
	return m, ok
}

// Has reports whether the store holds the shard of hash h (whether or not it
// has been verified).
func (s *Store) Has(h string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.blobs[h]
	return ok
}

// Hashes returns the hashes of the shards the store holds, sorted.
func (s *Store) Hashes() []string {
	s.mu.RLock()
	hs := slices.Collect(maps.Keys(s.blobs))
	s.mu.RUnlock()
	slices.Sort(hs)
	return hs
}

// Open opens the shard of hash h, or the manifest whose model ID is h, for
// reading, and returns its size. The bytes are served as stored, unverified:
// whoever reads them checks them against a manifest.
func (s *Store) Open(h string) (io.ReadSeekCloser, int64, error) {
	s.mu.RLock()
	m, isManifest := s.manifests[h]
	path, isBlob := s.blobs[h]
	s.mu.RUnlock()
	if isManifest {
		return nopCloser{bytes.NewReader(m.Bytes())}, int64(len(m.Bytes())), nil
	}
	if !isBlob {
		return nil, 0, fmt.Errorf("%s: %w", h, ErrNotFound)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%s: %w", h, ErrNotFound)
		}
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

type nopCloser struct{ io.ReadSeeker }

func (nopCloser) Close() error { return nil }

// AddManifest validates raw as a manifest and stores it; its model ID is the
// hash of raw.
func (s *Store) AddManifest(raw []byte) (*Manifest, error) {
	m, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	if old, ok := s.Manifest(m.ID()); ok {
		return old, nil
	}
	path := filepath.Join(s.dirs[0], manifestsDir, m.ID()+".json")
	if err := writeFileAtomic(path, raw); err != nil {
		return nil, fmt.Errorf("store manifest %s: %w", m.ID(), err)
	}
	s.mu.Lock()
	if old, ok := s.manifests[m.ID()]; ok {
		m = old
	} else {
		s.manifests[m.ID()] = m
	}
	s.mu.Unlock()
	return m, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, synced and renamed into place.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// blobWriter writes a new shard into the store, hashing it as it goes.
type blobWriter struct {
	s      *Store
	f      *os.File
	pieces *pieceHasher
}

func (s *Store) newBlob(pieceSize int64) (*blobWriter, error) {
	f, err := os.CreateTemp(filepath.Join(s.dirs[0], blobsDir), ".tmp-*")
	if err != nil {
		return nil, err
	}
	return &blobWriter{s: s, f: f, pieces: newPieceHasher(pieceSize)}, nil
}

func (b *blobWriter) Write(p []byte) (int, error) {
	n, err := b.f.Write(p)
	b.pieces.Write(p[:n])
	return n, err
}

// commit syncs the blob and renames it into place under its hash.
func (b *blobWriter) commit() (sum string, size int64, pieces []string, err error) {
	sum, size, pieces = b.pieces.finish()
	err = b.f.Sync()
	if cerr := b.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = b.s.place(b.f.Name(), sum)
	}
	if err != nil {
		os.Remove(b.f.Name())
	}
	return sum, size, pieces, err
}

func (b *blobWriter) abort() {
	b.f.Close()
	os.Remove(b.f.Name())
}

// place renames the verified file tmp into the store as the blob of hash sum.
func (s *Store) place(tmp, sum string) error {
	path := filepath.Join(s.dirs[0], blobsDir, blobPrefix+sum)
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	s.vmu.Lock()
	s.checked[path] = fileCheck{size: fi.Size(), mtime: fi.ModTime(), sum: sum}
	s.vmu.Unlock()
	s.mu.Lock()
	s.blobs[sum] = path
	s.mu.Unlock()
	return nil
}

// pieceHasher hashes a stream whole and in pieces.
type pieceHasher struct {
	size   int64
	whole  hash.Hash
	cur    hash.Hash
	n, all int64
	pieces []string
}

func newPieceHasher(size int64) *pieceHasher {
	return &pieceHasher{size: size, whole: sha256.New(), cur: sha256.New()}
}

func (p *pieceHasher) Write(b []byte) (int, error) {
	n := len(b)
	p.whole.Write(b)
	p.all += int64(n)
	for len(b) > 0 {
		k := min(int64(len(b)), p.size-p.n)
		p.cur.Write(b[:k])
		p.n += k
		b = b[k:]
		if p.n == p.size {
			p.pieces = append(p.pieces, hex.EncodeToString(p.cur.Sum(nil)))
			p.cur.Reset()
			p.n = 0
		}
	}
	return n, nil
}

func (p *pieceHasher) finish() (sum string, size int64, pieces []string) {
	if p.n > 0 {
		p.pieces = append(p.pieces, hex.EncodeToString(p.cur.Sum(nil)))
		p.n = 0
	}
	return hex.EncodeToString(p.whole.Sum(nil)), p.all, p.pieces
}

// path returns the file of the shard of hash h.
func (s *Store) path(h string) (string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.blobs[h]
	if !ok {
		return "", fmt.Errorf("shard %s: %w", h, ErrNotFound)
	}
	return p, nil
}

// check verifies that the file at path hashes to sh.Hash, trusting an earlier
// result while the file's size and modification time are unchanged. data, if
// not nil, is the file's content as just read (saving a second read).
func (s *Store) check(path string, sh Shard, data []byte) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Size() != sh.Size {
		return fmt.Errorf("shard %s (%s): %d bytes, want %d: %w", sh.Hash, sh, fi.Size(), sh.Size, ErrCorrupt)
	}
	s.vmu.Lock()
	c, ok := s.checked[path]
	s.vmu.Unlock()
	if !ok || c.size != fi.Size() || !c.mtime.Equal(fi.ModTime()) {
		h := sha256.New()
		if data != nil {
			h.Write(data)
		} else if err := hashFile(h, path); err != nil {
			return err
		}
		c = fileCheck{size: fi.Size(), mtime: fi.ModTime(), sum: hex.EncodeToString(h.Sum(nil))}
		s.vmu.Lock()
		s.checked[path] = c
		s.vmu.Unlock()
	}
	if c.sum != sh.Hash {
		return fmt.Errorf("shard %s (%s) hashes to %s: %w", sh.Hash, sh, c.sum, ErrCorrupt)
	}
	return nil
}

func hashFile(h hash.Hash, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(h, f)
	return err
}

// OpenDense verifies the dense shard of model id against its manifest (size
// and SHA-256), checks its GGUF header within this package's limits, and
// returns the file, positioned at its start, and its size. The caller closes
// it. Building a model from it is the engine's business (moe.LoadDense).
func (s *Store) OpenDense(id string) (*os.File, int64, error) {
	m, ok := s.Manifest(id)
	if !ok {
		return nil, 0, fmt.Errorf("model %s: %w", id, ErrNotFound)
	}
	sh := m.Dense()
	path, err := s.path(sh.Hash)
	if err != nil {
		return nil, 0, err
	}
	if err := s.check(path, sh, nil); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	// The hash only proves the file is the manifest's; check its header
	// within this package's limits before an engine reads it.
	if _, err := readGGUF(f, sh.Size); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("dense shard of %s: %w", id, err)
	}
	return f, sh.Size, nil
}

// TensorData is a tensor of a shard with its bytes.
type TensorData struct {
	Tensor        // the manifest's entry: name, GGML type, GGUF shape, place in the shard
	Data   []byte // its Size bytes
}

// ReadExpert verifies the shard of expert e of layer l of model id against
// its manifest (size and SHA-256) and returns its gate, up and down tensors,
// in that order, and the model's shape from the manifest. Building an expert
// from them is the engine's business (moe.LoadExpert).
func (s *Store) ReadExpert(id string, l, e int) ([3]TensorData, Shape, error) {
	var ts [3]TensorData
	m, ok := s.Manifest(id)
	if !ok {
		return ts, Shape{}, fmt.Errorf("model %s: %w", id, ErrNotFound)
	}
	sh, ok := m.Expert(l, e)
	if !ok {
		return ts, Shape{}, fmt.Errorf("model %s has no expert %d in layer %d: %w", id, e, l, ErrNotFound)
	}
	path, err := s.path(sh.Hash)
	if err != nil {
		return ts, Shape{}, err
	}
	data, err := readFileMax(path, sh.Size)
	if err != nil {
		return ts, Shape{}, err
	}
	if err := s.check(path, sh, data); err != nil {
		return ts, Shape{}, err
	}
	// Parse checked that an expert shard holds gate, up and down, back to
	// back, filling the file.
	for i, t := range sh.Tensors {
		ts[i] = TensorData{Tensor: t, Data: data[t.Offset : t.Offset+t.Size]}
	}
	return ts, m.Shape, nil
}

// readFileMax reads the file at path, refusing one of another size than size.
func readFileMax(path string, size int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, size+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != size {
		return nil, fmt.Errorf("%s: %d bytes, want %d: %w", path, len(data), size, ErrCorrupt)
	}
	return data, nil
}

// lock waits until no other fetch of hash h runs in this store, then claims
// it; call the returned function to release it.
func (s *Store) lock(ctx context.Context, h string) (func(), error) {
	for {
		s.fmu.Lock()
		ch, busy := s.fetching[h]
		if !busy {
			ch = make(chan struct{})
			s.fetching[h] = ch
			s.fmu.Unlock()
			return func() {
				s.fmu.Lock()
				delete(s.fetching, h)
				s.fmu.Unlock()
				close(ch)
			}, nil
		}
		s.fmu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
