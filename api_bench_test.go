package mwpeer

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/inference"
)

// These benchmarks measure the overlay with the synthetic backend (a fake
// that costs next to nothing): client -> HTTP on peer B -> libp2p stream ->
// peer A -> backend, against calling the backend directly.
//
//	go test -run '^$' -bench API -benchtime 2000x .

func benchSwarm(b *testing.B, tokens int) (*Peer, *http.Client) {
	b.Helper()
	peers := startSwarm(b, 2, func(i int, c *Config) {
		c.HTTPAddr = "127.0.0.1:0"
		if i == 0 {
			c.Models = []string{"syn"}
			c.Capacity = 256
			c.Synthetic.Tokens = tokens
		} else {
			c.Engine = EngineNone
			c.Models = nil
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for len(peers[1].Router().Models()) == 0 {
		if time.Now().After(deadline) {
			b.Fatal("peer B never learnt of A's model")
		}
		time.Sleep(20 * time.Millisecond)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}
	b.Cleanup(tr.CloseIdleConnections)
	return peers[1], &http.Client{Transport: tr}
}

const benchBody = `{"model":"syn","messages":[{"role":"user","content":"hi"}]}`

func post1(b *testing.B, c *http.Client, url, body string) {
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[min(len(ds)-1, int(float64(len(ds))*p))]
}

// directLatency times the synthetic backend called in process.
func directLatency(n int, tokens int) []time.Duration {
	s := inference.NewSynthetic(inference.SyntheticConfig{Models: []string{"syn"}, Tokens: tokens})
	req := inference.Request{Model: "syn", Messages: []inference.Message{{Role: "user", Content: "hi"}}}
	out := make([]time.Duration, n)
	for i := range out {
		start := time.Now()
		s.Generate(context.Background(), req, func(inference.Chunk) error { return nil })
		out[i] = time.Since(start)
	}
	return out
}

// BenchmarkAPIOneToken: one request at a time, a 1-token answer.
func BenchmarkAPIOneToken(b *testing.B) {
	p, c := benchSwarm(b, 1)
	url := "http://" + p.HTTPAddr() + "/v1/chat/completions"
	for i := 0; i < 50; i++ { // warm connections and stats
		post1(b, c, url, benchBody)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		post1(b, c, url, benchBody)
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	direct := directLatency(b.N, 1)
	d50, d99 := percentile(direct, 0.5), percentile(direct, 0.99)
	p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64((p50-d50).Microseconds())/1000, "added-p50-ms")
	b.ReportMetric(float64((p99-d99).Microseconds())/1000, "added-p99-ms")
}

// BenchmarkAPIStreamTTFT: time to the first streamed token of a 32-token answer.
func BenchmarkAPIStreamTTFT(b *testing.B) {
	p, c := benchSwarm(b, 32)
	url := "http://" + p.HTTPAddr() + "/v1/chat/completions"
	body := `{"model":"syn","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	ttft := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		resp, err := c.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		r := bufio.NewReader(resp.Body)
		got := false
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				break
			}
			if !got && strings.Contains(line, `"content":"`) && !strings.Contains(line, `"content":""`) {
				ttft = append(ttft, time.Since(start))
				got = true
			}
		}
		resp.Body.Close()
		if !got {
			b.Fatal("no token streamed")
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(ttft, 0.5).Microseconds())/1000, "ttft-p50-ms")
	b.ReportMetric(float64(percentile(ttft, 0.99).Microseconds())/1000, "ttft-p99-ms")
}

// BenchmarkAPIThroughput: requests per second through one peer, 32 clients.
func BenchmarkAPIThroughput(b *testing.B) {
	p, c := benchSwarm(b, 1)
	url := "http://" + p.HTTPAddr() + "/v1/chat/completions"
	b.SetParallelism(16) // 16 x GOMAXPROCS(2) = 32 concurrent clients
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			post1(b, c, url, benchBody)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// BenchmarkFailoverGap: the serving expert is killed mid-stream; the metric
// is the client's longest wait between two tokens, which spans the failover
// (tokens otherwise come every 5 ms).
func BenchmarkFailoverGap(b *testing.B) {
	var gaps []time.Duration
	for i := 0; i < b.N; i++ {
		peers := startSwarm(b, 3, func(i int, c *Config) {
			c.HTTPAddr = "127.0.0.1:0"
			if i < 2 {
				c.Models = []string{"syn"}
				c.Synthetic.Tokens = 40
				c.Synthetic.Rate = 200
			} else {
				c.Engine = EngineNone
				c.Models = nil
			}
		})
		for peers[2].Catalog.Len() < 2 {
			time.Sleep(10 * time.Millisecond)
		}
		resp, err := http.Post("http://"+peers[2].HTTPAddr()+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"syn","stream":true,"mwpeer":{"k":1},"messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			b.Fatal(err)
		}
		expert := resp.Header.Get("X-Mwpeer-Experts")
		r := bufio.NewReader(resp.Body)
		n, failedOver := 0, 0
		last := time.Now()
		var worst time.Duration
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				break
			}
			if strings.Contains(line, `"failovers":`) && !strings.Contains(line, `"failovers":0`) {
				failedOver++
			}
			if !strings.Contains(line, `"content":"`) || strings.Contains(line, `"content":""`) {
				continue
			}
			now := time.Now()
			if n > 0 {
				worst = max(worst, now.Sub(last))
			}
			last = now
			n++
			if n == 10 {
				for _, p := range peers[:2] {
					if p.ID().String() == expert {
						go p.crash()
					}
				}
			}
		}
		resp.Body.Close()
		if n < 40 || failedOver == 0 {
			b.Fatalf("%d tokens arrived, failover reported: %v", n, failedOver > 0)
		}
		gaps = append(gaps, worst)
	}
	b.ReportMetric(float64(percentile(gaps, 0.5).Microseconds())/1000, "failover-gap-p50-ms")
	b.ReportMetric(float64(percentile(gaps, 1).Microseconds())/1000, "failover-gap-max-ms")
}
