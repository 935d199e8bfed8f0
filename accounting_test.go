package mwpeer

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/openai/openai-go"
	"github.com/openai/openai-go/option"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/ledger"
	"github.com/mwpeer/mwpeer/p2p"
	"github.com/mwpeer/mwpeer/receipt"
)

// receiptsOf decodes every receipt p's ledger holds.
func receiptsOf(t *testing.T, p *Peer) []*receipt.Signed {
	t.Helper()
	st, err := p.ledger.Statement(time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var out []*receipt.Signed
	for _, b64 := range st.Receipts {
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatal(err)
		}
		s, err := receipt.UnmarshalSigned(raw)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestReceiptsMatchAcrossTheSwarm: A serves B five prompts asked through
// B's OpenAI API. Both ledgers hold the same five receipts, signed by both,
// and their token counts are the usage the client saw.
func TestReceiptsMatchAcrossTheSwarm(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}, {}}, nil)
	a, b := peers[0], peers[1]
	cl := sdk(b)
	var prompt, completion int64
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), slow(10*time.Second))
		resp, err := cl.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "syn-a",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprintf("question %d", i))},
		})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		prompt += resp.Usage.PromptTokens
		completion += resp.Usage.CompletionTokens
	}
	wait.For(t, slow(10*time.Second), "both ledgers hold five signed receipts", func() error {
		for _, p := range []*Peer{a, b} {
			_, tot, err := p.ledger.Balances()
			if err != nil {
				return err
			}
			if tot.Receipts != 5 || tot.Unsigned != 0 {
				return fmt.Errorf("%s holds %d signed and %d unsigned", p.ID().ShortString(), tot.Receipts, tot.Unsigned)
			}
		}
		return nil
	})
	ra, rb := receiptsOf(t, a), receiptsOf(t, b)
	if len(ra) != 5 || len(rb) != 5 {
		t.Fatalf("%d and %d receipts", len(ra), len(rb))
	}
	var gotPrompt, gotCompletion int64
	for i := range ra {
		if !slices.Equal(ra[i].Marshal(), rb[i].Marshal()) {
			t.Fatalf("receipt %d differs between the two ledgers", i)
		}
		if err := ra[i].Verify(); err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		if ra[i].Server != a.ID() || ra[i].Requester != b.ID() {
			t.Fatalf("receipt %d is between %s and %s", i, ra[i].Server.ShortString(), ra[i].Requester.ShortString())
		}
		gotPrompt += int64(ra[i].PromptTokens)
		gotCompletion += int64(ra[i].CompletionTokens)
	}
	if gotPrompt != prompt || gotCompletion != completion {
		t.Fatalf("receipts count %d prompt and %d completion tokens, the client's usage %d and %d", gotPrompt, gotCompletion, prompt, completion)
	}
	ba, err := a.ledger.Balance(b.ID())
	if err != nil {
		t.Fatal(err)
	}
	bb, err := b.ledger.Balance(a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if ba.Earned == 0 || ba.Earned != bb.Spent || ba.Balance != -bb.Balance {
		t.Fatalf("A's view of B %+v and B's view of A %+v do not mirror each other", ba, bb)
	}
	var view struct {
		Peers []ledger.Balance `json:"peers"`
	}
	resp, err := http.Get("http://" + a.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "\nmwpeer_receipts_signed 5\n") {
		t.Fatalf("/metrics does not count 5 signed receipts:\n%s", body)
	}
	getJSON(t, a, "/api/ledger", &view)
	if len(view.Peers) != 1 || view.Peers[0].Peer != b.ID() || view.Peers[0].Receipts != 5 {
		t.Fatalf("GET /api/ledger: %+v", view)
	}
}

