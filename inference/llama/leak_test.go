package llama

import (
	"testing"

	"github.com/mwpeer/mwpeer/internal/leaktest"
)

// TestMain fails the package's tests if any goroutine outlives them
// (see internal/leaktest).
func TestMain(m *testing.M) {
	leaktest.VerifyTestMain(m)
}
