//go:build unix

package llama

import (
	"syscall"
	"time"
)

// processCPU is the CPU time the process has used, user and system; false
// if the system will not say.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
