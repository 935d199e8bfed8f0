// Package leaktest fails a package's tests when a goroutine outlives them.
// It is goleak.VerifyTestMain with patience: goleak looks again for about
// half a second before it reports, too short on a busy machine for the
// goroutines that a host's Close ends without waiting for (a connection's
// reader, a stream handler) to be gone; here they get Patience.
package leaktest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Patience is how long goroutines may take to end after the last test.
const Patience = 10 * time.Second

// VerifyTestMain runs m's tests and exits with Run's code.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) { os.Exit(Run(m, opts...)) }

// Run runs m's tests and then, if they passed, fails them (returns 1) when
// goroutines that opts do not ignore are still running after Patience.
func Run(m *testing.M, opts ...goleak.Option) int {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(Patience)
		for {
			err := goleak.Find(opts...)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "leaktest: goroutines still running %s after the tests: %v\n", Patience, err)
				code = 1
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return code
}
