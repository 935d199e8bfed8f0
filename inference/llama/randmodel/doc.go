// Package ggufgen writes small GGUF model files with seeded random weights, for tests.
//
// The files follow the llama architecture as llama.cpp (and so Ollama) reads it: a
// dense transformer, or a Mixtral-style Mixture-of-Experts when Config.Experts is
// set. The vocabulary is a SentencePiece ("llama") one made of <unk>, <s>, </s>, the
// 256 byte tokens and optional extra words, so any text can be tokenized. A file is
// a pure function of its Config: the same Config always gives the same bytes.
//
// The weights are random, so a model answers with nonsense. With Config.Printable
// (set by Tiny) the nonsense is printable ASCII and never ends early: one hidden
// dimension is set aside to hold down the logits of special tokens and of the
// other bytes, so each generated token is a whole piece of text with its own
// log-probability. What the files are for is exercising loaders, shard layouts,
// inference engines, and the comparison of their tokens and log-probabilities
// with those of llama.cpp as run by Ollama.
//
// The package does not read GGUF files; tests use github.com/ollama/ollama/fs/ggml.
package ggufgen
