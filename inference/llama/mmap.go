package llama

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// hostLittleEndian is whether float32s can view GGUF's little-endian bytes
// in place.
var hostLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// float32s returns the little-endian float32 values in data: a view of the
// same memory (a mapped file's pages stay the page cache's) when the host is
// little-endian and data is 4-byte aligned, which GGUF's tensor alignment
// (general.alignment, 32 by default) gives every tensor of a mapped file;
// otherwise a copy. The alignment is checked on the address itself, so a
// file with an odd alignment key or an unaligned tensor is copied, not
// misread.
func float32s(data []byte) []float32 {
	n := len(data) / 4
	if n == 0 {
		return []float32{}
	}
	p := unsafe.Pointer(unsafe.SliceData(data))
	if hostLittleEndian && uintptr(p)%unsafe.Alignof(float32(0)) == 0 {
		return unsafe.Slice((*float32)(p), n)
	}
	f := make([]float32, n)
	for i := range f {
		f[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return f
}

// Close releases the memory map of a model loaded from a file (Load,
// LoadWith, LoadFile). The model, its States and the Experts taken from it
// must no longer be in use: their weights were the mapping's pages, and
// reading them after Close faults. Close is idempotent; a model read from
// an io.ReadSeeker (Read, ReadWith) holds a heap copy and has nothing to
// release.
func (m *Model) Close() error {
	m.closeMu.Lock()
	defer m.closeMu.Unlock()
	if m.mapped == nil {
		return nil
	}
	err := unmapFile(m.mapped)
	m.mapped = nil
	return err
}

// Mapped returns the number of bytes of the file a model maps (0 for a
// model read into the heap, or closed).
func (m *Model) Mapped() int64 {
	m.closeMu.Lock()
	defer m.closeMu.Unlock()
	return int64(len(m.mapped))
}
