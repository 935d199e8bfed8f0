//go:build !unix

package shard

import "errors"

// FreeSpace is not known off Unix: it returns errors.ErrUnsupported, and a
// fetch goes on without the check.
func FreeSpace(dir string) (int64, error) { return 0, errors.ErrUnsupported }
