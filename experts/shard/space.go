package shard

import (
	"errors"
	"os"
	"path/filepath"
)

// ErrNoSpace is wrapped when the disk lacks room for shards a fetch would
// write.
var ErrNoSpace = errors.New("not enough free disk")

// Grow returns the bytes the store's first directory must still give for a
// partial file of sh: nothing when the store holds sh, else its size less
// what a partial file of it already takes. A Fetch checks the sum against
// FreeSpace before it grows any file (shard sizes come from a manifest,
// which a stranger may have written).
func (s *Store) Grow(sh Shard) int64 {
	if s.Has(sh.Hash) {
		return 0
	}
	if fi, err := os.Stat(filepath.Join(s.dirs[0], partialDir, sh.Hash)); err == nil && fi.Size() <= sh.Size {
		return sh.Size - fi.Size()
	}
	return sh.Size
}