// TestAPIKeysFromTheLedger: once a key exists in the peer's ledger, /v1
// wants it; an exhausted key is refused with insufficient_quota.
func TestAPIKeysFromTheLedger(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}}, nil)
	p := peers[0]
	ask := func(key string) error {
		cl := openai.NewClient(option.WithBaseURL("http://"+p.HTTPAddr()+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
		ctx, cancel := context.WithTimeout(context.Background(), slow(10*time.Second))
		defer cancel()
		_, err := cl.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "syn-a", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		return err
	}
	if err := ask("anything"); err != nil {
		t.Fatalf("no keys yet: the API is open, got %v", err)
	}
	secret, err := p.ledger.AddKey("tester", 20, 0)
	if err != nil {
		t.Fatal(err)
	}
	var apiErr *openai.Error
	// A key made (by the CLI, in another process) takes effect within a second.
	wait.For(t, slow(5*time.Second), "an unknown key is refused with 401", func() error {
		if err := ask("mwk_wrong"); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("unknown key: %v, want 401", err)
		}
		return nil
	})
	if err := ask(secret); err != nil {
		t.Fatalf("good key: %v", err)
	}
	// 12 completion tokens plus the prompt's leave less than another answer.
	if err := ask(secret); err != nil && !(errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusTooManyRequests) {
		t.Fatalf("second answer: %v", err)
	}
	if err := ask(secret); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Code != "insufficient_quota" {
		t.Fatalf("exhausted key: %v, want 429 insufficient_quota", err)
	}
}

// TestHTTPBeyondLoopbackNeedsKeys: a peer asked to serve its API on every
// interface refuses to start while it has no API key.
func TestHTTPBeyondLoopbackNeedsKeys(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPAddr = "0.0.0.0:0"
	_, err := Start(context.Background(), cfg)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "HTTPAddr" {
		t.Fatalf("Start: %v, want a FieldError on HTTPAddr", err)
	}
}

// signedReceipt is a both-signed receipt of work server did for requester,
// made with the keys in the peers' data dirs.
func signedReceipt(t *testing.T, server, requester *Peer, tokens uint32) *receipt.Signed {
	t.Helper()
	key := func(p *Peer) crypto.PrivKey {
		k, err := p2p.LoadOrCreateIdentity(filepath.Join(p.cfg.DataDir, p2p.IdentityFile))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	r := receipt.Receipt{ID: receipt.NewID(), Requester: requester.ID(), Server: server.ID(), Model: "syn-a",
		PromptTokens: 1, CompletionTokens: tokens, Start: time.Now(), Cost: receipt.Cost(1, int(tokens), 0, false)}
	s, err := receipt.SignServer(r, key(server))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Countersign(key(requester)); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestContributorsAreServedFirst: A serves one request at a time. B owes A
// and used up its free allowance, C has served A; while A is busy, B, then
// C, then A's own user ask. A serves its user, then C, then B; alone, B is
// still served.
func TestContributorsAreServedFirst(t *testing.T) {
	peers := apiSwarm(t, [][]string{{"syn-a"}, {}, {}}, func(i int, c *Config) {
		c.Capacity = 1
		c.QueueWait = time.Minute
		c.FreeAllowance = 10
		c.Synthetic.TTFT = 300 * time.Millisecond
	})
	a, b, c := peers[0], peers[1], peers[2]
	for _, s := range []*receipt.Signed{signedReceipt(t, a, b, 100), signedReceipt(t, c, a, 100)} {
		if _, err := a.ledger.Put(a.ID(), s); err != nil {
			t.Fatal(err)
		}
	}
	queue := a.backend.(counted).Backend.(*inference.Prioritized)
	type done struct {
		who string
		err error
	}
	finished := make(chan done, 4)
	ask := func(who string, via *Peer) {
		ctx, cancel := context.WithTimeout(context.Background(), slow(time.Minute))
		defer cancel()
		cl := sdk(via)
		_, err := cl.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "syn-a", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(who)},
		})
		finished <- done{who, err}
	}
	go ask("first", a)
	wait.For(t, slow(10*time.Second), "the first request holds A's slot", func() error {
		if queue.Active() != 1 {
			return fmt.Errorf("%d active", queue.Active())
		}
		return nil
	})
	for i, q := range []struct {
		who string
		via *Peer
	}{{"B", b}, {"C", c}, {"local", a}} {
		go ask(q.who, q.via)
		wait.For(t, slow(10*time.Second), q.who+" waits for A", func() error {
			if queue.Waiting() != i+1 {
				return fmt.Errorf("%d waiting", queue.Waiting())
			}
			return nil
		})
	}
	var order []string
	for range 4 {
		d := <-finished
		if d.err != nil {
			t.Fatalf("%s: %v", d.who, d.err)
		}
		order = append(order, d.who)
	}
	if want := []string{"first", "local", "C", "B"}; !slices.Equal(order, want) {
		t.Fatalf("served %v, want %v", order, want)
	}
	go ask("B alone", b)
	if d := <-finished; d.err != nil {
		t.Fatalf("B on an idle peer: %v", d.err)
	}
}
