package trust

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// File is the name of the store's file in a peer's data dir.
const File = "trust.json"

// fileVersion is the version of the file's format.
const fileVersion = 1

// maxFile bounds the file Open reads: MaxPeers records of a few hundred
// bytes each, with room to spare.
const maxFile = 16 << 20

// The file is JSON: {"version": 1, "saved": time, "peers": {id: saved}}.
// Only what a score is made of is kept (decayed counts with the time they
// were counted at, so decay goes on across a restart, streak, exclusion,
// event counts and the last detail); measured speeds are not.
type diskFile struct {
	Version int              `json:"version"`
	Saved   time.Time        `json:"saved"`
	Peers   map[string]saved `json:"peers"`
}

type saved struct {
	Failures float64           `json:"failures,omitempty"`
	FailedAt time.Time         `json:"failed_at,omitzero"`
	Streak   int               `json:"streak,omitempty"`
	Wrongs   float64           `json:"wrongs,omitempty"`
	WrongAt  time.Time         `json:"wrong_at,omitzero"`
	Excluded time.Time         `json:"excluded,omitzero"`
	Detail   string            `json:"detail,omitempty"`
	Counts   map[string]uint64 `json:"counts,omitempty"`
	Last     time.Time         `json:"last"`
}

// Open returns a Store holding what cfg.Path keeps (an empty one when the
// file does not exist yet, or when Path is empty). A file it cannot read or
// parse is an error naming it: delete it to start afresh.
func Open(cfg Config) (*Store, error) {
	s := New(cfg)
	if s.cfg.Path == "" {
		return s, nil
	}
	f, err := os.Open(s.cfg.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trust store: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("trust store %s: %w", s.cfg.Path, err)
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("trust store %s: larger than %d bytes", s.cfg.Path, maxFile)
	}
	var df diskFile
	if err := json.Unmarshal(b, &df); err != nil {
		return nil, fmt.Errorf("trust store %s: %w", s.cfg.Path, err)
	}
	if df.Version != fileVersion {
		return nil, fmt.Errorf("trust store %s: version %d, want %d", s.cfg.Path, df.Version, fileVersion)
	}
	byName := make(map[string]Kind, len(kindNames))
	for k, n := range kindNames {
		byName[n] = Kind(k)
	}
	for id, sv := range df.Peers {
		if id == "" || len(s.peers) >= s.cfg.MaxPeers {
			continue
		}
		r := &record{failures: max(sv.Failures, 0), failedAt: sv.FailedAt, streak: max(sv.Streak, 0),
			wrongs: max(sv.Wrongs, 0), wrongAt: sv.WrongAt, excluded: sv.Excluded, detail: trunc(sv.Detail, maxDetail), lastEvent: sv.Last}
		for name, n := range sv.Counts {
			if k, ok := byName[name]; ok {
				r.counts[k] = n
			}
		}
		s.peers[id] = r
	}
	return s, nil
}

// Save writes the store to Config.Path (nothing without one): to a
// temporary file in the same directory, synced, then renamed over the old
// one, so a crash leaves the old file or the new one, never a mix.
func (s *Store) Save() error {
	if s.cfg.Path == "" {
		return nil
	}
	s.mu.Lock()
	df := diskFile{Version: fileVersion, Saved: s.cfg.Now().UTC(), Peers: make(map[string]saved, len(s.peers))}
	for id, r := range s.peers {
		sv := saved{Failures: r.failures, FailedAt: r.failedAt, Streak: r.streak, Wrongs: r.wrongs, WrongAt: r.wrongAt,
			Excluded: r.excluded, Detail: r.detail, Last: r.lastEvent}
		for k, n := range r.counts {
			if n > 0 {
				if sv.Counts == nil {
					sv.Counts = make(map[string]uint64)
				}
				sv.Counts[kindNames[k]] = n
			}
		}
		df.Peers[id] = sv
	}
	s.dirty = false
	s.mu.Unlock()
	b, err := json.Marshal(df)
	if err == nil {
		err = writeAtomic(s.cfg.Path, b)
	}
	if err != nil {
		s.mu.Lock()
		s.dirty = true // try again next time
		s.mu.Unlock()
		return fmt.Errorf("save trust store: %w", err)
	}
	return nil
}

func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".trust-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil { // make the rename itself durable
		d.Sync()
		d.Close()
	}
	return nil
}

// Run saves the store every SaveEvery when it changed, and once more when
// ctx ends; it returns the last save's error. A failed periodic save is
// logged and tried again at the next tick.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.SaveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return s.saveIfDirty()
		case <-t.C:
			if err := s.saveIfDirty(); err != nil {
				s.cfg.Log.Warn("trust store not saved", "path", s.cfg.Path, "err", err)
			}
		}
	}
}

func (s *Store) saveIfDirty() error {
	s.mu.Lock()
	dirty := s.dirty
	s.mu.Unlock()
	if !dirty {
		return nil
	}
	return s.Save()
}

// Close saves the store if it changed since the last save.
func (s *Store) Close() error { return s.saveIfDirty() }
