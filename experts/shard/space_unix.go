//go:build unix

package shard

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// FreeSpace returns the bytes an unprivileged process may still write on
// the file system of dir.
func FreeSpace(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
