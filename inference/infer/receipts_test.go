package infer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/internal/wire"
	"github.com/mwpeer/mwpeer/receipt"
)

// testParams is the active parameter count both sides use for every model
// in these tests.
const testParams = 1_200_000_000

func params(string) int64 { return testParams }

// keyOf returns h's private key.
func keyOf(t testing.TB, h host.Host) crypto.PrivKey {
	t.Helper()
	k := h.Peerstore().PrivKey(h.ID())
	if k == nil {
		t.Fatal("host without a private key")
	}
	return k
}

// ledger keeps what a Store hook is given.
type ledger struct {
	mu   sync.Mutex
	list []*receipt.Signed
}

func (l *ledger) store(s *receipt.Signed) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, s)
	return nil
}

func (l *ledger) all() []*receipt.Signed {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*receipt.Signed(nil), l.list...)
}

// wait waits for n receipts and returns them.
func (l *ledger) wait(t *testing.T, n int) []*receipt.Signed {
	t.Helper()
	wait.For(t, 10*time.Second, fmt.Sprintf("%d receipts", n), func() error {
		if got := len(l.all()); got < n {
			return fmt.Errorf("%d receipts", got)
		}
		return nil
	})
	return l.all()
}

// receiptServer is a peer serving b with receipts.
type receiptServer struct {
	h      host.Host
	ledger *ledger
	done   *completions
}

// serveReceipts starts a peer serving b with receipts (waiting at most
// answerWait for the requester; 0: the default) and connects client to it.
func serveReceipts(t testing.TB, client host.Host, b inference.Backend, answerWait time.Duration) *receiptServer {
	t.Helper()
	h := newHost(t)
	srv := &receiptServer{h: h, ledger: &ledger{}, done: &completions{}}
	svc := NewService(h, b, ServiceConfig{
		Complete: srv.done.add,
		Receipts: &ServerReceipts{
			Key:          keyOf(t, h),
			Digest:       func(model string) string { return "sha256:" + model },
			ActiveParams: params,
			Store:        srv.ledger.store,
			Wait:         answerWait,
		},
	})
	t.Cleanup(func() { svc.Close() })
	connect(t, client, h)
	return srv
}

// withReceipts are a client's options, storing in l.
func withReceipts(t testing.TB, client host.Host, l *ledger) CallOptions {
	return CallOptions{Key: keyOf(t, client), ActiveParams: params, Store: l.store}
}

func TestReceiptsMatchOnBothSides(t *testing.T) {
	wait.NoLeak(t)
	b := newHost(t)
	a := serveReceipts(t, b, inference.NewSynthetic(inference.SyntheticConfig{Tokens: 9}), 0)
	var mine ledger
	opts := withReceipts(t, b, &mine)

	type answer struct {
		final inference.Final
		text  string
	}
	var answers []answer
	for i := range 5 {
		req := testReq
		req.Prompt = fmt.Sprintf("question %d:%s", i, strings.Repeat(" why", i))
		var sb strings.Builder
		f, err := CallWith(context.Background(), b, a.h.ID(), req, collect(&sb), opts)
		if err != nil {
			t.Fatal(err)
		}
		answers = append(answers, answer{f, sb.String()})
		// The requester stores a receipt before it sends its signature.
		if n := len(mine.all()); n != i+1 {
			t.Fatalf("after call %d the requester holds %d receipts", i+1, n)
		}
	}

	theirs := map[receipt.ID]*receipt.Signed{}
	for _, s := range a.ledger.wait(t, 5) {
		theirs[s.ID] = s
	}
	if len(theirs) != 5 {
		t.Fatalf("server holds %d distinct receipts, want 5", len(theirs))
	}
	for i, m := range mine.all() {
		s := theirs[m.ID]
		if s == nil {
			t.Fatalf("receipt %d (%s) is the requester's only", i, m.ID)
		}
		if !bytes.Equal(m.Marshal(), s.Marshal()) || m.Receipt != s.Receipt {
			t.Errorf("receipt %d differs:\nrequester %+v\nserver    %+v", i, m.Receipt, s.Receipt)
		}
		for who, r := range map[string]*receipt.Signed{"requester": m, "server": s} {
			if err := r.Verify(); err != nil {
				t.Errorf("receipt %d as the %s holds it: %v", i, who, err)
			}
		}
		f, text := answers[i].final, answers[i].text
		want := receipt.Cost(f.PromptTokens, f.CompletionTokens, testParams, false)
		switch {
		case int(m.PromptTokens) != f.PromptTokens || int(m.CompletionTokens) != f.CompletionTokens || f.CompletionTokens != 9:
			t.Errorf("receipt %d counts %d+%d tokens, the requester got %d+%d", i, m.PromptTokens, m.CompletionTokens, f.PromptTokens, f.CompletionTokens)
		case m.AnswerHash != receipt.Sum([]byte(text)):
			t.Errorf("receipt %d hashes another answer than %q", i, text)
		case m.Requester != b.ID() || m.Server != a.h.ID() || m.Model != testReq.Model || m.Digest != "sha256:"+testReq.Model:
			t.Errorf("receipt %d: requester %s server %s model %q digest %q", i, m.Requester, m.Server, m.Model, m.Digest)
		case m.Cost != want || m.Cost == 0:
			t.Errorf("receipt %d costs %d, want %d", i, m.Cost, want)
		case m.TTFT <= 0 || time.Since(m.Start) > time.Minute:
			t.Errorf("receipt %d: start %v, ttft %v", i, m.Start, m.TTFT)
		}
	}
	// The completion hook sees each receipt as it was stored.
	for _, c := range a.done.wait(t, 5) {
		if c.Receipt == nil || theirs[c.Receipt.ID] != c.Receipt || c.Receipt.RequesterSig == nil {
			t.Errorf("completion with receipt %+v", c.Receipt)
		}
	}
}

