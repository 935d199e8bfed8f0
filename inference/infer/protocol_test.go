package infer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-msgio"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wait"
)

func TestCallRoundTrip(t *testing.T) {
	client := newHost(t)
	cfg := inference.SyntheticConfig{Tokens: 20}
	srv := serve(t, client, cfg)
	req := testReq
	req.Logprobs, req.TopLogprobs = true, 3
	var sb strings.Builder
	var chunks int
	f, err := Call(context.Background(), client, srv.h.ID(), req, func(c inference.Chunk) error {
		chunks++
		if len(c.Logprobs) != 1 || len(c.Logprobs[0].Top) != 3 {
			t.Errorf("chunk without logprobs: %+v", c)
		}
		sb.WriteString(c.Text)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := fullText(t, cfg, req); sb.String() != want {
		t.Errorf("text %q, want %q", sb.String(), want)
	}
	if chunks != 20 || f.CompletionTokens != 20 || f.FinishReason != inference.FinishStop || !f.HasLogprob {
		t.Errorf("chunks %d, final %+v", chunks, f)
	}
}

func TestCallMapsRemoteErrors(t *testing.T) {
	client := newHost(t)
	srv := serve(t, client, inference.SyntheticConfig{})
	huge := 1 << 20
	for _, tc := range []struct {
		name string
		req  inference.Request
		want error
	}{
		{"unknown model", inference.Request{Model: "nope", Prompt: "x"}, inference.ErrUnknownModel},
		{"no model", inference.Request{Prompt: "x"}, inference.ErrInvalidRequest},
		{"long model name", inference.Request{Model: strings.Repeat("m", 300), Prompt: "x"}, inference.ErrInvalidRequest},
		{"no prompt", inference.Request{Model: inference.SyntheticName}, inference.ErrInvalidRequest},
		{"max tokens", inference.Request{Model: inference.SyntheticName, Prompt: "x", MaxTokens: huge}, inference.ErrInvalidRequest},
		{"negative max tokens", inference.Request{Model: inference.SyntheticName, Prompt: "x", MaxTokens: -1}, inference.ErrInvalidRequest},
		{"bad role", inference.Request{Model: inference.SyntheticName, Messages: []inference.Message{{Role: "root", Content: "x"}}}, inference.ErrInvalidRequest},
		{"too many messages", inference.Request{Model: inference.SyntheticName, Messages: make([]inference.Message, 2000)}, inference.ErrInvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Call(context.Background(), client, srv.h.ID(), tc.req, func(inference.Chunk) error { return nil })
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			var re *RemoteError
			if !errors.As(err, &re) || re.Peer != srv.h.ID() {
				t.Fatalf("err %v is not a RemoteError from the server", err)
			}
		})
	}
	if srv.b.Calls() != 0 {
		t.Errorf("backend saw %d calls", srv.b.Calls())
	}
}

func TestOversizedRequestRejected(t *testing.T) {
	client := newHost(t)
	srv := serve(t, client, inference.SyntheticConfig{})

	// The client refuses to send it.
	big := inference.Request{Model: inference.SyntheticName, Prompt: strings.Repeat("x", MaxRequestSize)}
	if _, err := Call(context.Background(), client, srv.h.ID(), big, func(inference.Chunk) error { return nil }); !errors.Is(err, inference.ErrInvalidRequest) {
		t.Fatalf("client side: %v", err)
	}

	// A peer that sends it anyway gets an error frame, and the server lives.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := client.NewStream(ctx, srv.h.ID(), ID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	go msgio.NewVarintWriter(s).WriteMsg(make([]byte, 2*MaxRequestSize))
	msg, err := msgio.NewVarintReaderSize(s, MaxFrameSize).ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	var fr frame
	if err := json.Unmarshal(msg, &fr); err != nil || fr.Error == nil || fr.Error.Code != CodeInvalidRequest {
		t.Fatalf("frame %s (%v)", msg, err)
	}

	// Garbage that fits is rejected too.
	s2, err := client.NewStream(ctx, srv.h.ID(), ID)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Reset()
	if err := msgio.NewVarintWriter(s2).WriteMsg([]byte("{not json")); err != nil {
		t.Fatal(err)
	}
	msg, err = msgio.NewVarintReaderSize(s2, MaxFrameSize).ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(msg, &fr); err != nil || fr.Error == nil || fr.Error.Code != CodeInvalidRequest {
		t.Fatalf("frame %s (%v)", msg, err)
	}

	var sb strings.Builder
	if _, err := Call(ctx, client, srv.h.ID(), testReq, collect(&sb)); err != nil || sb.Len() == 0 {
		t.Fatalf("server unusable after bad requests: %v", err)
	}
}

func TestCallCancelCancelsRemoteBackend(t *testing.T) {
	client := newHost(t)
	srv := serve(t, client, inference.SyntheticConfig{Tokens: 10000, Rate: 50})
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Call(ctx, client, srv.h.ID(), testReq, func(inference.Chunk) error {
		cancel() // after the first token
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	wait.For(t, 5*time.Second, "server backend to see the cancel", func() error {
		if c, n := srv.b.Cancellations(), srv.b.Active(); c != 1 || n != 0 {
			return fmt.Errorf("%d cancellations, %d calls active", c, n)
		}
		return nil
	})
}

func TestCallCancelBeforeFirstToken(t *testing.T) {
	client := newHost(t)
	srv := serve(t, client, inference.SyntheticConfig{TTFT: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		wait.For(t, 5*time.Second, "call to start", func() error {
			if n := srv.b.Active(); n != 1 {
				return fmt.Errorf("%d calls active", n)
			}
			return nil
		})
		cancel()
	}()
	if _, err := Call(ctx, client, srv.h.ID(), testReq, func(inference.Chunk) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	wait.For(t, 5*time.Second, "server backend to see the cancel", func() error {
		if c := srv.b.Cancellations(); c != 1 {
			return fmt.Errorf("%d cancellations", c)
		}
		return nil
	})
}

func TestBusyOverTheWire(t *testing.T) {
	client := newHost(t)
	srv := serve(t, client, inference.SyntheticConfig{Tokens: 10000, Rate: 50, Capacity: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := Call(ctx, client, srv.h.ID(), testReq, func(inference.Chunk) error { return nil })
		first <- err
	}()
	wait.For(t, 5*time.Second, "first call active", func() error {
		if n := srv.b.Active(); n != 1 {
			return fmt.Errorf("%d calls active", n)
		}
		return nil
	})
	_, err := Call(context.Background(), client, srv.h.ID(), testReq, func(inference.Chunk) error { return nil })
	if !errors.Is(err, inference.ErrBusy) {
		t.Fatalf("second call: %v, want inference.ErrBusy", err)
	}
	cancel()
	<-first
}

func TestRequestTimeoutTravels(t *testing.T) {
	client := newHost(t)
	srv := serve(t, client, inference.SyntheticConfig{TTFT: time.Minute})
	req := testReq
	req.Deadline = time.Now().Add(300 * time.Millisecond)
	start := time.Now()
	_, err := Call(context.Background(), client, srv.h.ID(), req, func(inference.Chunk) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}

func TestClosedServiceRefuses(t *testing.T) {
	client := newHost(t)
	srv := serve(t, client, inference.SyntheticConfig{})
	srv.svc.Close()
	if _, err := Call(context.Background(), client, srv.h.ID(), testReq, func(inference.Chunk) error { return nil }); err == nil {
		t.Fatal("call to a closed service succeeded")
	}
}
