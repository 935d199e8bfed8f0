package llama

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// forwardAll runs prompt through m and returns every position's logits'
// bits, so that two runs compare bitwise.
func forwardAll(t testing.TB, m *Model, prompt []int) []uint32 {
	t.Helper()
	st := m.NewState(len(prompt), nil)
	var bits []uint32
	for _, tok := range prompt {
		logits, err := st.Forward(context.Background(), []int{tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range logits {
			bits = append(bits, math.Float32bits(l))
		}
	}
	return bits
}

// TestLoadMapsFile: Load maps the file, and the mapped model computes
// bitwise what the heap copy of Read does; Close releases the mapping and
// is idempotent.
func TestLoadMapsFile(t *testing.T) {
	for _, c := range []randmodel.Config{randmodel.Tiny(), randmodel.TinyDense()} {
		t.Run(c.Name, func(t *testing.T) {
			path := fixture(t, c)
			mapped, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := mapped.Mapped(); got != fi.Size() {
				t.Errorf("Mapped() = %d, want the file's %d bytes", got, fi.Size())
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			heap, err := Read(f)
			if err != nil {
				t.Fatal(err)
			}
			if heap.Mapped() != 0 {
				t.Errorf("a model read from an io.ReadSeeker maps %d bytes", heap.Mapped())
			}
			prompt := mapped.Vocab.Encode("the mapped model")
			a, b := forwardAll(t, mapped, prompt), forwardAll(t, heap, prompt)
			if !slicesEqual(a, b) {
				t.Fatal("the mapped and the heap model give different logits")
			}
			for range 2 {
				if err := mapped.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if mapped.Mapped() != 0 {
				t.Errorf("Mapped() = %d after Close", mapped.Mapped())
			}
			if err := heap.Close(); err != nil {
				t.Errorf("Close of a heap model: %v", err)
			}
		})
	}
}

func slicesEqual(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestMappedF32TensorsAreViews: an F32 tensor of a mapped file is a view of
// the mapping (no copy), and float32s copies what it cannot view.
func TestMappedF32TensorsAreViews(t *testing.T) {
	m, err := Load(fixture(t, randmodel.Tiny())) // F32 weights
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.embed.typ != typeF32 {
		t.Fatalf("tiny model's embeddings are %s, want F32", typeName(m.embed.typ))
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(m.mapped)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(m.embed.f32)))
	if hostLittleEndian && (p < lo || p >= lo+uintptr(len(m.mapped))) {
		t.Errorf("F32 embeddings at %#x lie outside the mapping [%#x, %#x): copied", p, lo, lo+uintptr(len(m.mapped)))
	}

	b := make([]byte, 4*5+4)
	o := 1 // an offset at which b is not 4-byte aligned
	if uintptr(unsafe.Pointer(&b[o]))%4 == 0 {
		o = 2
	}
	for i := range 5 {
		bits := math.Float32bits(float32(i) + 0.5)
		b[o+4*i], b[o+1+4*i], b[o+2+4*i], b[o+3+4*i] = byte(bits), byte(bits>>8), byte(bits>>16), byte(bits>>24)
	}
	odd := float32s(b[o : o+20]) // unaligned: a copy
	if unsafe.Pointer(unsafe.SliceData(odd)) == unsafe.Pointer(&b[o]) {
		t.Error("an unaligned slice was viewed in place")
	}
	for i, v := range odd {
		if v != float32(i)+0.5 {
			t.Errorf("float32s(unaligned)[%d] = %v, want %v", i, v, float32(i)+0.5)
		}
	}
}

// TestLoadTruncatedFile: a file cut short after its header (its tensors
// claim bytes past the end) is an error at load, never a fault later.
func TestLoadTruncatedFile(t *testing.T) {
	path := fixture(t, randmodel.TinyDense())
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{fi.Size() - 1, fi.Size() / 2, 4096, 7, 0} {
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
		m, err := Load(path)
		if err == nil {
			m.Close()
			t.Fatalf("a file truncated to %d of %d bytes loaded", size, fi.Size())
		}
		t.Logf("truncated to %d bytes: %v", size, err)
	}
}

// memFigures are what a child of TestMappedMemory measured of itself, in
// bytes: the kernel's VmRSS, VmHWM (peak RSS), RssAnon and RssFile, and the
// Go heap in use.
type memFigures struct {
	RSS, HWM, Anon, File, Heap int64
	Seconds                    float64 // since the start
}

// readMemFigures reads /proc/self/status and the Go heap, after a GC.
func readMemFigures() (memFigures, error) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f := memFigures{Heap: int64(ms.HeapInuse)}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return f, err
	}
	fields := map[string]*int64{"VmRSS:": &f.RSS, "VmHWM:": &f.HWM, "RssAnon:": &f.Anon, "RssFile:": &f.File}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		if p, ok := fields[w[0]]; ok && len(w) >= 2 {
			kb, err := strconv.ParseInt(w[1], 10, 64)
			if err != nil {
				return f, fmt.Errorf("%s: %w", sc.Text(), err)
			}
			*p = kb << 10
		}
	}
	return f, nil
}

// memChild is the environment variable that makes TestMappedMemoryChild
// load a model: "map" or "copy", a space, and the file's path.
const memChild = "MWPEER_TEST_MEM_CHILD"

// TestMappedMemoryChild is run by TestMappedMemory in a process of its
// own: it loads the model (mapped, or copied into the heap), runs a short
// prompt through it, and prints its memory at each step as JSON.
func TestMappedMemoryChild(t *testing.T) {
	arg := os.Getenv(memChild)
	if arg == "" {
		t.Skip("run by TestMappedMemory")
	}
	mode, path, _ := strings.Cut(arg, " ")
	figures := map[string]memFigures{}
	start := time.Now()
	measure := func(step string) {
		f, err := readMemFigures()
		if err != nil {
			t.Fatal(err)
		}
		f.Seconds = time.Since(start).Seconds()
		figures[step] = f
	}
	measure("start")
	var m *Model
	var err error
	if mode == "map" {
		m, err = Load(path)
	} else {
		var f *os.File
		if f, err = os.Open(path); err == nil {
			m, err = Read(f)
			f.Close()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	measure("loaded")
	prompt := m.Vocab.Encode(strings.Repeat("memory ", 5))
	st := m.NewState(len(prompt)+8, nil)
	logits, err := st.Forward(context.Background(), prompt)
	if err != nil {
		t.Fatal(err)
	}
	smp := NewSampler(Options{})
	for range 8 {
		if logits, err = st.Forward(context.Background(), []int{smp.Sample(logits)}); err != nil {
			t.Fatal(err)
		}
	}
	measure("ran")
	runtime.KeepAlive(st)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	measure("closed")
	out, err := json.Marshal(figures)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("MEMFIGURES %s\n", out)
}

// TestMappedMemory loads the 180 MB dense F16 model of BenchmarkLarge in a
// child process twice, mapped (Load) and copied into the heap (Read), runs
// a prompt through it, and prints the process's memory; it asserts that the
// mapped model's weights are mapped file pages rather than heap (the heap
// after loading is below 10% of the file, the file pages in the RSS after a
// forward pass are at least 80% of it), and that the copy is heap.
func TestMappedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and loads a 180 MB model")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc/self/status on this system")
	}
	path := largeDenseFile(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]memFigures{}
	for _, mode := range []string{"copy", "map"} {
		cmd := exec.Command(exe, "-test.run=^TestMappedMemoryChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), memChild+"="+mode+" "+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s child: %v\n%s", mode, err, out)
		}
		_, js, ok := strings.Cut(string(out), "MEMFIGURES ")
		if !ok {
			t.Fatalf("%s child printed no figures:\n%s", mode, out)
		}
		js, _, _ = strings.Cut(js, "\n")
		var f map[string]memFigures
		if err := json.Unmarshal([]byte(js), &f); err != nil {
			t.Fatalf("%s child: %v: %s", mode, err, js)
		}
		got[mode] = f
	}
	mb := func(n int64) string { return fmt.Sprintf("%6.1f", float64(n)/(1<<20)) }
	var sb strings.Builder
	fmt.Fprintf(&sb, "memory of a process loading %s (%s MB), MB:\n", filepath.Base(path), mb(size))
	fmt.Fprintf(&sb, "%-5s %-7s %7s %7s %7s %7s %9s %8s\n", "load", "step", "VmRSS", "VmHWM", "RssAnon", "RssFile", "HeapInuse", "seconds")
	for _, mode := range []string{"copy", "map"} {
		for _, step := range []string{"start", "loaded", "ran", "closed"} {
			f := got[mode][step]
			fmt.Fprintf(&sb, "%-5s %-7s %7s %7s %7s %7s %9s %8.3f\n", mode, step, mb(f.RSS), mb(f.HWM), mb(f.Anon), mb(f.File), mb(f.Heap), f.Seconds)
		}
	}
	t.Log("\n" + sb.String())
	if h := got["map"]["loaded"].Heap; h > size/10 {
		t.Errorf("heap after mapping the model: %s MB, want below 10%% of the file's %s MB", mb(h), mb(size))
	}
	if fp := got["map"]["ran"].File - got["map"]["start"].File; fp < size*8/10 {
		t.Errorf("file pages in the RSS after a forward pass: %s MB more than at start, want at least 80%% of the file's %s MB", mb(fp), mb(size))
	}
	if h := got["copy"]["loaded"].Heap; h < size*9/10 {
		t.Errorf("heap after copying the model: %s MB, want at least 90%% of the file's %s MB (is the measure right?)", mb(h), mb(size))
	}
	if a, c := got["map"]["ran"].Anon, got["copy"]["ran"].Anon; a > c-size/2 {
		t.Errorf("anonymous RSS after a forward pass: %s MB mapped, %s MB copied; mapping should save about the file's %s MB", mb(a), mb(c), mb(size))
	}
}

