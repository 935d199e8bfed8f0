package shard

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// TestPartialKeepsOnlyVerifiedPieces: a partial shard takes a piece only if
// it hashes as the manifest says, becomes a stored shard on Commit, and is
// open once at a time per hash.
func TestPartialKeepsOnlyVerifiedPieces(t *testing.T) {
	dir := t.TempDir()
	m, err := SplitWith(genModel(t, randmodel.Tiny(), false), dir, SplitOptions{PieceSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	sh := m.Dense()
	data, err := os.ReadFile(filepath.Join(dir, blobsDir, blobPrefix+sh.Hash))
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddManifest(m.Bytes()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := s.OpenPartial(ctx, m, sh)
	if err != nil {
		t.Fatal(err)
	}
	if have, n := p.Verified(); n != 0 || len(have) != len(sh.Pieces) {
		t.Fatalf("a new partial has %d bytes verified, %d pieces", n, len(have))
	}
	// Another Partial of the same shard waits for this one.
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := s.OpenPartial(short, m, sh); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second partial of the shard: %v, want it to wait", err)
	}

	piece := func(i int) []byte { off, n := m.Piece(sh, i); return append([]byte(nil), data[off:off+n]...) }
	bad := piece(1)
	bad[7] ^= 1
	if err := p.WritePiece(1, bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a corrupt piece: %v, want ErrCorrupt", err)
	}
	if err := p.WritePiece(1, piece(1)[1:]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a short piece: %v, want ErrCorrupt", err)
	}
	for i := range sh.Pieces {
		if err := p.WritePiece(i, piece(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if !s.Has(sh.Hash) {
		t.Fatal("the committed shard is not in the store")
	}
	if f, _, err := s.OpenDense(m.ID()); err != nil {
		t.Fatal(err)
	} else {
		f.Close()
	}
	// Once stored, a Partial of it is complete.
	p, err = s.OpenPartial(ctx, m, sh)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, n := p.Verified(); n != sh.Size {
		t.Fatalf("a stored shard's partial has %d of %d bytes verified", n, sh.Size)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dirs()[0], partialDir)); len(ents) != 0 {
		t.Errorf("%d files left in partial/", len(ents))
	}
}