func TestRefusedReceiptIsStoredUnsigned(t *testing.T) {
	b := newHost(t)
	a := serveReceipts(t, b, inference.NewSynthetic(inference.SyntheticConfig{Tokens: 4}), 0)
	var mine ledger
	opts := withReceipts(t, b, &mine)
	var asked int
	opts.Refuse = func(r *receipt.Receipt) bool {
		asked++
		return r.Requester == b.ID()
	}
	var sb strings.Builder
	f, err := CallWith(context.Background(), b, a.h.ID(), testReq, collect(&sb), opts)
	if err != nil || f.CompletionTokens != 4 || sb.Len() == 0 {
		t.Fatalf("the answer was lost with the receipt: %+v, %v", f, err)
	}
	s := a.ledger.wait(t, 1)[0]
	if s.RequesterSig != nil || s.VerifyServer() != nil || !errors.Is(s.Verify(), receipt.ErrUnsigned) {
		t.Fatalf("server stored %+v (verify: %v), want it signed by the server only", s, s.Verify())
	}
	if asked != 1 || len(mine.all()) != 0 {
		t.Fatalf("refuse hook asked %d times; the requester stored %d receipts, want none", asked, len(mine.all()))
	}
	if c := a.done.wait(t, 1)[0]; c.Receipt != s || c.Outcome != OutcomeOK {
		t.Fatalf("completion: outcome %q, receipt %p, want %p", c.Outcome, c.Receipt, s)
	}
}

// liar serves ID by hand: it answers "abc" in three chunks (3 prompt and 3
// completion tokens), then sends forge's frame in place of the honest
// receipt and reports the client's answer on the returned channel.
func liar(t *testing.T, client host.Host, forge func(honest receipt.Receipt, key crypto.PrivKey) []byte) (host.Host, <-chan string) {
	t.Helper()
	h := newHost(t)
	key := keyOf(t, h)
	answers := make(chan string, 1)
	h.SetStreamHandler(ID, func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		r := wire.NewReader(s, MaxRequestSize)
		msg, err := r.ReadMsg()
		if err != nil {
			answers <- "error: " + err.Error()
			return
		}
		var wr request
		if err := json.Unmarshal(msg, &wr); err != nil {
			answers <- "error: " + err.Error()
			return
		}
		for _, text := range []string{"a", "b", "c"} {
			_ = wire.WriteJSON(s, frame{Chunk: &chunk{Text: text}}, MaxFrameSize)
		}
		ttft := time.Since(start)
		_ = wire.WriteJSON(s, frame{Final: &final{FinishReason: inference.FinishStop, PromptTokens: 3, CompletionTokens: 3}}, MaxFrameSize)
		honest := receipt.Receipt{
			ID: receipt.NewID(), Requester: s.Conn().RemotePeer(), Server: h.ID(), Model: wr.Model,
			PromptTokens: 3, CompletionTokens: 3, Start: start, TTFT: ttft,
			RequestHash: receipt.Sum(msg), AnswerHash: receipt.Sum([]byte("abc")),
			Cost: receipt.Cost(3, 3, testParams, false),
		}
		if err := wire.Write(s, forge(honest, key), 1<<20); err != nil {
			answers <- "error: " + err.Error()
			return
		}
		var a answer
		switch err := wire.ReadJSON(r, &a); {
		case err != nil:
			answers <- "error: " + err.Error()
		case len(a.Countersign) > 0:
			answers <- "countersigned"
		default:
			answers <- "refused: " + a.Refuse
		}
	})
	connect(t, client, h)
	return h, answers
}