// largeDenseFile returns the path of BenchmarkLarge's dense F16 model,
// written once into the user cache directory (as benchFile does).
func largeDenseFile(t testing.TB) string {
	t.Helper()
	c := benchModels()[1]
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = t.TempDir()
	}
	dir = filepath.Join(dir, "mwpeer-bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	key := sha256.Sum256(fmt.Appendf(nil, "%+v", c))
	path := filepath.Join(dir, fmt.Sprintf("%s-%x.gguf", c.Name, key[:6]))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	tmp := fmt.Sprintf("%s.tmp%d", path, os.Getpid())
	if err := randmodel.WriteFile(tmp, c); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// BenchmarkLongContext reports decode tokens/s of the 180 MB dense F16
// model after a prompt that fills most of its 1,024-token context, where
// attention over the KV cache weighs most, and the cache's bytes per token.
// Run it with: go test ./inference/llama -run '^$' -bench LongContext -benchtime 1x
func BenchmarkLongContext(b *testing.B) {
	m, err := Load(largeDenseFile(b))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	const decode = 16
	ctxLen := m.Config.ContextLength
	prompt := make([]int, ctxLen-decode)
	for i := range prompt {
		prompt[i] = 3 + 'a' + i%26
	}
	var elapsed float64
	for b.Loop() {
		st := m.NewState(ctxLen, nil)
		b.StopTimer()
		logits, err := st.Forward(context.Background(), prompt)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		smp := NewSampler(Options{})
		start := time.Now()
		for range decode {
			if logits, err = st.Forward(context.Background(), []int{smp.Sample(logits)}); err != nil {
				b.Fatal(err)
			}
		}
		elapsed += time.Since(start).Seconds()
		b.ReportMetric(float64(st.cacheBytes())/float64(ctxLen), "cache-bytes/token")
	}
	b.ReportMetric(float64(b.N*decode)/elapsed, "decode-tok/s")
}

// TestBackendCloseWaitsForGenerations: a backend's Close waits for the
// generation under way, then unmaps the model; later generations are
// turned away with inference.ErrBusy, and a second Close does nothing.
func TestBackendCloseWaitsForGenerations(t *testing.T) {
	b, err := NewBackend(fixture(t, randmodel.TinyDense()), BackendOptions{Name: "m"})
	if err != nil {
		t.Fatal(err)
	}
	first, release := make(chan struct{}), make(chan struct{})
	generated := make(chan error, 1)
	go func() {
		once := false
		_, err := b.Generate(context.Background(), inference.Request{Model: "m", Prompt: "hello", MaxTokens: 4},
			func(inference.Chunk) error {
				if !once {
					once = true
					close(first)
					<-release
				}
				return nil
			})
		generated <- err
	}()
	<-first
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a generation ran", err)
	case <-time.After(100 * time.Millisecond):
	}
	if b.model.Mapped() == 0 {
		t.Fatal("the model was unmapped under a running generation")
	}
	close(release)
	if err := <-generated; err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if b.model.Mapped() != 0 {
		t.Error("the model is still mapped after Close")
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_, err = b.Generate(context.Background(), inference.Request{Model: "m", Prompt: "hello", MaxTokens: 1}, func(inference.Chunk) error { return nil })
	if !errors.Is(err, inference.ErrBusy) {
		t.Errorf("Generate after Close: %v, want ErrBusy", err)
	}
}
