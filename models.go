package mwpeer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/llama/randmodel"
)

// BuiltinModel is the model a peer serves with --engine embedded and no
// --model-file (see randmodel.BuiltinName).
const BuiltinModel = randmodel.BuiltinName

// newBackend builds the engine cfg names; nil for EngineNone. onRunning
// hears how many calls Ollama answers at once (see
// inference.OllamaConfig.OnRunning).
func newBackend(cfg Config, onRunning func(int)) (inference.Backend, error) {
	if cfg.Backend != nil {
		return cfg.Backend, nil
	}
	switch cfg.Engine {
	case EngineSynthetic:
		sc := cfg.Synthetic
		if len(sc.Models) == 0 {
			sc.Models = cfg.Models
		}
		return inference.NewSynthetic(sc), nil
	case EngineEmbedded:
		path := cfg.ModelFile
		if path == "" {
			var err error
			if path, err = randmodel.WriteBuiltin(cfg.DataDir); err != nil {
				return nil, err
			}
		}
		// One generation at a time: each already uses every core.
		return llama.NewBackend(path, llama.BackendOptions{Capacity: 1, QueueWait: 5 * time.Second})
	case EngineOllama:
		oc := inference.DefaultOllamaConfig()
		oc.URL = cfg.Ollama
		oc.Concurrency = 0 // the peer's priority queue bounds calls
		oc.IdleConns = max(cfg.Capacity, MaxMeasuredCapacity)
		oc.OnRunning = onRunning
		return inference.NewOllama(oc)
	}
	return nil, nil
}

// A peer serving Ollama with neither --capacity nor Ollama's variables
// measures how many calls Ollama runs at once: it starts at
// MeasuredCapacity (one call more than Ollama's default of one, to see
// whether two run together) and, whenever all its slots were seen
// answering at once (on two lines of answers: a loaded machine can make a
// call that ends as the next begins look parallel once), adds one, up to MaxMeasuredCapacity.
const (
	MeasuredCapacity    = 2
	MaxMeasuredCapacity = 64
)

// measure is the capacity a peer learns from its Ollama (see
// MeasuredCapacity).
type measure struct {
	prio atomic.Pointer[inference.Prioritized] // set once the queue exists
	log  *slog.Logger
	cap  atomic.Int64
	hits atomic.Int64 // times every slot was seen answering, at this capacity
}

// running hears that Ollama answers n calls at once.
func (m *measure) running(n int) {
	for {
		c := m.cap.Load()
		if int64(n) < c || c >= MaxMeasuredCapacity {
			return
		}
		if m.hits.Add(1) < 2 {
			return
		}
		if m.cap.CompareAndSwap(c, c+1) {
			m.hits.Store(0)
			if prio := m.prio.Load(); prio != nil {
				prio.SetCapacity(int(c + 1))
			}
			m.log.Debug("Ollama answered every call at once: one more slot", "running", n, "capacity", c+1)
			return
		}
	}
}

// BuiltinNote says what the built-in model is, wherever it is listed.
const BuiltinNote = api.BuiltinNote

// resolveEngine turns EngineAuto into the engine this peer serves with:
// Ollama when it answers at cfg.Ollama, else the embedded engine with
// cfg.ModelFile or the built-in model. It returns the engine and a sentence
// that says what was chosen and why (empty when cfg named an engine).
func resolveEngine(ctx context.Context, cfg Config, log *slog.Logger) (string, string) {
	if cfg.Engine != EngineAuto || cfg.Backend != nil {
		return cfg.Engine, ""
	}
	err := probeOllama(ctx, cfg.Ollama)
	if err == nil {
		note := "auto: Ollama answers at " + cfg.Ollama + "; serving its models"
		log.Info("engine auto: Ollama answers, serving its models", "engine", EngineOllama, "ollama", cfg.Ollama)
		return EngineOllama, note
	}
	model := BuiltinModel + " (" + BuiltinNote + ")"
	if cfg.ModelFile != "" {
		model = cfg.ModelFile
	}
	note := fmt.Sprintf("auto: no Ollama at %s (%v); serving %s with the embedded engine. "+
		"For real models, start Ollama (https://ollama.com) and restart this peer, or pass --ollama URL", cfg.Ollama, err, model)
	log.Info("engine auto: no Ollama answering; serving "+model+" with the embedded engine. For real models, start Ollama (https://ollama.com) and restart, or pass --ollama URL",
		"engine", EngineEmbedded, "ollama", cfg.Ollama, "err", err)
	return EngineEmbedded, note
}

// probeOllama checks, within a second, that an Ollama server answers
// GET /api/version at base. An mwpeer peer answers that path too (its
// Ollama API) and says so in a header: it is refused, so that a peer
// started with OLLAMA_HOST pointing at a peer never serves a peer.
func probeOllama(ctx context.Context, base string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/api/version", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer within 1s")
		}
		return fmt.Errorf("nothing answers: %v", errors.Unwrap(err))
	}
	defer resp.Body.Close()
	if resp.Header.Get(api.PeerHeader) != "" {
		return fmt.Errorf("that is an mwpeer peer, not Ollama")
	}
	var v struct {
		Version string `json:"version"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&v) != nil || v.Version == "" {
		return fmt.Errorf("GET /api/version answered %s, not Ollama's version", resp.Status)
	}
	return nil
}

// counted wraps a backend to count requests in progress (the load this
// peer announces), whether they came from its own API or from the swarm.
type counted struct {
	inference.Backend
	load *atomic.Int64
	// done counts the requests finished and tokens generated (prompt and
	// completion) since start: /api/status reports them.
	done *generated
}

type generated struct {
	requests, tokens atomic.Int64
	speed            speeds // the engine's own speed, announced
}

func (c counted) Generate(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	c.load.Add(1)
	defer c.load.Add(-1)
	f, err := c.Backend.Generate(ctx, req, emit)
	if c.done != nil {
		c.done.requests.Add(1)
		c.done.tokens.Add(int64(f.PromptTokens + f.CompletionTokens))
		if err == nil {
			c.done.speed.record(req.Model, f)
		}
	}
	return f, err
}
