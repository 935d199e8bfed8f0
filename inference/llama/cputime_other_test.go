//go:build !unix

package llama

import "time"

// processCPU is not measured on this system.
func processCPU() (time.Duration, bool) { return 0, false }
