// Package fuzzcorpus adds seeds to a fuzz target and, when a test binary runs
// with -write-seeds, also writes them to the target's seed corpus in
// testdata/fuzz/<target>/, in the form go test reads. Seeds made from real
// encoded messages then live in the repository beside the crashers that
// fuzzing found, and are regenerated after a wire change with
//
//	go test -run '^Fuzz' ./pkg -args -write-seeds
package fuzzcorpus

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var write = flag.Bool("write-seeds", false, "also write the seeds of fuzz targets to testdata/fuzz/")

// Add adds args as a seed of f, and writes them to f's seed corpus when the
// test binary runs with -write-seeds. Args are of the types the fuzz target
// takes: []byte, string, bool, int, int64, uint64 or float64.
func Add(f *testing.F, args ...any) {
	f.Helper()
	f.Add(args...)
	if !*write {
		return
	}
	data, err := Marshal(args...)
	if err != nil {
		f.Fatal(err)
	}
	sum := sha256.Sum256(data)
	dir := filepath.Join("testdata", "fuzz", f.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "seed-"+hex.EncodeToString(sum[:8])), data, 0o644); err != nil {
		f.Fatal(err)
	}
}

// Marshal encodes args in go test's corpus file format ("go test fuzz v1").
func Marshal(args ...any) ([]byte, error) {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%s)\n", strconv.Quote(v))
		case bool:
			fmt.Fprintf(&b, "bool(%v)\n", v)
		case int:
			fmt.Fprintf(&b, "int(%d)\n", v)
		case int64:
			fmt.Fprintf(&b, "int64(%d)\n", v)
		case uint64:
			fmt.Fprintf(&b, "uint64(%d)\n", v)
		case float64:
			fmt.Fprintf(&b, "float64(%s)\n", strconv.FormatFloat(v, 'g', -1, 64))
		default:
			return nil, fmt.Errorf("fuzzcorpus: no corpus form for %T", a)
		}
	}
	return []byte(b.String()), nil
}
