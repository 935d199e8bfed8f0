package mwpeer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/consent"
	"github.com/mwpeer/mwpeer/inference/infer"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/p2p"
)

// identities makes n data dirs holding identities, so tests know peers' IDs
// (and keys) before they start.
func identities(t *testing.T, n int) ([]string, []crypto.PrivKey, []peer.ID) {
	dirs, keys, ids := make([]string, n), make([]crypto.PrivKey, n), make([]peer.ID, n)
	for i := range n {
		dirs[i] = t.TempDir()
		k, err := p2p.LoadOrCreateIdentity(filepath.Join(dirs[i], p2p.IdentityFile))
		if err != nil {
			t.Fatal(err)
		}
		keys[i], ids[i] = k, mustID(t, k)
	}
	return dirs, keys, ids
}

func mustID(t *testing.T, k crypto.PrivKey) peer.ID {
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// askK posts a chat completion through p, asking k experts at once, and
// returns the completion tokens of the answer, or the status and body of a
// refusal.
func askK(t *testing.T, p *Peer, model string, k int) (tokens int, status int, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), slow(20*time.Second))
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.HTTPAddr()+"/v1/chat/completions",
		strings.NewReader(fmt.Sprintf(`{"model":%q,"mwpeer":{"k":%d},"messages":[{"role":"user","content":"tell me a story"}]}`, model, k)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, resp.StatusCode, string(data)
	}
	var out struct {
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out.Usage.CompletionTokens, resp.StatusCode, ""
}

// outcomes counts the outcomes of the calls a peer served, by code.
type outcomes struct {
	mu sync.Mutex
	n  map[string]int
	by map[string]map[peer.ID]int
}

func (o *outcomes) hook(_ context.Context, c infer.Completion) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n, o.by = map[string]int{}, map[string]map[peer.ID]int{}
	}
	o.n[c.Outcome]++
	if o.by[c.Outcome] == nil {
		o.by[c.Outcome] = map[peer.ID]int{}
	}
	o.by[c.Outcome][c.Caller]++
}

func (o *outcomes) get(outcome string, caller peer.ID) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.by[outcome][caller]
}

func writePolicy(t *testing.T, file, text string) {
	t.Helper()
	tmp := file + ".new"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil { // as editors save
		t.Fatal(err)
	}
}

