package api

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/mwpeer/mwpeer/inference"
)

// Limits on an embeddings request.
const (
	MaxEmbeddingInputs     = 256
	MaxEmbeddingInputBytes = 256 << 10
	// embedChunkTokens is the chunk budget one input buys on the wire: an
	// embedding is one chunk of up to ~100 KB of JSON, and a remote answer
	// may hold infer.ChunkBytes per token of its max_tokens.
	embedChunkTokens = 32
)

type embeddingsRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
	User           string          `json:"user"`
	Mwpeer         *mwpeerOptions  `json:"mwpeer"`
}

// handleEmbeddings serves POST /v1/embeddings: the inputs go, in one
// request, to a peer serving an embedding model (Ollama's /api/embed).
func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	var req embeddingsRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	c := commonRequest{Model: req.Model, Mwpeer: req.Mwpeer}
	q, err := c.toQuery()
	if err != nil {
		writeErr(w, err)
		return
	}
	var one string
	var inputs []string
	switch {
	case json.Unmarshal(req.Input, &one) == nil:
		inputs = []string{one}
	case json.Unmarshal(req.Input, &inputs) == nil:
	default:
		writeErr(w, bad("input", "input must be a string or an array of strings (token arrays are not supported)"))
		return
	}
	if len(inputs) == 0 || len(inputs) > MaxEmbeddingInputs {
		writeErr(w, bad("input", "input must hold 1 to %d strings", MaxEmbeddingInputs))
		return
	}
	for _, in := range inputs {
		if in == "" || len(in) > MaxEmbeddingInputBytes {
			writeErr(w, bad("input", "each input must be 1 to %d bytes", MaxEmbeddingInputBytes))
			return
		}
	}
	switch req.EncodingFormat {
	case "", "float", "base64":
	default:
		writeErr(w, bad("encoding_format", "encoding_format must be float or base64"))
		return
	}
	if req.Dimensions != nil {
		writeErr(w, bad("dimensions", "dimensions is not supported: the model's own size is returned"))
		return
	}
	q.Request.Input = inputs
	q.Request.MaxTokens = min(MaxTokensCap, embedChunkTokens*len(inputs))
	q.K, q.Strategy, q.Verify = 1, "fastest", false // one peer embeds every input
	capToBudget(r, &q)
	ctx, cancel := context.WithDeadline(r.Context(), q.Request.Deadline)
	defer cancel()
	var vecs [][]float32
	ans, err := s.swarm.Complete(ctx, q, func(_ string, c inference.Chunk) error {
		if c.Embedding != nil {
			vecs = append(vecs, c.Embedding)
		}
		return nil
	})
	s.charge(r, ans)
	if err != nil {
		writeErr(w, err)
		return
	}
	if len(vecs) != len(inputs) {
		writeError(w, http.StatusBadGateway, "experts_failed", "the expert returned "+strconv.Itoa(len(vecs))+" embeddings for "+strconv.Itoa(len(inputs))+" inputs")
		return
	}
	type item struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"`
	}
	data := make([]item, len(vecs))
	for i, v := range vecs {
		data[i] = item{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			b := make([]byte, 4*len(v))
			for j, x := range v {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(x))
			}
			data[i].Embedding = base64.StdEncoding.EncodeToString(b)
		}
	}
	prompt := ans.Final.PromptTokens
	w.Header().Set("X-Mwpeer-Experts", strings.Join(ans.Experts, ","))
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list", "data": data, "model": answerModel(ans, q),
		"usage":  map[string]int{"prompt_tokens": prompt, "total_tokens": prompt},
		"mwpeer": info(ans),
	})
}
