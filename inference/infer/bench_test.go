package infer

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/receipt"
)

// latencies records per-operation durations and reports their percentiles.
type latencies []time.Duration

func (l latencies) report(b *testing.B, prefix string) time.Duration {
	if len(l) == 0 {
		return 0
	}
	slices.Sort(l)
	p := func(q float64) time.Duration { return l[min(len(l)-1, int(q*float64(len(l))))] }
	b.ReportMetric(float64(p(0.50))/1e3, prefix+"p50-µs")
	b.ReportMetric(float64(p(0.99))/1e3, prefix+"p99-µs")
	return p(0.50)
}

func directMedian(b *testing.B, be inference.Backend, req inference.Request) time.Duration {
	var l latencies
	for range 2000 {
		start := time.Now()
		if _, err := be.Generate(context.Background(), req, func(inference.Chunk) error { return nil }); err != nil {
			b.Fatal(err)
		}
		l = append(l, time.Since(start))
	}
	slices.Sort(l)
	return l[len(l)/2]
}

// BenchmarkDirectOneToken is the baseline: a synthetic backend called in
// process, one token.
func BenchmarkDirectOneToken(b *testing.B) {
	be := inference.NewSynthetic(inference.SyntheticConfig{Tokens: 1})
	l := make(latencies, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := be.Generate(context.Background(), testReq, func(inference.Chunk) error { return nil }); err != nil {
			b.Fatal(err)
		}
		l = append(l, time.Since(start))
	}
	b.StopTimer()
	l.report(b, "")
}

// BenchmarkCallOneToken is one request to a remote peer over loopback TCP,
// answered with one token by a synthetic backend: the overlay's own cost.
func BenchmarkCallOneToken(b *testing.B) {
	client := newHost(b)
	srv := serve(b, client, inference.SyntheticConfig{Tokens: 1})
	base := directMedian(b, srv.b, testReq)
	l := make(latencies, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := Call(context.Background(), client, srv.h.ID(), testReq, func(inference.Chunk) error { return nil }); err != nil {
			b.Fatal(err)
		}
		l = append(l, time.Since(start))
	}
	b.StopTimer()
	p50 := l.report(b, "")
	b.ReportMetric(float64(p50-base)/1e3, "added-p50-µs")
}

// BenchmarkCallOneTokenReceipts is BenchmarkCallOneToken with receipts off
// and on, call for call interleaved: what the receipt exchange (the server
// signs, the client checks, verifies and countersigns, one frame each way)
// adds to a call as its caller sees it. The server checks the countersign
// after the caller has its answer.
func BenchmarkCallOneTokenReceipts(b *testing.B) {
	client := newHost(b)
	off := serve(b, client, inference.SyntheticConfig{Tokens: 1})
	h := newHost(b)
	nop := func(*receipt.Signed) error { return nil }
	svc := NewService(h, inference.NewSynthetic(inference.SyntheticConfig{Tokens: 1}), ServiceConfig{
		Receipts: &ServerReceipts{Key: keyOf(b, h), ActiveParams: params, Store: nop},
	})
	b.Cleanup(func() { svc.Close() })
	connect(b, client, h)
	opts := CallOptions{Key: keyOf(b, client), ActiveParams: params, Store: nop}
	lOff, lOn := make(latencies, 0, b.N), make(latencies, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := Call(context.Background(), client, off.h.ID(), testReq, func(inference.Chunk) error { return nil }); err != nil {
			b.Fatal(err)
		}
		lOff = append(lOff, time.Since(start))
		start = time.Now()
		if _, err := CallWith(context.Background(), client, h.ID(), testReq, func(inference.Chunk) error { return nil }, opts); err != nil {
			b.Fatal(err)
		}
		lOn = append(lOn, time.Since(start))
	}
	b.StopTimer()
	p50off, p50on := lOff.report(b, "off-"), lOn.report(b, "on-")
	b.ReportMetric(float64(p50on-p50off)/1e3, "added-p50-µs")
}

// BenchmarkCallStreamTTFT measures time to first token and streaming rate of
// a 64-token answer from a remote peer.
func BenchmarkCallStreamTTFT(b *testing.B) {
	const tokens = 64
	client := newHost(b)
	srv := serve(b, client, inference.SyntheticConfig{Tokens: tokens})
	ttft := make(latencies, 0, b.N)
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		first := true
		if _, err := Call(context.Background(), client, srv.h.ID(), testReq, func(inference.Chunk) error {
			if first {
				ttft = append(ttft, time.Since(start))
				first = false
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
	}
	b.StopTimer()
	ttft.report(b, "ttft-")
	b.ReportMetric(float64(tokens*b.N)/total.Seconds(), "tokens/s")
}

// BenchmarkDispatchFastestOneToken races two remote peers for one token.
func BenchmarkDispatchFastestOneToken(b *testing.B) {
	client := newHost(b)
	p1 := serve(b, client, inference.SyntheticConfig{Tokens: 1})
	p2 := serve(b, client, inference.SyntheticConfig{Tokens: 1})
	targets := []inference.Target{Target(client, p1.h.ID()), Target(client, p2.h.ID())}
	l := make(latencies, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := inference.Dispatch(context.Background(), targets, nil, inference.Fastest, testReq, func(string, inference.Chunk) error { return nil }); err != nil {
			b.Fatal(err)
		}
		l = append(l, time.Since(start))
	}
	b.StopTimer()
	l.report(b, "")
}
