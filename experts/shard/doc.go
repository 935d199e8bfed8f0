// Package shard owns the pieces a Mixture-of-Experts model is cut into so that
// peers can host parts of it: the manifest that describes them, the split of
// a MoE GGUF (llama, qwen2moe or qwen3moe) into a dense shard and one shard per (layer,
// expert), and the on-disk store that holds shards by content, including the
// partial files of shards being fetched (Store.OpenPartial), whose pieces it
// checks against the manifest before it keeps them.
//
// It speaks no protocol, decides nothing about which experts a peer hosts,
// advertises nothing on the DHT and runs no model. Package transfer moves
// shards between peers (/mwpeer/shard/1.0.0). The store hands out verified
// bytes (Store.OpenDense, Store.ReadExpert) and knows nothing of the engine:
// package moe builds the engine's objects from them (moe.LoadDense,
// moe.LoadExpert).
//
// # Manifest and IDs
//
// A Manifest (JSON, version 1) names the model and its shape and lists every
// shard: its SHA-256, size, role ("dense" or "expert"), layer and expert (both
// 0 for the dense shard), the tensors it holds (GGML type, GGUF shape, offset
// and size inside the shard file) and the SHA-256 of each fixed-size piece of
// the file, so a fetch verifies every piece as it arrives. A manifest is
// stored exactly as json.Marshal writes it (Parse rejects any other byte
// sequence), and the model ID is the SHA-256 of those bytes.
//
// The dense shard is a GGUF file holding every key-value pair of the source
// byte for byte and every tensor but the per-expert ones, so the engine loads
// it as a model without experts (llama.ReadWith with WithoutExperts). An
// expert shard is the raw bytes of that expert's gate, up and down matrices,
// one after the other, as sliced from the source's stacked ffn_*_exps tensors;
// the manifest names them blk.L.ffn_gate.E.weight, blk.L.ffn_up.E.weight and
// blk.L.ffn_down.E.weight.
//
// # On-disk layout
//
// A store directory holds:
//
//	manifests/<model ID>.json   a manifest, its exact bytes
//	blobs/sha256-<hex>          a shard, named by the SHA-256 of its bytes
//	partial/<hex>               a shard being fetched (a sparse file of its full size)
//	partial/<hex>.pieces        one byte per piece, 1 once that piece was verified
//
// Files are written to a temporary name in the same directory and renamed
// into place, so a name under manifests/ or blobs/ is always a whole file.
// Names starting with "." are temporary and ignored.
package shard