func TestLyingServersReceiptIsRefusedAndTheAnswerKept(t *testing.T) {
	wait.NoLeak(t)
	client := newHost(t)
	other := newHost(t) // a third peer, whose key a liar may use
	otherKey := keyOf(t, other)
	sign := func(r receipt.Receipt, key crypto.PrivKey) *receipt.Signed {
		s, err := receipt.SignServer(r, key)
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		return s
	}
	send := func(s *receipt.Signed) []byte {
		data, _ := json.Marshal(frame{Receipt: s.Marshal()})
		return data
	}
	// tamper signs r with its server's key once change altered it.
	tamper := func(change func(r *receipt.Receipt)) func(receipt.Receipt, crypto.PrivKey) []byte {
		return func(r receipt.Receipt, key crypto.PrivKey) []byte {
			change(&r)
			return send(sign(r, key))
		}
	}
	var honestID receipt.ID
	for _, tc := range []struct {
		name   string
		forge  func(receipt.Receipt, crypto.PrivKey) []byte
		params int64  // the client's view of the model's size
		want   string // the client's answer: a prefix, then "..." and a part of the rest
	}{
		{"honest", func(r receipt.Receipt, key crypto.PrivKey) []byte {
			honestID = r.ID
			return send(sign(r, key))
		}, testParams, "countersigned"},
		{"replayed ID", tamper(func(r *receipt.Receipt) { r.ID = honestID }), testParams, "refused: receipt ...was countersigned already"},
		{"more completion tokens", tamper(func(r *receipt.Receipt) { r.CompletionTokens++ }), testParams, "refused: receipt counts 4 completion tokens"},
		{"fewer prompt tokens", tamper(func(r *receipt.Receipt) { r.PromptTokens-- }), testParams, "refused: receipt counts 2 prompt tokens"},
		{"another answer", tamper(func(r *receipt.Receipt) { r.AnswerHash = receipt.Sum([]byte("abd")) }), testParams, "refused: receipt hashes another answer"},
		{"another request", tamper(func(r *receipt.Receipt) { r.RequestHash = receipt.Sum(nil) }), testParams, "refused: receipt hashes another request"},
		{"another requester", tamper(func(r *receipt.Receipt) { r.Requester = other.ID() }), testParams, "refused: receipt for requester"},
		{"another model", tamper(func(r *receipt.Receipt) { r.Model = "big" }), testParams, "refused: receipt for model"},
		{"inflated cost", tamper(func(r *receipt.Receipt) { r.Cost++ }), testParams, "refused: receipt costs"},
		{"inflated cost, size unknown", tamper(func(r *receipt.Receipt) { r.Cost *= 100 }), 0, "countersigned"},
		{"time to first token beyond the call", tamper(func(r *receipt.Receipt) { r.TTFT = time.Hour }), testParams, "refused: receipt's time to first token"},
		{"start a day off", tamper(func(r *receipt.Receipt) { r.Start = r.Start.Add(-24 * time.Hour) }), testParams, "refused: receipt starts at"},
		{"signed by another key", func(r receipt.Receipt, key crypto.PrivKey) []byte {
			s := sign(r, key)
			r.Server = other.ID()
			s.ServerSig = sign(r, otherKey).ServerSig
			return send(s)
		}, testParams, "refused: bad receipt signature"},
		{"another server's receipt", func(r receipt.Receipt, _ crypto.PrivKey) []byte {
			r.Server = other.ID()
			return send(sign(r, otherKey))
		}, testParams, "refused: receipt from server"},
		{"unsigned", func(r receipt.Receipt, key crypto.PrivKey) []byte {
			s := sign(r, key)
			s.ServerSig = nil
			return send(s)
		}, testParams, "refused: receipt lacks a signature"},
		{"countersigned already", func(r receipt.Receipt, key crypto.PrivKey) []byte {
			s := sign(r, key)
			s.RequesterSig = s.ServerSig
			return send(s)
		}, testParams, "refused: receipt already carries a requester signature"},
		{"not a receipt", func(receipt.Receipt, crypto.PrivKey) []byte {
			data, _ := json.Marshal(frame{Receipt: []byte("junk")})
			return data
		}, testParams, "refused: malformed receipt"},
		{"a chunk after the final", func(receipt.Receipt, crypto.PrivKey) []byte {
			data, _ := json.Marshal(frame{Chunk: &chunk{Text: "d"}})
			return data
		}, testParams, "refused: expected a receipt frame"},
		{"oversized frame", func(receipt.Receipt, crypto.PrivKey) []byte {
			data, _ := json.Marshal(frame{Receipt: make([]byte, MaxReceiptFrameSize)})
			return data
		}, testParams, "error: "}, // the client resets the stream unread
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, answers := liar(t, client, tc.forge)
			var mine ledger
			opts := withReceipts(t, client, &mine)
			opts.ActiveParams = func(string) int64 { return tc.params }
			var sb strings.Builder
			f, err := CallWith(context.Background(), client, h.ID(), testReq, collect(&sb), opts)
			if err != nil || f.CompletionTokens != 3 || sb.String() != "abc" {
				t.Fatalf("answer %q %+v, %v: a bad receipt must not cost the answer", sb.String(), f, err)
			}
			var got string
			select {
			case got = <-answers:
			case <-time.After(10 * time.Second):
				t.Fatal("the liar heard nothing")
			}
			prefix, part, _ := strings.Cut(tc.want, "...")
			if !strings.HasPrefix(got, prefix) || !strings.Contains(got[len(prefix):], part) {
				t.Fatalf("client answered %q, want %q...", got, tc.want)
			}
			if stored := len(mine.all()); (tc.want == "countersigned") != (stored == 1) || stored > 1 {
				t.Fatalf("client stored %d receipts", stored)
			}
		})
	}
}

