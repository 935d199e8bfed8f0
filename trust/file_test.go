package trust

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestScoresPersistAndKeepDecaying: a store saved and opened again holds
// the same scores, reasons and exclusions, and decay goes on from the
// times the events happened, not from the restart.
func TestScoresPersistAndKeepDecaying(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	path := filepath.Join(t.TempDir(), "data", File)
	cfg := Config{Path: path, Now: c.now}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Observe("flaky", Event{Kind: Failure})
	s.Observe("flaky", Event{Kind: Success})
	s.Convict("liar", "m", "layer 0 expert 3: outvoted")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	want := map[string]Score{"flaky": s.Score("flaky"), "liar": s.Score("liar")}

	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for id, w := range want {
		g := r.Score(id)
		if g.Value != w.Value || g.Wrong != w.Wrong || !g.Excluded.Equal(w.Excluded) || len(g.Reasons) != len(w.Reasons) {
			t.Fatalf("%s after a restart: %+v, before %+v", id, g, w)
		}
		for i := range w.Reasons {
			if g.Reasons[i] != w.Reasons[i] {
				t.Fatalf("%s reasons %q, before %q", id, g.Reasons, w.Reasons)
			}
		}
	}
	if n := r.Counts("flaky"); n["failure"] != 1 || n["success"] != 1 {
		t.Fatalf("counts %v", n)
	}
	// A day later the wrong answer weighs half, exactly as if the peer had
	// not restarted.
	c.add(24 * time.Hour)
	if w := r.Score("liar").Wrong; w < 0.499 || w > 0.501 {
		t.Fatalf("a day later wrong = %v, want 0.5", w)
	}
	if r.Excluded("liar") {
		t.Fatal("still excluded a day later")
	}
}

func TestSaveIsAtomicAndOnlyWhenChanged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, File)
	s, err := Open(Config{Path: path, SaveEvery: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	s.Convict("liar", "m", "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not save the changed store")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("trust file mode %v: readable by others", fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir holds %d files, want only %s (no temporaries left)", len(ents), File)
	}
	// Nothing changed: Close does not rewrite it.
	before := fi.ModTime()
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); !fi.ModTime().Equal(before) {
		t.Fatal("an unchanged store was written again")
	}
}

func TestOpenRefusesABadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), File)
	for _, body := range []string{"{not json", `{"version": 99, "peers": {}}`} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(Config{Path: path}); err == nil {
			t.Fatalf("%q opened without an error", body)
		}
	}
	if s, err := Open(Config{Path: filepath.Join(t.TempDir(), "none", File)}); err != nil || s.Len() != 0 {
		t.Fatalf("a missing file: %v", err)
	}
}
