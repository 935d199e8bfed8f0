package randmodel

import (
	"fmt"
	"os"
	"path/filepath"
)

// BuiltinName is the model a peer serves with the embedded engine and no
// model file: a 1 MB Mixtral-style MoE (64 wide, 2 layers, 4 experts, byte
// vocabulary) with seeded random weights. It answers printable gibberish. It
// is there so a fresh machine can take part in the swarm, run the whole path
// (routing, dispatch, the engine, experts) and be measured, with nothing to
// download; real answers need a real model file or Ollama.
const BuiltinName = "mwpeer-tiny-random"

// WriteBuiltin writes the built-in model into dir once (atomically) and
// returns its path; an existing file is kept.
func WriteBuiltin(dir string) (string, error) {
	path := filepath.Join(dir, BuiltinName+".gguf")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	c := Tiny()
	c.Name = BuiltinName
	tmp := path + ".tmp"
	if err := WriteFile(tmp, c); err != nil {
		return "", fmt.Errorf("write built-in model: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write built-in model: %w", err)
	}
	return path, nil
}
