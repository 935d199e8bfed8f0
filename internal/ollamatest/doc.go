// Package ollamatest runs a real Ollama server for integration tests.
//
// Tests that need one call Start, which skips the test unless the MWPEER_OLLAMA
// environment variable names an ollama binary (../shared/tools/build-ollama builds
// one for CPU). Each server is private to its test: its own port, model store and
// home directory, all removed when the test ends. Models are imported from GGUF
// files, typically written by package randmodel.
package ollamatest