// TestConsentPolicyInTheSwarm: B shares under a policy file. Its per-peer
// limits hold, a change to the file is picked up while it runs, a peer it
// denies is refused with consent_refused and served by another expert, and
// an invalid file keeps the policy in force.
func TestConsentPolicyInTheSwarm(t *testing.T) {
	dirs, _, ids := identities(t, 3)
	pf := filepath.Join(t.TempDir(), "policy.toml")
	writePolicy(t, pf, "share = [\"syn-*\"]\nlocal = [\"syn-local\"]\n[limits]\nmax_tokens = 3\n")
	var served outcomes
	// A asks; B serves syn-a, syn-b and syn-local under the policy; C
	// serves syn-a openly.
	peers := apiSwarm(t, [][]string{{}, {"syn-a", "syn-b", "syn-local"}, {"syn-a"}}, func(i int, c *Config) {
		c.DataDir = dirs[i]
		if i == 1 {
			c.PolicyFile = pf
			c.Serving.CompleteInfer = served.hook
		}
	})
	a, b := peers[0], peers[1]

	// A model kept local is neither announced nor served to others.
	wait.For(t, slow(10*time.Second), "A knows what B shares", func() error {
		e, ok := a.Catalog.Get(b.ID().String())
		if !ok {
			return fmt.Errorf("B unknown")
		}
		if len(e.Models) != 2 {
			return fmt.Errorf("B announces %d models", len(e.Models))
		}
		return nil
	})
	for _, m := range b.Models() {
		if m.Name == "syn-local" {
			goto local
		}
	}
	t.Fatal("B does not serve syn-local locally")
local:
	e, _ := a.Catalog.Get(b.ID().String())
	for _, m := range e.Models {
		if m.Name == "syn-local" {
			t.Fatal("B announces syn-local, which its policy keeps local")
		}
	}

	// max_tokens = 3: B answers at most 3 completion tokens (synthetic
	// answers are 12).
	for range 3 {
		if n, status, body := askK(t, a, "syn-b", 1); status != 200 || n != 3 {
			t.Fatalf("syn-b from B: status %d (%s), %d completion tokens, want 3", status, body, n)
		}
	}

	// /api/status counts what B's engine generated.
	if g := b.Status().Generated; g.Requests < 3 || g.Tokens < 9 {
		t.Fatalf("B's status says its engine generated %+v after 3 answers of 3 tokens", g)
	}

	// Deny A: the watcher picks the change up.
	writePolicy(t, pf, "share = [\"syn-*\"]\nlocal = [\"syn-local\"]\ndeny = [\""+ids[0].String()+"\"]\n")
	wait.For(t, slow(20*time.Second), "B's policy denies A", func() error {
		if len(b.Policy().Deny) != 1 {
			return fmt.Errorf("deny list %v", b.Policy().Deny)
		}
		return nil
	})
	// Only B serves syn-b: A is refused, with consent_refused.
	if _, status, body := askK(t, a, "syn-b", 1); status == 200 {
		t.Fatalf("denied A got syn-b from B: %s", body)
	}
	if served.get("consent_refused", ids[0]) == 0 {
		t.Fatal("B refused A without consent_refused")
	}
	// Both serve syn-a: asked of both at once, B refuses and C answers,
	// every time, and B's refusals do not count against it.
	okBefore := served.get(infer.OutcomeOK, ids[0])
	refusedBefore := served.get("consent_refused", ids[0])
	for range 4 {
		if _, status, body := askK(t, a, "syn-a", 2); status != 200 {
			t.Fatalf("syn-a with B denying A: status %d: %s", status, body)
		}
	}
	if served.get(infer.OutcomeOK, ids[0]) != okBefore {
		t.Fatal("B served A after denying it")
	}
	if served.get("consent_refused", ids[0]) == refusedBefore {
		t.Fatal("B was never asked for syn-a: the test proves nothing")
	}

	// An invalid file keeps the policy in force.
	writePolicy(t, pf, "share = [\n")
	if err := b.ReloadPolicy(); err == nil {
		t.Fatal("an invalid policy loaded")
	}
	if len(b.Policy().Deny) != 1 {
		t.Fatal("an invalid file replaced the policy in force")
	}
	// A model not served at all (here: not in B's --models) is unknown to
	// others even when its engine has it.
	if _, status, _ := askK(t, a, "syn-z", 1); status == 200 {
		t.Fatal("A got a model nobody serves")
	}
}

// TestConsentTokenLetsTheHolderIn: B serves syn-b to grant holders only.
// A holds a grant B signed for 30 tokens; D holds none.
func TestConsentTokenLetsTheHolderIn(t *testing.T) {
	dirs, keys, ids := identities(t, 3)
	pf := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, pf, "who: [grants]\n")
	now := time.Now()
	tok, err := consent.Issue(keys[1], ids[0], "syn-*", 30, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	peers := apiSwarm(t, [][]string{{}, {"syn-b"}, {}}, func(i int, c *Config) {
		c.DataDir = dirs[i]
		switch i {
		case 0:
			c.Grants = []string{tok}
		case 1:
			c.PolicyFile = pf
		}
	})
	a, d := peers[0], peers[2]
	if _, status, _ := askK(t, d, "syn-b", 1); status == 200 {
		t.Fatal("D, without a grant, was served")
	}
	// A's grant covers 30 tokens, prompt and completion: the answers stop
	// before it is used up far beyond.
	total, refusedAt := 0, 0
	for i := range 10 {
		n, status, _ := askK(t, a, "syn-b", 1)
		if status != 200 {
			refusedAt = i
			break
		}
		total += n
	}
	if refusedAt == 0 {
		t.Fatalf("A was served %d completion tokens on a 30-token grant and never refused", total)
	}
	if total == 0 || total > 30 {
		t.Fatalf("A got %d completion tokens on a 30-token grant", total)
	}
}
