//go:build purego

package llama

import (
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/purego.golden with this machine's pure-Go results")

// TestPureGoIsTheSameEverywhere: the pure-Go kernels (the purego build, and
// every architecture without SIMD kernels) give the same bits on every
// architecture. testdata/purego.golden holds, for each built-in tiny model
// and weight type, a hash of the tokens and of every log-probability of a
// 16-token greedy generation, written on amd64; scripts/test.sh runs this
// test on amd64 and on arm64 under qemu-aarch64. It fails when a compiler
// fuses a product into a sum (arm64 does unless the product is converted:
// see tensor.go), and when a change moves the pure-Go arithmetic, which is
// the oracle of the anchor tests: rewrite the file with -update-golden only
// after those pass against Ollama's portable build.
//
// F32 weights are left out: there the activations meet the weights
// unrounded, and they carry last-bit differences from Go's math package,
// whose Exp, Sin, Cos, Log and Pow give other float64 bits on arm64 than
// on amd64 (both have their own code; measured on 200,000 inputs each).
// F16 weights and quantized ones take F16-rounded or int8 activations,
// and there the two architectures agree bit for bit.
func TestPureGoIsTheSameEverywhere(t *testing.T) {
	f16 := randmodel.Tiny()
	f16.Name, f16.Type = "mwpeer-tiny-moe-f16", randmodel.F16
	var got []string
	for _, c := range []randmodel.Config{randmodel.Tiny(), randmodel.TinyDense(), f16} {
		for _, typ := range []uint32{typeF32, typeQ8_0, typeQ4_0} {
			if (c.Type == randmodel.F16) != (typ == typeF32) {
				continue // F32 weights: see below
			}
			name := c.Name
			if typ != typeF32 {
				name += "-" + typeName(typ)
			}
			m := load(t, c)
			if typ != typeF32 {
				requantize(t, m, typ)
			}
			toks, lps := greedy(t, m, m.Vocab.Encode("The quick brown fox jumps over the lazy dog"), 16)
			h := sha256.New()
			for i, tok := range toks {
				h.Write(binary.LittleEndian.AppendUint32(nil, uint32(tok)))
				for _, lp := range lps[i] {
					h.Write(binary.LittleEndian.AppendUint32(nil, math.Float32bits(lp)))
				}
			}
			got = append(got, fmt.Sprintf("%s %x", name, h.Sum(nil)))
		}
	}
	path := filepath.Join("testdata", "purego.golden")
	if *updateGolden {
		if err := os.WriteFile(path, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(want) != len(got) {
		t.Fatalf("%s has %d lines, the test makes %d: run with -update-golden", path, len(want), len(got))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("pure Go on %s: %s, want %s", runtime.GOARCH, got[i], want[i])
		}
	}
}
