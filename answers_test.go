package mwpeer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/swarm"
)

// fastGarbage serves the synthetic engine's models (same names, same
// digests) but answers at once: the honest first token, then nonsense.
type fastGarbage struct{ *inference.Synthetic }

func (g fastGarbage) Generate(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	first := req
	first.MaxTokens = 1
	if _, err := inference.NewSynthetic(inference.SyntheticConfig{Models: []string{req.Model}}).Generate(ctx, first, emit); err != nil {
		return inference.Final{}, err
	}
	n := req.MaxTokens
	if n <= 0 {
		n = 16
	}
	for i := 1; i < n; i++ {
		if err := emit(inference.Chunk{Text: fmt.Sprintf(" garbage%d", i)}); err != nil {
			return inference.Final{}, err
		}
	}
	return inference.Final{CompletionTokens: n, FinishReason: inference.FinishStop}, nil
}

// TestFastGarbageNeverReachesAVerifiedClient: three peers serve one model
// with the same digest; one of them answers at once with nonsense. A fourth
// peer, serving nothing, asks for verified answers: the nonsense never
// reaches it, and once the liar is caught (on the first verified request
// once measurements rank it first, as its speed does) it is convicted, and
// fastest requests without verification never choose it.
func TestFastGarbageNeverReachesAVerifiedClient(t *testing.T) {
	const model, liarIdx = "verified-model", 3
	peers := startSwarm(t, 4, func(i int, c *Config) {
		c.Models = []string{model}
		c.Domains = []string{"general"}
		c.Synthetic = inference.SyntheticConfig{Tokens: 12, TTFT: 40 * time.Millisecond}
		switch i {
		case 0:
			c.Engine = EngineNone
		case liarIdx:
			c.Backend = fastGarbage{inference.NewSynthetic(inference.SyntheticConfig{Models: []string{model}})}
		}
	})
	client, liar := peers[0], peers[liarIdx].ID().String()
	wait.For(t, slow(20*time.Second), "the client knows the three servers", func() error {
		for _, m := range client.Router().Models() {
			if m.ID == model && m.Peers == 3 {
				return nil
			}
		}
		return fmt.Errorf("models %+v", client.Router().Models())
	})

	ask := func(i int, verify bool) (swarm.Answer, string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), slow(10*time.Second))
		defer cancel()
		req := inference.Request{Model: model, Prompt: fmt.Sprintf("question %d: why is the sky blue?", i), MaxTokens: 12}
		var sb strings.Builder
		ans, err := client.Router().Complete(ctx, swarm.Query{Request: req, Verify: verify, Strategy: "fastest", K: 3},
			func(_ string, c inference.Chunk) error { sb.WriteString(c.Text); return nil })
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if verify {
			req = inference.VerifyRequest(req)
		}
		var want strings.Builder
		if _, err := inference.NewSynthetic(inference.SyntheticConfig{Models: []string{model}, Tokens: 12}).Generate(ctx, req,
			func(c inference.Chunk) error { want.WriteString(c.Text); return nil }); err != nil {
			t.Fatal(err)
		}
		return ans, sb.String(), want.String()
	}

	// Unverified, the liar wins every race: its first token comes at once,
	// and the client gets nonsense. The measurements rank it first.
	garbled := 0
	for i := range 3 {
		if _, got, want := ask(-1-i, false); got != want {
			garbled++
		}
	}
	t.Logf("unverified: %d of 3 answers were the liar's nonsense", garbled)

	trust := client.Router().Trust()
	n := 0
	for !trust.Excluded(liar) {
		n++
		if n > 20 {
			t.Fatalf("the liar is not convicted after 20 verified requests: %+v", trust.Score(liar))
		}
		ans, got, want := ask(n, true)
		if got != want || !ans.Verified || slices.Contains(ans.Experts, liar) {
			t.Fatalf("verified request %d: client saw %q from %v, want %q", n, got, ans.Experts, want)
		}
	}
	t.Logf("the liar was convicted after %d verified requests: %v", n, trust.Score(liar).Reasons)

	chosen := trust.Counts(liar)["chosen"]
	for i := range 10 {
		ans, got, want := ask(100+i, false)
		if got != want || slices.Contains(ans.Experts, liar) {
			t.Fatalf("fastest request %d after the conviction: client saw %q from %v, want %q", i, got, ans.Experts, want)
		}
	}
	if after := trust.Counts(liar)["chosen"]; after != chosen {
		t.Fatalf("the convicted liar was asked %d times by fastest", after-chosen)
	}
	// /api/peers shows the client's score of the liar, with its reasons.
	for _, pi := range client.Peers().Peers {
		if pi.ID == liar {
			if pi.Trust == nil || pi.Trust.Value >= 0.5 || pi.Trust.Excluded.IsZero() || len(pi.Trust.Reasons) == 0 {
				t.Fatalf("/api/peers shows the liar's trust as %+v", pi.Trust)
			}
			return
		}
	}
	t.Fatal("/api/peers does not list the liar")
}

// TestVerifyAnswersConfig: verified answers are opt-in, and a share outside
// 0..1 is refused naming the field.
func TestVerifyAnswersConfig(t *testing.T) {
	if DefaultConfig().VerifyAnswers != 0 {
		t.Fatal("verified answers are opt-in")
	}
	cfg := testConfig(t)
	cfg.VerifyAnswers = 1.5
	var fe *FieldError
	if err := cfg.Validate(); !errors.As(err, &fe) || fe.Field != "VerifyAnswers" {
		t.Fatalf("VerifyAnswers 1.5: %v", err)
	}
}
