package shard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Partial is a shard being written into a Store piece by piece, as a fetch
// receives it: the file partial/<hash>, of the shard's full size, and its
// record partial/<hash>.pieces, one byte per piece, 1 once that piece was
// verified. A store has at most one Partial of a hash open at a time.
type Partial struct {
	s      *Store
	m      *Manifest
	sh     Shard
	f, rec *os.File
	have   []bool // pieces verified when opened
	done   int64  // their bytes
	stored bool   // the store held the shard when p was opened
	unlock func()
}

// OpenPartial waits until no other Partial of sh is open in s, or ctx ends,
// then opens or creates the partial file of sh, a shard of m, keeping each
// piece its record says was verified if it still hashes right. If s already
// holds sh, the Partial is complete and Commit does nothing. The caller
// closes it.
func (s *Store) OpenPartial(ctx context.Context, m *Manifest, sh Shard) (*Partial, error) {
	unlock, err := s.lock(ctx, sh.Hash)
	if err != nil {
		return nil, err
	}
	p := &Partial{s: s, m: m, sh: sh, have: make([]bool, len(sh.Pieces)), unlock: unlock}
	if s.Has(sh.Hash) {
		for i := range p.have {
			p.have[i] = true
		}
		p.done, p.stored = sh.Size, true
		return p, nil
	}
	if err := p.open(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Partial) open() error {
	path := filepath.Join(p.s.dirs[0], partialDir, p.sh.Hash)
	var err error
	if p.f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		return err
	}
	if p.rec, err = os.OpenFile(path+".pieces", os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		return err
	}
	m, sh, f, rec := p.m, p.sh, p.f, p.rec
	marks := make([]byte, len(sh.Pieces))
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == sh.Size {
		if _, err := io.ReadFull(rec, marks); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return err
		}
	} else if err := f.Truncate(sh.Size); err != nil {
		return err
	}
	buf := make([]byte, m.PieceSize)
	for i, mark := range marks {
		if mark != 1 {
			marks[i] = 0
			continue
		}
		off, n := m.Piece(sh, i)
		if _, err := f.ReadAt(buf[:n], off); err != nil {
			marks[i] = 0
			continue
		}
		if sum := sha256.Sum256(buf[:n]); hex.EncodeToString(sum[:]) == sh.Pieces[i] {
			p.have[i] = true
			p.done += n
		} else {
			marks[i] = 0
		}
	}
	if err := rec.Truncate(0); err != nil {
		return err
	}
	_, err = rec.WriteAt(marks, 0)
	return err
}

// Verified returns which pieces were verified when p was opened, and their
// bytes.
func (p *Partial) Verified() (pieces []bool, bytes int64) {
	return append([]bool(nil), p.have...), p.done
}

// WritePiece checks data against the manifest's hash of piece i and, if it
// matches, writes it and records the piece verified. Data that does not
// match is not written: the error wraps ErrCorrupt.
func (p *Partial) WritePiece(i int, data []byte) error {
	if i < 0 || i >= len(p.sh.Pieces) {
		return fmt.Errorf("piece %d of %s: the shard has %d", i, p.sh.Hash, len(p.sh.Pieces))
	}
	off, n := p.m.Piece(p.sh, i)
	if int64(len(data)) != n {
		return fmt.Errorf("piece %d of %s: %d bytes, want %d: %w", i, p.sh.Hash, len(data), n, ErrCorrupt)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != p.sh.Pieces[i] {
		return fmt.Errorf("piece %d of %s hashes to %x, want %s: %w", i, p.sh.Hash, sum, p.sh.Pieces[i], ErrCorrupt)
	}
	if p.stored {
		return nil
	}
	if _, err := p.f.WriteAt(data, off); err != nil {
		return err
	}
	_, err := p.rec.WriteAt([]byte{1}, int64(i))
	return err
}

// Commit checks the whole file's hash and moves it into the store, where
// the shard then is. The Partial must still be closed.
func (p *Partial) Commit() error {
	if p.stored {
		return nil
	}
	if p.f == nil {
		return fmt.Errorf("partial %s is closed", p.sh.Hash)
	}
	if err := p.f.Sync(); err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(p.f, 0, p.sh.Size)); err != nil {
		return err
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != p.sh.Hash {
		// Every piece matched yet the whole does not: the manifest's piece
		// hashes disagree with its shard hash. Start over next time.
		_ = p.rec.Truncate(0)
		return fmt.Errorf("whole file hashes to %s, want %s: %w", sum, p.sh.Hash, ErrCorrupt)
	}
	path := p.f.Name()
	p.closeFiles()
	if err := p.s.place(path, p.sh.Hash); err != nil {
		return err
	}
	os.Remove(path + ".pieces")
	p.stored = true
	return nil
}

// Close closes p's files, keeping what was verified for the next attempt,
// and lets the next OpenPartial of the shard proceed.
func (p *Partial) Close() error {
	p.closeFiles()
	if p.unlock != nil {
		p.unlock()
		p.unlock = nil
	}
	return nil
}

func (p *Partial) closeFiles() {
	if p.f != nil {
		p.f.Close()
	}
	if p.rec != nil {
		p.rec.Close()
	}
	p.f, p.rec = nil, nil
}
