package mwpeer

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/internal/ollamatest"
)

// deadURL is an http URL where nothing listens.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	return url
}

// autoPeer starts one peer with the default engine (auto) and Ollama at url.
func autoPeer(t *testing.T, url string) *Peer {
	t.Helper()
	return startSwarm(t, 1, func(i int, c *Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.Engine = DefaultConfig().Engine
		c.Ollama = url
		c.Models = nil
		c.Capacity = 0
	})[0]
}

// listModels is GET /v1/models of p.
func listModels(t *testing.T, p *Peer) []map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + p.HTTPAddr() + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data []map[string]any `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Data
}

// TestEngineAutoWithoutOllamaServesTheBuiltinModel: a fresh machine (no
// Ollama) answers out of the box with the embedded engine, and says so in
// its status and model list, with what to do for real models.
func TestEngineAutoWithoutOllamaServesTheBuiltinModel(t *testing.T) {
	if DefaultConfig().Engine != EngineAuto {
		t.Fatalf("default engine %q, want auto", DefaultConfig().Engine)
	}
	p := autoPeer(t, deadURL(t))
	st := p.Status()
	if st.Engine != EngineEmbedded || !strings.Contains(st.EngineNote, "no Ollama") ||
		!strings.Contains(st.EngineNote, BuiltinNote) || !strings.Contains(st.EngineNote, "start Ollama") {
		t.Fatalf("status engine %q, note %q", st.Engine, st.EngineNote)
	}
	if got := p.Models(); len(got) != 1 || got[0].Name != BuiltinModel {
		t.Fatalf("serves %+v, want the built-in model", got)
	}
	if p.cfg.Capacity != 1 {
		t.Fatalf("capacity %d, want 1 for the embedded engine", p.cfg.Capacity)
	}
	models := listModels(t, p)
	if len(models) != 1 || models[0]["id"] != BuiltinModel || models[0]["engine"] != EngineEmbedded || models[0]["description"] != BuiltinNote {
		t.Fatalf("/v1/models: %v", models)
	}
	// And it answers.
	resp, err := http.Post("http://"+p.HTTPAddr()+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"auto","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat: %s", resp.Status)
	}
}

// TestEngineAutoWithOllamaServesItsModels: when Ollama answers, auto is
// Ollama, and the capacity is what Ollama runs at once.
func TestEngineAutoWithOllamaServesItsModels(t *testing.T) {
	fake := ollamatest.StartFake(t)
	p := autoPeer(t, fake.URL)
	st := p.Status()
	if st.Engine != EngineOllama || !strings.Contains(st.EngineNote, "Ollama answers") {
		t.Fatalf("status engine %q, note %q", st.Engine, st.EngineNote)
	}
	if got := p.Models(); len(got) != 2 || got[0].Name != ollamatest.FakeEmbedModel || got[1].Name != ollamatest.FakeModel {
		t.Fatalf("serves %+v, want the fake Ollama's models", got)
	}
	if p.capacity() != MeasuredCapacity {
		t.Fatalf("capacity %d, want %d to start with (then measured)", p.capacity(), MeasuredCapacity)
	}
	if m := listModels(t, p); len(m) != 2 || m[0]["engine"] != EngineOllama || m[0]["description"] != nil {
		t.Fatalf("/v1/models: %v", m)
	}
}

// TestEngineAutoNeverServesAPeer: OLLAMA_HOST pointing at a peer (as for
// the ollama CLI) must not make another peer take it for its Ollama.
func TestEngineAutoNeverServesAPeer(t *testing.T) {
	other := autoPeer(t, deadURL(t))
	p := autoPeer(t, "http://"+other.HTTPAddr())
	if st := p.Status(); st.Engine != EngineEmbedded || !strings.Contains(st.EngineNote, "mwpeer peer") {
		t.Fatalf("status engine %q, note %q", st.Engine, st.EngineNote)
	}
}

// TestOllamaCapacityIsMeasured: with neither --capacity nor Ollama's
// variables, a peer serving Ollama grows its capacity while Ollama answers
// every call it is given at once, and not beyond what Ollama runs.
func TestOllamaCapacityIsMeasured(t *testing.T) {
	load := func(p *Peer, calls int) {
		var wg sync.WaitGroup
		for range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.Post("http://"+p.HTTPAddr()+"/v1/chat/completions", "application/json",
					strings.NewReader(`{"model":"fake:latest","messages":[{"role":"user","content":"hi"}]}`))
				if err == nil {
					resp.Body.Close()
				}
			}()
		}
		wg.Wait()
	}
	t.Run("parallel", func(t *testing.T) {
		fake := ollamatest.StartFake(t)
		fake.Tokens, fake.Delay = 4, 10*time.Millisecond
		p := autoPeer(t, fake.URL)
		for range 10 {
			load(p, 8)
		}
		if c := p.capacity(); c < 6 {
			t.Fatalf("capacity %d after rounds of 8 calls Ollama answers at once, want it grown to at least 6", c)
		}
	})
	t.Run("serial", func(t *testing.T) {
		fake := ollamatest.StartFake(t)
		fake.Tokens, fake.Delay, fake.Serial = 3, 5*time.Millisecond, true
		p := autoPeer(t, fake.URL)
		for range 5 {
			load(p, 4)
		}
		if c := p.capacity(); c != MeasuredCapacity {
			t.Fatalf("capacity %d in front of an Ollama that runs one call at a time, want %d", c, MeasuredCapacity)
		}
	})
	t.Run("ollama's variables", func(t *testing.T) {
		fake := ollamatest.StartFake(t)
		p := startSwarm(t, 1, func(i int, c *Config) {
			c.HTTPAddr, c.Engine, c.Ollama, c.Models, c.Capacity, c.OllamaParallel = "127.0.0.1:0", EngineOllama, fake.URL, nil, 0, 4
		})[0]
		load(p, 8)
		if c := p.capacity(); c != 4 {
			t.Fatalf("capacity %d with OLLAMA_NUM_PARALLEL x OLLAMA_MAX_LOADED_MODELS = 4", c)
		}
	})
}
