//go:build purego || !(amd64 || arm64)

package llama

import (
	"runtime"
	"testing"
)

// TestPureGoKernelsSelected: under the purego tag, and on architectures
// without assembly, the products run only the pure-Go kernels.
func TestPureGoKernelsSelected(t *testing.T) {
	if useSIMD || Kernels() != "generic" {
		t.Fatalf("%s: useSIMD %v, Kernels() %q, want the pure-Go kernels", runtime.GOARCH, useSIMD, Kernels())
	}
}
