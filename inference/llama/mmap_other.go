//go:build !unix

package llama

import (
	"fmt"
	"io"
	"os"
)

// mapFile reads the first size bytes of f into the heap: this system has no
// mmap that this package uses, so a model loaded from a file is a copy.
func mapFile(f *os.File, size int64) ([]byte, error) {
	if size <= 0 || int64(int(size)) != size {
		return nil, fmt.Errorf("read %s: cannot hold %d bytes", f.Name(), size)
	}
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); n < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return b, nil
}

// unmapFile lets the garbage collector have a copy made by mapFile.
func unmapFile([]byte) error { return nil }