func TestOldClientsLeaveTheReceiptUnsigned(t *testing.T) {
	wait.NoLeak(t)
	b := newHost(t)

	// Call closes its side after the final: the server does not wait.
	const patient = 30 * time.Second
	a := serveReceipts(t, b, inference.NewSynthetic(inference.SyntheticConfig{Tokens: 3}), patient)
	start := time.Now()
	if _, err := Call(context.Background(), b, a.h.ID(), testReq, func(inference.Chunk) error { return nil }); err != nil {
		t.Fatal(err)
	}
	s := a.ledger.wait(t, 1)[0]
	if took := time.Since(start); took > patient/2 || s.RequesterSig != nil || s.VerifyServer() != nil {
		t.Fatalf("after %v: stored %+v, want it signed by the server only at once", took, s)
	}

	// A client that reads the receipt and then says nothing is waited for
	// as long as the server is configured to.
	const answerWait = 300 * time.Millisecond
	a = serveReceipts(t, b, inference.NewSynthetic(inference.SyntheticConfig{Tokens: 3}), answerWait)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	str, err := b.NewStream(ctx, a.h.ID(), ID)
	if err != nil {
		t.Fatal(err)
	}
	defer str.Reset()
	data, _ := json.Marshal(toWireRequest(testReq))
	if err := wire.Write(str, data, MaxRequestSize); err != nil {
		t.Fatal(err)
	}
	r := wire.NewReader(str, MaxFrameSize)
	var fr frame
	for fr.Receipt == nil {
		if err := wire.ReadJSON(r, &fr); err != nil {
			t.Fatal(err)
		}
	}
	got := time.Now()
	s = a.ledger.wait(t, 1)[0]
	if took := time.Since(got); took < answerWait-50*time.Millisecond || s.RequesterSig != nil {
		t.Fatalf("stored after %v (wait %v) with requester signature %x", took, answerWait, s.RequesterSig)
	}
	if !bytes.Equal(fr.Receipt, s.Marshal()) {
		t.Fatal("the receipt stored is not the one sent")
	}
}

