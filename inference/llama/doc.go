// Package llama is mwpeer's embedded inference engine: a pure-Go runner for
// GGUF models of the llama architecture (dense or Mixtral-style
// Mixture-of-Experts), of the Qwen families (qwen2, qwen3, qwen2moe,
// qwen3moe; see arch_qwen.go) and of deepseek2 (DeepSeek-V2, V2-Lite, V3;
// see arch_deepseek2.go), that aims to give the same tokens and
// log-probabilities as llama.cpp or Ollama's own engine (as Ollama runs the
// file) for the same file and prompt.
//
// It owns GGUF loading (through github.com/ollama/ollama/fs/ggml), the tensor
// kernels, the forward pass with its KV cache, the tokenizers (SentencePiece
// and byte-level BPE with llama.cpp's pre-tokenizers), chat templates,
// sampling, and a Backend that serves one file through the inference.Backend
// interface. The MoE layer reaches its experts through the Experts interface,
// so that a later package can run them on other peers; the local
// implementation is the default.
//
// Load maps a GGUF file read-only instead of copying it: the tensors are
// views of the file's pages, which the kernel reads on first use and shares
// with the page cache and other processes. Every tensor is checked to lie
// within the file's size when it is mapped, so a short or truncated file is
// an error at load. The file must then stay as it is until the model is
// closed: truncating it makes reads of the lost pages fault (SIGBUS, which
// ends the process) and rewriting it in place changes the weights under a
// running model. Replace a model file by writing a new one and renaming it
// over the old (experts/shard's store only ever does that); the mapping
// keeps the old file's data. Model.Close unmaps; a Backend closes its model
// once its generations end. Read and ReadWith copy from any io.ReadSeeker.
//
// It does not route, dispatch or speak HTTP, and it does not run other
// architectures: Load names what it cannot run.
package llama
