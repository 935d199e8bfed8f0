//go:build purego || !amd64

package llama

// useSIMD is false: this build has only the pure-Go kernels.
const useSIMD = false

func (j *mulJob) runSIMD(lo, hi int) {}