func TestCancelledOrFailedCallHasNoReceipt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend inference.Backend
		cancel  bool // the client cancels after the first chunk
		outcome string
	}{
		{"cancelled mid-stream", inference.NewSynthetic(inference.SyntheticConfig{Tokens: 10000, Rate: 100}), true, OutcomeCancelled},
		{"backend failed", &recording{Synthetic: inference.NewSynthetic(inference.SyntheticConfig{Tokens: 7}), failAfter: 2, failWith: errors.New("boom")}, false, CodeInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newHost(t)
			a := serveReceipts(t, b, tc.backend, 0)
			var mine ledger
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, err := CallWith(ctx, b, a.h.ID(), testReq, func(inference.Chunk) error {
				if tc.cancel {
					cancel()
				}
				return nil
			}, withReceipts(t, b, &mine))
			if err == nil {
				t.Fatal("call succeeded")
			}
			c := a.done.wait(t, 1)[0]
			if c.Outcome != tc.outcome || c.Receipt != nil {
				t.Fatalf("outcome %q, receipt %+v", c.Outcome, c.Receipt)
			}
			if n, m := len(a.ledger.all()), len(mine.all()); n != 0 || m != 0 {
				t.Fatalf("receipts stored: %d by the server, %d by the client", n, m)
			}
		})
	}
}

func TestReceiptClientOfAServerWithout(t *testing.T) {
	b := newHost(t)
	srv := serve(t, b, inference.SyntheticConfig{Tokens: 3})
	var mine ledger
	start := time.Now()
	f, err := CallWith(context.Background(), b, srv.h.ID(), testReq, func(inference.Chunk) error { return nil }, withReceipts(t, b, &mine))
	if err != nil || f.CompletionTokens != 3 {
		t.Fatalf("%+v, %v", f, err)
	}
	if took := time.Since(start); took > ReceiptTimeout/2 || len(mine.all()) != 0 {
		t.Fatalf("took %v (the server's close says there is no receipt), stored %d", took, len(mine.all()))
	}
}

// scripted is a backend that waits, ignoring its context, then sends its
// chunks.
type scripted struct {
	delay  time.Duration
	chunks []string
}

func (s *scripted) Name() string { return "scripted" }

func (s *scripted) Models(context.Context) ([]inference.ModelInfo, error) { return nil, nil }

func (s *scripted) Generate(_ context.Context, _ inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	time.Sleep(s.delay)
	for _, c := range s.chunks {
		if err := emit(inference.Chunk{Text: c}); err != nil {
			return inference.Final{}, err
		}
	}
	return inference.Final{FinishReason: inference.FinishStop, PromptTokens: 2, CompletionTokens: len(s.chunks)}, nil
}

func TestLateAnswerEarnsHalf(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
		late  bool
	}{
		{"in time", 0, false},
		{"late", 600 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newHost(t)
			a := serveReceipts(t, b, &scripted{delay: tc.delay, chunks: []string{"x", "y"}}, 0)
			var mine ledger
			req := testReq
			req.Deadline = time.Now().Add(300 * time.Millisecond)
			if _, err := CallWith(context.Background(), b, a.h.ID(), req, func(inference.Chunk) error { return nil }, withReceipts(t, b, &mine)); err != nil {
				t.Fatal(err)
			}
			s := a.ledger.wait(t, 1)[0]
			if want := receipt.Cost(2, 2, testParams, tc.late); s.Cost != want || s.Verify() != nil {
				t.Fatalf("cost %d, want %d (verify: %v)", s.Cost, want, s.Verify())
			}
		})
	}
}

