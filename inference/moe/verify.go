package moe

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
)

// DefaultVerify is the share of remote expert calls a peer spot-checks
// unless configured otherwise: 2%.
const DefaultVerify = 0.02

// checked is a spot-checked call. hosts are all the replicas in replica
// order, peers those that announce the kernel set of the first one
// (sameKernels). One kernel set gives each row the same bits whatever the
// batch and the cores, so honest replicas of one set agree bit for bit and
// any difference between them means one computed wrongly. Sets differ in
// the last bits (avx2, neon and generic sum in other orders and quantize
// activations differently), so replicas of different sets are never
// compared: an honest neon host would be outvoted by two avx2 ones.
//
// The rows go to the first two peers at once, so the check costs a second
// call's bandwidth and compute but no latency: the layer waits for the
// slower of two round trips instead of one. If they agree, that is the
// answer. If one fails, the other's answer is used unchecked (as an
// unchecked call's would be); if both fail, the call fails over to the rest
// (of any set) as usual. If they disagree, the remaining peers of the same
// set are asked one at a time until an answer has two votes: that is the
// answer, so the token is computed right, and every host that answered
// otherwise is convicted (trust.Store.Convict: excluded from replica
// choice, reported to OnBadHost). If no two answers agree (two replicas of
// the set only, or every other one failing), nobody can be blamed: the call
// fails with ErrNoHost rather than return a possibly wrong answer.
//
// A kernel set is the host's own claim, and the bound is this: a host
// claiming a set no other replica announces is never spot-checked (Unpaired
// counts the sampled calls that went unchecked when it came first; an
// answer that is not finite still convicts it), but it never votes on
// another set's check either, so it is never believed over a majority.
// Claiming the set of the honest hosts gains a liar nothing: it is checked
// against them as before.
//
// Calls that are not sampled are used as they come (once the client made
// sure they are finite), so a host that lies on every call is caught after
// 1/Verify of its calls on average; the tokens computed from its answers
// before that are not recomputed.
func (x *Experts) checked(ctx context.Context, layer, expert int, hosts, peers []peer.ID, in, out [][]float32) error {
	alt := rowsLike(in)
	var errA, errB error
	var wg sync.WaitGroup
	wg.Go(func() { errA = x.call(ctx, peers[0], layer, expert, in, out) })
	wg.Go(func() { errB = x.call(ctx, peers[1], layer, expert, in, alt) })
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case errA != nil && errB != nil:
		rest := slices.DeleteFunc(slices.Clone(hosts), func(p peer.ID) bool { return p == peers[0] || p == peers[1] })
		return x.first(ctx, layer, expert, rest, in, out, []error{
			fmt.Errorf("%s: %w", peers[0].ShortString(), errA), fmt.Errorf("%s: %w", peers[1].ShortString(), errB)})
	case errA != nil:
		x.Failovers.Add(1)
		copyRows(out, alt)
		return nil
	case errB != nil:
		return nil
	}
	x.Checks.Add(1)
	if equalRows(out, alt) {
		return nil
	}
	type vote struct {
		host peer.ID
		rows [][]float32
	}
	votes := []vote{{peers[0], out}, {peers[1], alt}}
	var won [][]float32
	for _, p := range peers[2:] {
		rows := rowsLike(in)
		if err := x.call(ctx, p, layer, expert, in, rows); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		for _, v := range votes {
			if equalRows(v.rows, rows) {
				won = rows
				break
			}
		}
		votes = append(votes, vote{p, rows})
		if won != nil {
			break
		}
	}
	if won == nil {
		x.Undecided.Add(1)
		names := make([]string, len(votes))
		for i, v := range votes {
			names[i] = v.host.ShortString()
		}
		x.log().Warn("expert replicas disagree and none can decide", "model", x.Model.String()[:12],
			"layer", layer, "expert", expert, "hosts", strings.Join(names, ","))
		return fmt.Errorf("%w (layer %d expert %d: a spot-check found %d replicas (%s) disagreeing and none to decide)",
			ErrNoHost, layer, expert, len(votes), strings.Join(names, ", "))
	}
	var majority []string
	for _, v := range votes {
		if equalRows(v.rows, won) {
			majority = append(majority, v.host.ShortString())
		}
	}
	for _, v := range votes {
		if !equalRows(v.rows, won) {
			x.convict(v.host, layer, expert, fmt.Sprintf("answer outvoted by %s on a spot-check (%s)",
				strings.Join(majority, " and "), firstDiff(v.rows, won)))
		}
	}
	copyRows(out, won)
	return nil
}

// convict records that host p answered expert (layer, expert) wrongly: the
// trust store excludes it, and a new offence is logged and reported to
// OnBadHost.
func (x *Experts) convict(p peer.ID, layer, expert int, why string) {
	reason := fmt.Sprintf("layer %d expert %d: %s", layer, expert, why)
	model := x.Model.String()
	if !x.trust().Convict(p.String(), model, reason) {
		return
	}
	x.Caught.Add(1)
	x.log().Warn("expert host answered wrongly: excluded", "host", p.ShortString(), "model", model[:12], "reason", reason)
	if x.OnBadHost != nil {
		x.OnBadHost(p, model, reason)
	}
}

func (x *Experts) log() *slog.Logger {
	if x.Log != nil {
		return x.Log
	}
	return slog.Default()
}

// rowsLike returns rows of the shape of in.
func rowsLike(in [][]float32) [][]float32 {
	dim := len(in[0])
	back := make([]float32, len(in)*dim)
	out := make([][]float32, len(in))
	for i := range out {
		out[i] = back[i*dim : (i+1)*dim : (i+1)*dim]
	}
	return out
}

func copyRows(dst, src [][]float32) {
	for i := range dst {
		copy(dst[i], src[i])
	}
}

// equalRows compares bit for bit (so -0 differs from 0).
func equalRows(a, b [][]float32) bool {
	for i := range a {
		for j := range a[i] {
			if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
				return false
			}
		}
	}
	return true
}

// firstDiff describes where a first differs from b.
func firstDiff(a, b [][]float32) string {
	for i := range a {
		for j := range a[i] {
			if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
				return fmt.Sprintf("row %d value %d: %v, not %v", i, j, a[i][j], b[i][j])
			}
		}
	}
	return "no difference"
}
