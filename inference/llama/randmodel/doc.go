// Package randmodel writes GGUF files with seeded random weights: the built-in
// model mwpeer-tiny-random and the fixtures tests use.
//
// The files follow the llama architecture as llama.cpp (and so Ollama) reads it: a
// dense transformer, or a Mixtral-style Mixture-of-Experts when Config.Experts is
// set; or, with Config.Arch, one of the Qwen families (qwen2, qwen3, qwen2moe,
// qwen3moe) or deepseek2 (with Config.DeepSeek2). The vocabulary is a SentencePiece ("llama") one made of <unk>, <s>,
// </s>, the 256 byte tokens and optional extra words, so any text can be
// tokenized; or, with Config.BPE, a byte-level BPE one (256 byte tokens, merges,
// special tokens, a pre-tokenizer name and a chat template). A file is a pure
// function of its Config: the same Config always gives the same bytes.
//
// The weights are random, so a model answers with nonsense. With Config.Printable
// (set by Tiny) the nonsense is printable ASCII and never ends early: one hidden
// dimension is set aside to hold down the logits of special tokens and of the
// other bytes, so each generated token is a whole piece of text with its own
// log-probability. What the files are for is exercising loaders, shard layouts,
// inference engines, and the comparison of their tokens and log-probabilities
// with those of llama.cpp as run by Ollama.
//
// The package only writes: it does not read GGUF files (its tests use
// github.com/ollama/ollama/fs/ggml) and does not import the engine in package
// llama, so any package, test or not, may import it.
package randmodel
