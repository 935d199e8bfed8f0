package mwpeer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/routing"
	"github.com/mwpeer/mwpeer/swarm"
)

// slowPings answers libp2p pings after delay each: a peer that is really
// far away, on loopback.
func slowPings(delay time.Duration) network.StreamHandler {
	return func(s network.Stream) {
		defer s.Close()
		buf := make([]byte, ping.PingSize)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			time.Sleep(delay)
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	}
}

// TestLiarIsNotRankedFirstOnceMeasured: a real peer announces that it is
// 1 µs from everyone, that its network coordinate is perfect (error 0), that
// it serves every domain and model and has 2^30 free slots. It is in fact
// 150 ms away and takes 400 ms to its first token. Once the victim has
// pinged it and asked it a few prompts, an honest peer is ranked first, and
// /api/route and /api/peers say which of the liar's inputs are reported.
func TestLiarIsNotRankedFirstOnceMeasured(t *testing.T) {
	const (
		victimAt, honestAt, liarAt = 0, 1, 2
		pingDelay                  = 150 * time.Millisecond
		liarTTFT                   = 400 * time.Millisecond
	)
	peers := startSwarm(t, 3, func(i int, c *Config) {
		c.Domains = []string{"general"}
		c.Models = []string{"m"}
		switch i {
		case victimAt:
			c.Models = []string{"own"}
			c.HTTPAddr = "127.0.0.1:0"
			c.Ping = 300 * time.Millisecond // measure soon
		case liarAt:
			c.Synthetic.TTFT = liarTTFT
		}
	})
	victim, honest, liar := peers[victimAt], peers[honestAt], peers[liarAt]
	wait.For(t, slow(10*time.Second), "catalogs complete", func() error { return catalogsHoldAll(peers, nil) })

	liar.Host.SetStreamHandler(ping.ID, slowPings(pingDelay))
	perfect := coordinate.NewCoordinate(coordinate.DefaultConfig())
	perfect.Error = 0
	lie := func(a *experts.Announcement) {
		a.Domains = experts.Domains
		a.Models = append(a.Models, experts.Model{Name: "own"}, experts.Model{Name: "gpt-5"}, experts.Model{Name: "llama3.2:1b"})
		a.Capacity, a.Load = 1<<30, 0
		a.RTT = map[string]float64{}
		for _, p := range peers {
			if p != liar {
				a.RTT[p.ID().String()] = 0.001
			}
		}
		a.Coord = perfect
	}
	liar.lie.Store(&lie)
	liar.Gossip.Changed()
	liarID, honestID := liar.ID().String(), honest.ID().String()
	wait.For(t, slow(15*time.Second), "the victim hears the lie", func() error {
		e, ok := victim.Catalog.Get(liarID)
		if !ok || e.Capacity != 1<<30 || e.RTT[victim.ID().String()] != 0.001 {
			return fmt.Errorf("the liar's entry is not the lie yet")
		}
		return nil
	})
	// The row about the victim is reported, and never the RTT to the liar.
	if r := victim.Latency.Estimate(liarID); r.Source == geo.SourceReported || r.Value == time.Microsecond {
		t.Fatalf("RTT to the liar %v (%s): its own claim reached the estimate", r.Value, r.Source)
	}
	wait.For(t, slow(20*time.Second), "the victim measures the liar's pings", func() error {
		if r := victim.Latency.Estimate(liarID); r.Source != geo.SourceMeasured || r.Value < pingDelay/2 {
			return fmt.Errorf("RTT to the liar %v (%s)", r.Value, r.Source)
		}
		return nil
	})
	// A few prompts to both, letting both finish (blend), so both TTFTs are measured.
	ctx, cancel := context.WithTimeout(context.Background(), slow(30*time.Second))
	defer cancel()
	for i := 0; i < 3; i++ {
		q := swarm.Query{Request: inference.Request{Model: "m", Prompt: "hello there", MaxTokens: 4}, K: 2, Strategy: "blend"}
		if _, err := victim.Router().Complete(ctx, q, func(string, inference.Chunk) error { return nil }); err != nil {
			t.Fatalf("prompt %d: %v", i, err)
		}
	}
	wait.For(t, slow(10*time.Second), "both measured", func() error {
		for _, id := range []string{liarID, honestID} {
			if victim.Router().Trust().Perf(id, "m").Calls == 0 {
				return fmt.Errorf("%s not measured yet", id)
			}
		}
		return nil
	})

	var d struct {
		Chosen     []routing.Scored  `json:"chosen"`
		Candidates []json.RawMessage `json:"candidates"`
	}
	liarPost(t, ctx, victim, "/api/route", `{"model":"m","prompt":"hello there","mwpeer":{"k":1}}`, &d)
	if len(d.Chosen) != 1 || d.Chosen[0].Peer != honestID {
		t.Fatalf("chosen %+v, want the honest peer %s", d.Chosen, honestID)
	}
	var liarInputs struct {
		Peer     string `json:"peer"`
		Capacity int    `json:"capacity"`
		RTT      struct {
			Ms     *float64 `json:"ms"`
			Source string   `json:"source"`
		} `json:"rtt"`
		TTFTMs  float64           `json:"ttft_ms"`
		Sources map[string]string `json:"sources"`
	}
	for _, raw := range d.Candidates {
		var c struct {
			Peer string `json:"peer"`
		}
		json.Unmarshal(raw, &c)
		if c.Peer == liarID {
			json.Unmarshal(raw, &liarInputs)
		}
	}
	if liarInputs.Peer == "" {
		t.Fatalf("the liar is no candidate")
	}
	if liarInputs.Capacity > routing.MaxCapacity || liarInputs.Sources["capacity"] != routing.SourceReported ||
		liarInputs.Sources["load"] != routing.SourceReported || liarInputs.Sources["domains"] != routing.SourceReported {
		t.Errorf("the liar's claims in /api/route: capacity %d, sources %v", liarInputs.Capacity, liarInputs.Sources)
	}
	if liarInputs.RTT.Source != routing.SourceMeasured || liarInputs.RTT.Ms == nil || *liarInputs.RTT.Ms < float64(pingDelay/time.Millisecond)/2 {
		t.Errorf("the liar's RTT in /api/route: %+v", liarInputs.RTT)
	}
	if liarInputs.Sources["ttft"] != routing.SourceMeasured || liarInputs.TTFTMs < float64(liarTTFT/time.Millisecond)/2 {
		t.Errorf("the liar's TTFT in /api/route: %v ms (%s)", liarInputs.TTFTMs, liarInputs.Sources["ttft"])
	}

	var ps struct {
		Peers []struct {
			ID  string `json:"id"`
			RTT struct {
				Ms     *float64 `json:"ms"`
				Source string   `json:"source"`
			} `json:"rtt"`
			RTTSource string            `json:"rtt_source"`
			Sources   map[string]string `json:"sources"`
		} `json:"peers"`
	}
	liarGet(t, ctx, victim, "/api/peers", &ps)
	found := false
	for _, p := range ps.Peers {
		if p.ID != liarID {
			continue
		}
		found = true
		if p.RTT.Source != "measured" || p.RTTSource != "measured" || p.RTT.Ms == nil || *p.RTT.Ms < float64(pingDelay/time.Millisecond)/2 {
			t.Errorf("the liar in /api/peers: rtt %+v, rtt_source %s", p.RTT, p.RTTSource)
		}
		if p.Sources["capacity"] != "reported" || p.Sources["domains"] != "reported" || p.Sources["rtt"] != "measured" {
			t.Errorf("the liar's sources in /api/peers: %v", p.Sources)
		}
	}
	if !found {
		t.Fatalf("the liar is not in /api/peers")
	}
}

func liarPost(t *testing.T, ctx context.Context, p *Peer, path, body string, out any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.HTTPAddr()+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	liarDo(t, req, out)
}

func liarGet(t *testing.T, ctx context.Context, p *Peer, path string, out any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	liarDo(t, req, out)
}

func liarDo(t *testing.T, req *http.Request, out any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: %v: %s", req.URL.Path, err, b)
	}
}
