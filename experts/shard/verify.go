package shard

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
)

// Statuses of a shard in a Report.
const (
	StatusOK      = "ok"
	StatusMissing = "missing" // fine for a peer that hosts part of a model
	StatusCorrupt = "corrupt"
)

// Report is the result of Verify.
type Report struct {
	Shards []ShardStatus
	// BadManifests are manifest files that could not be read or are invalid.
	BadManifests []BadManifest
}

// ShardStatus is what Verify found of one shard of one model.
type ShardStatus struct {
	Model  *Manifest
	Shard  Shard
	Status string // StatusOK, StatusMissing or StatusCorrupt
	Err    error  // why, when corrupt
}

// BadManifest is a manifest file Verify could not use.
type BadManifest struct {
	Path string
	Err  error
}

// Count returns the number of shards with status st.
func (r *Report) Count(st string) int {
	n := 0
	for _, s := range r.Shards {
		if s.Status == st {
			n++
		}
	}
	return n
}

// OK reports whether nothing is corrupt: every shard present matches its
// hash and every manifest file is valid. Missing shards are fine.
func (r *Report) OK() bool { return r.Count(StatusCorrupt) == 0 && len(r.BadManifests) == 0 }

// Verify hashes every shard in the store directories dirs against every
// manifest there. The directories must exist.
func Verify(dirs ...string) (*Report, error) {
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			return nil, err
		}
	}
	s, err := OpenStore(dirs...)
	if err != nil {
		return nil, err
	}
	return s.Verify(), nil
}

// Verify hashes every shard the store holds against every manifest in it,
// reading each file once, whatever earlier checks found.
func (s *Store) Verify() *Report {
	r := &Report{}
	s.mu.RLock()
	for path, err := range s.bad {
		r.BadManifests = append(r.BadManifests, BadManifest{Path: path, Err: err})
	}
	s.mu.RUnlock()
	sort.Slice(r.BadManifests, func(i, j int) bool { return r.BadManifests[i].Path < r.BadManifests[j].Path })

	sums := make(map[string]string) // path -> hash, or "" if unreadable
	errs := make(map[string]error)
	for _, m := range s.Models() {
		for _, sh := range m.Shards {
			st := ShardStatus{Model: m, Shard: sh, Status: StatusOK}
			path, err := s.path(sh.Hash)
			if err != nil {
				st.Status = StatusMissing
				r.Shards = append(r.Shards, st)
				continue
			}
			sum, done := sums[path]
			if !done {
				sum, errs[path] = s.rehash(path)
				sums[path] = sum
			}
			switch {
			case errs[path] != nil:
				st.Status, st.Err = StatusCorrupt, errs[path]
			case sum != sh.Hash:
				st.Status, st.Err = StatusCorrupt, fmt.Errorf("hashes to %s: %w", sum, ErrCorrupt)
			}
			r.Shards = append(r.Shards, st)
		}
	}
	return r
}

// rehash hashes the file at path and records the result for later checks.
func (s *Store) rehash(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if err := hashFile(h, path); err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	s.vmu.Lock()
	s.checked[path] = fileCheck{size: fi.Size(), mtime: fi.ModTime(), sum: sum}
	s.vmu.Unlock()
	return sum, nil
}
