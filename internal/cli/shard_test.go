package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestShardSplitThenVerify(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "tiny.gguf")
	if err := randmodel.WriteFile(model, randmodel.Tiny()); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "shards")
	code, out, errs := runCLI("shard", "split", model, "--out", store)
	if code != exitOK {
		t.Fatalf("split: exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "9 shards") || !strings.Contains(out, "model ") {
		t.Errorf("split printed:\n%s", out)
	}

	code, out, errs = runCLI("shard", "verify", store)
	if code != exitOK || !strings.Contains(out, "9 ok, 0 missing, 0 corrupt") {
		t.Fatalf("verify: exit %d:\n%s%s", code, out, errs)
	}

	// A missing shard is shown but fine; a flipped byte is not.
	blobs, _ := filepath.Glob(filepath.Join(store, "blobs", "sha256-*"))
	os.Remove(blobs[0])
	data, _ := os.ReadFile(blobs[1])
	data[10] ^= 1
	os.WriteFile(blobs[1], data, 0o644)
	code, out, _ = runCLI("shard", "verify", store)
	if code != exitError || !strings.Contains(out, "7 ok, 1 missing, 1 corrupt") {
		t.Fatalf("verify after damage: exit %d:\n%s", code, out)
	}
}

func TestShardBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"shard"},
		{"shard", "bogus"},
		{"shard", "split"},
		{"shard", "split", "model.gguf"},
		{"shard", "split", "--out", "dir"},
		{"shard", "split", "a.gguf", "b.gguf", "--out", "dir"},
		{"shard", "split", "--nope"},
		{"shard", "verify"},
	} {
		if code, _, errs := runCLI(args...); code != exitUsage || !strings.Contains(errs, "Usage") {
			t.Errorf("%q: exit %d, stderr %q; want %d with usage", args, code, errs, exitUsage)
		}
	}
	if code, _, errs := runCLI("shard", "split", filepath.Join(t.TempDir(), "none.gguf"), "--out", t.TempDir()); code != exitError || errs == "" {
		t.Errorf("split of a missing file: exit %d, %q", code, errs)
	}
	if code, _, _ := runCLI("shard", "verify", filepath.Join(t.TempDir(), "none")); code != exitError {
		t.Errorf("verify of a missing dir: exit %d", code)
	}
}
