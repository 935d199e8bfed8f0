package p2p

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/mwpeer/mwpeer/internal/leaktest"
)

// TestMain fails the package's tests if any goroutine outlives them
// (see internal/leaktest).
func TestMain(m *testing.M) {
	leaktest.VerifyTestMain(m,
		// go-flow-metrics, behind libp2p's bandwidth counter, sweeps every
		// meter of the process from one global goroutine that starts on
		// first use and is never stopped.
		goleak.IgnoreAnyFunction("github.com/libp2p/go-flow-metrics.(*sweeper).run"),
	)
}