func TestMissedDeadline(t *testing.T) {
	for _, tc := range []struct {
		timeoutMS int64
		ended     time.Duration
		missed    bool
	}{
		{0, time.Hour, false},
		{100, 99 * time.Millisecond, false},
		{100, 100 * time.Millisecond, false},
		{100, 100*time.Millisecond + 1, true},
		{1, time.Hour, true},
		{math.MaxInt64, time.Hour, false}, // would overflow a Duration
		{math.MaxInt64 / 1000, time.Hour, false},
	} {
		if got := missed(tc.timeoutMS, tc.ended); got != tc.missed {
			t.Errorf("missed(%d ms, %v) = %v", tc.timeoutMS, tc.ended, got)
		}
	}
}

func TestAnswerOfInvalidUTF8IsHashedAsReceived(t *testing.T) {
	b := newHost(t)
	a := serveReceipts(t, b, &scripted{chunks: []string{"h\xffi", "caf\xc3", "\xa9!"}}, 0)
	var mine ledger
	var sb strings.Builder
	if _, err := CallWith(context.Background(), b, a.h.ID(), testReq, collect(&sb), withReceipts(t, b, &mine)); err != nil {
		t.Fatal(err)
	}
	if want := "h\uFFFDicaf\uFFFD\uFFFD!"; sb.String() != want {
		t.Fatalf("received %q, want %q", sb.String(), want)
	}
	if s := a.ledger.wait(t, 1)[0]; s.Verify() != nil || len(mine.all()) != 1 {
		t.Fatalf("receipt not countersigned: %v", s.Verify())
	}
}

func TestJSONTextIsWhatJSONCarries(t *testing.T) {
	for _, s := range []string{"", "plain", "héllo", "\xff", "a\xc3", "\xc3\xa9\xc3", "\xed\xa0\x80", "\xf0\x9f\x98", "x\x00y\xfe\xfe"} {
		data, _ := json.Marshal(s)
		var back string
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		if got := jsonText(s); got != back {
			t.Errorf("jsonText(%q) = %q, JSON carries %q", s, got, back)
		}
	}
}

func TestReceiptKeysMustBeTheHosts(t *testing.T) {
	b := newHost(t)
	other := newHost(t)
	srv := serve(t, b, inference.SyntheticConfig{Tokens: 2})
	opts := CallOptions{Key: keyOf(t, other)}
	if _, err := CallWith(context.Background(), b, srv.h.ID(), testReq, func(inference.Chunk) error { return nil }, opts); err == nil || srv.b.Calls() != 0 {
		t.Fatalf("call with another host's key: %v, %d backend calls", err, srv.b.Calls())
	}

	// A service given another key serves without receipts.
	h := newHost(t)
	var l ledger
	var done completions
	svc := NewService(h, inference.NewSynthetic(inference.SyntheticConfig{Tokens: 2}), ServiceConfig{
		Complete: done.add,
		Receipts: &ServerReceipts{Key: keyOf(t, other), Store: l.store},
	})
	defer svc.Close()
	connect(t, b, h)
	if _, err := CallWith(context.Background(), b, h.ID(), testReq, func(inference.Chunk) error { return nil }, withReceipts(t, b, &l)); err != nil {
		t.Fatal(err)
	}
	if c := done.wait(t, 1)[0]; c.Outcome != OutcomeOK || c.Receipt != nil || len(l.all()) != 0 {
		t.Fatalf("outcome %q, receipt %+v, %d stored", c.Outcome, c.Receipt, len(l.all()))
	}
}

func TestLargestReceiptFitsItsFrame(t *testing.T) {
	data, err := json.Marshal(frame{Receipt: make([]byte, receipt.MaxSize)})
	if err != nil || len(data) > MaxReceiptFrameSize {
		t.Fatalf("frame of %d bytes, cap %d (%v)", len(data), MaxReceiptFrameSize, err)
	}
	long := strings.Repeat("\x01", MaxRefuseReason)
	data, _ = json.Marshal(answer{Refuse: long})
	sig, _ := json.Marshal(answer{Countersign: make([]byte, 1024)})
	if len(data) > MaxAnswerFrameSize || len(sig) > MaxAnswerFrameSize {
		t.Fatalf("answers of %d and %d bytes, cap %d", len(data), len(sig), MaxAnswerFrameSize)
	}
}
