package p2p

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// IdentityFile is the name of the key file inside the data directory.
const IdentityFile = "identity.key"

// maxIdentitySize bounds what is read from the key file: an Ed25519 key in
// libp2p's protobuf encoding is 68 bytes.
const maxIdentitySize = 4096

// LoadOrCreateIdentity returns the Ed25519 key stored at path, creating it
// (mode 0600, directory 0700) when the file does not exist. A file that
// exists but cannot be read or decoded is an error: it is never replaced,
// since that would silently change the peer's name.
func LoadOrCreateIdentity(path string) (crypto.PrivKey, error) {
	data, err := readCapped(path, maxIdentitySize)
	if err == nil {
		key, err := crypto.UnmarshalPrivateKey(data)
		if err != nil {
			return nil, fmt.Errorf("identity file %s is corrupt (%v); move it away to create a new identity", path, err)
		}
		if key.Type() != crypto.Ed25519 {
			return nil, fmt.Errorf("identity file %s holds a %s key, want Ed25519", path, key.Type())
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	data, err = crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode identity: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	// Write to a temporary file and link it into place, so a crash never
	// leaves a half-written key and a concurrent start never overwrites one.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".identity-*")
	if err != nil {
		return nil, fmt.Errorf("write identity: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write identity: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write identity: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write identity: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write identity: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) { // another process won the race: use its key
			return LoadOrCreateIdentity(path)
		}
		return nil, fmt.Errorf("write identity: %w", err)
	}
	return key, nil
}

func readCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d an identity can be", path, st.Size(), max)
	}
	buf := make([]byte, st.Size())
	if _, err := f.ReadAt(buf, 0); err != nil && st.Size() > 0 {
		return nil, err
	}
	return buf, nil
}
