// Package llama is mwpeer's embedded inference engine: a pure-Go runner for
// GGUF models of the llama architecture (dense or Mixtral-style
// Mixture-of-Experts) and of the Qwen families (qwen2, qwen3, qwen2moe,
// qwen3moe; see arch_qwen.go), that aims to give the same tokens and
// log-probabilities as llama.cpp (as run by Ollama) for the same file and
// prompt.
//
// It owns GGUF loading (through github.com/ollama/ollama/fs/ggml), the tensor
// kernels, the forward pass with its KV cache, the tokenizers (SentencePiece
// and byte-level BPE with llama.cpp's pre-tokenizers), chat templates,
// sampling, and a Backend that serves one file through the inference.Backend
// interface. The MoE layer reaches its experts through the Experts interface,
// so that a later package can run them on other peers; the local
// implementation is the default.
//
// It does not route, dispatch or speak HTTP, and it does not run other
// architectures: Load names what it cannot run.
package llama
