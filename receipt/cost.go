package receipt

import (
	"math"
	"math/bits"
)

// Credits are counted in micro-credits: 1 credit = 1,000,000.
const Micro = 1_000_000

// Cost prices work in micro-credits, by one rule:
//
//	cost = tokens × weight × deadline
//
// tokens is prompt plus completion tokens. weight is the model's active
// parameters in billions (for a Mixture-of-Experts model the parameters one
// token uses, not all of them), at least 0.1, so a token of a 1B model costs
// one milli-credit and 1,000 of them one credit. deadline is 1 when the
// answer met the requester's deadline and 0.5 when it missed it: late work
// earns half. An unknown parameter count (0) prices as 1B.
func Cost(promptTokens, completionTokens int, activeParams int64, missedDeadline bool) uint64 {
	tokens := float64(max(promptTokens, 0) + max(completionTokens, 0))
	weight := 1.0
	if activeParams > 0 {
		weight = max(float64(activeParams)/1e9, 0.1)
	}
	c := tokens * weight * Micro / 1000
	if missedDeadline {
		c /= 2
	}
	return uint64(math.Round(c))
}

// ExpertCost prices expert calls by the same rule through their arithmetic:
// a token of a dense model of P parameters takes about 2P flops, so flops /
// 2 stand for parameter-tokens, priced like tokens of a 1B model per 1e9.
func ExpertCost(flops uint64) uint64 {
	return uint64(math.Round(float64(flops) / 2 / 1e9 * Micro / 1000))
}

// ExpertFlops is the arithmetic of expert calls that carried values (rows ×
// embedding) through SwiGLU experts of hidden size feedForward: each row
// takes three products with an embedding × feedForward matrix (gate, up,
// down) at 2 flops per multiply-add, 2·3·embedding·feedForward flops a row.
// It saturates rather than wrap.
func ExpertFlops(values uint64, feedForward int) uint64 {
	hi, lo := bits.Mul64(values, 6*uint64(max(feedForward, 0)))
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}

// ShardCost prices shard bytes served, seeding credit: one credit per GiB
// (2^30 bytes). Sending bytes costs a source little next to computing, so a
// GiB earns what 1,000 tokens of a 1B model do; a peer that seeds a 4 GiB
// model to a few others earns enough for a good many prompts in return.
func ShardCost(bytes uint64) uint64 {
	return uint64(math.Round(float64(bytes) * Micro / (1 << 30)))
}
