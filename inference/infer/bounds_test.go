package infer

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/internal/wire"
)

// TestRemoteMaxTokensDefaultAndCap: a request from another peer that sets
// no max_tokens runs with DefaultMaxTokens, one that asks more than
// TokensCap gets TokensCap, and the admission hook sees the bounded value.
func TestRemoteMaxTokensDefaultAndCap(t *testing.T) {
	def := DefaultServiceConfig()
	if def.DefaultMaxTokens != 1024 || def.TokensCap != 4096 || def.MaxTokens != MaxTokens {
		t.Fatalf("defaults: %d default, %d cap, %d valid", def.DefaultMaxTokens, def.TokensCap, def.MaxTokens)
	}
	client := newHost(t)
	admitted := make(chan int, 8)
	srv := serveWith(t, client, inference.SyntheticConfig{Tokens: 50}, ServiceConfig{
		DefaultMaxTokens: 5, TokensCap: 7,
		Admit: func(_ context.Context, _ peer.ID, req *inference.Request) error {
			admitted <- req.MaxTokens
			return nil
		},
	})
	for _, tc := range []struct{ asked, want int }{{0, 5}, {3, 3}, {7, 7}, {100, 7}, {MaxTokens, 7}} {
		req := testReq
		req.MaxTokens = tc.asked
		n := 0
		f, err := Call(context.Background(), client, srv.h.ID(), req, func(inference.Chunk) error { n++; return nil })
		if err != nil {
			t.Fatalf("max_tokens %d: %v", tc.asked, err)
		}
		if got := <-admitted; got != tc.want || n != tc.want || f.FinishReason != inference.FinishLength {
			t.Errorf("max_tokens %d: admitted with %d, %d chunks, finish %q; want %d and length", tc.asked, got, n, f.FinishReason, tc.want)
		}
	}
	// Beyond what the protocol allows is malformed, not lowered.
	req := testReq
	req.MaxTokens = MaxTokens + 1
	if _, err := Call(context.Background(), client, srv.h.ID(), req, func(inference.Chunk) error { return nil }); !errors.Is(err, inference.ErrInvalidRequest) {
		t.Fatalf("max_tokens %d: %v", req.MaxTokens, err)
	}
}

// bomber is a hostile expert: it answers every request over ID with chunks
// of text, forever, whatever max_tokens says, until a write fails.
type bomber struct {
	h     host.Host
	sent  atomic.Int64  // chunk frames written
	ended chan struct{} // a handler returned (its stream was reset)
}

func newBomber(t *testing.T, client host.Host, text string) *bomber {
	t.Helper()
	b := &bomber{h: newHost(t), ended: make(chan struct{}, 16)}
	b.h.SetStreamHandler(ID, func(s network.Stream) {
		defer func() { b.ended <- struct{}{} }()
		if _, err := wire.NewReader(s, MaxRequestSize).ReadMsg(); err != nil {
			s.Reset()
			return
		}
		for {
			_ = s.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := wire.WriteJSON(s, frame{Chunk: &chunk{Text: text}}, MaxFrameSize); err != nil {
				s.Reset()
				return
			}
			b.sent.Add(1)
		}
	})
	connect(t, client, b.h)
	return b
}

// TestOutputBombEndsAtMaxTokens: an expert that streams forever is cut off
// once it sent more than max_tokens chunks (plus TokenSlack), or more than
// the byte cap when its chunks are huge: the caller keeps max_tokens chunks
// at most, its memory grows by about the byte cap at most, the stream is
// reset (the bomber stops), and a dispatch ends the answer there with
// finish reason length.
func TestOutputBombEndsAtMaxTokens(t *testing.T) {
	wait.NoLeak(t)
	client := newHost(t)
	for _, tc := range []struct {
		name      string
		text      string
		maxTokens int
		wantChunk int // chunks handed on
	}{
		{"many small chunks", "boom ", 100, 100},
		// (1000+8)*4 KiB = 4032 KiB: the 20th chunk of 200 KB is too many.
		{"huge chunks", strings.Repeat("B", 200_000), 1000, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBomber(t, client, tc.text)
			req := testReq
			req.MaxTokens = tc.maxTokens
			var kept strings.Builder
			n := 0
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := Call(context.Background(), client, b.h.ID(), req, func(c inference.Chunk) error {
				n++
				kept.WriteString(c.Text)
				return nil
			})
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			allocated := after.TotalAlloc - before.TotalAlloc
			runtime.GC()
			runtime.ReadMemStats(&after)
			retained := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			runtime.KeepAlive(&kept)
			if !errors.Is(err, ErrAnswerTooLong) {
				t.Fatalf("call: %v", err)
			}
			if n != tc.wantChunk || kept.Len() != n*len(tc.text) {
				t.Fatalf("%d chunks (%d bytes) handed on, want %d", n, kept.Len(), tc.wantChunk)
			}
			capBytes := min(MaxAnswerBytes, (tc.maxTokens+TokenSlack)*ChunkBytes)
			t.Logf("%s: cut after %s, %d chunks kept (%d bytes), bomber wrote %d frames; heap %+d bytes after the call with the answer kept, %d bytes allocated during it; byte cap %d",
				tc.name, took.Round(time.Millisecond), n, kept.Len(), b.sent.Load(), retained, allocated, capBytes)
			// What the caller holds after the call is the answer it kept,
			// within the cap, however long the bomber would go on.
			if limit := int64(2*capBytes + 4<<20); retained > limit {
				t.Errorf("heap grew by %d bytes, more than %d", retained, limit)
			}
			select {
			case <-b.ended:
			case <-time.After(10 * time.Second):
				t.Fatal("the bomber is still writing: the stream was not reset")
			}
		})
	}

	// Through a dispatch, the answer ends at max_tokens with finish reason
	// length, and no error.
	b := newBomber(t, client, "boom ")
	req := testReq
	req.MaxTokens = 50
	res, err := inference.Dispatch(context.Background(), []inference.Target{Target(client, b.h.ID())}, nil, inference.Fastest, req,
		func(string, inference.Chunk) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Final.CompletionTokens != 50 || res.Text != strings.Repeat("boom ", 50) || res.Final.FinishReason != inference.FinishLength {
		t.Fatalf("dispatch: %d tokens, %d bytes, finish %q", res.Final.CompletionTokens, len(res.Text), res.Final.FinishReason)
	}
	<-b.ended
}

// flood is a backend that emits chunks of 4 KiB as fast as it can, up to
// the request's max_tokens.
type flood struct{}

func (flood) Name() string { return "flood" }
func (flood) Models(context.Context) ([]inference.ModelInfo, error) {
	return []inference.ModelInfo{{Name: inference.SyntheticName}}, nil
}
func (flood) Generate(ctx context.Context, req inference.Request, emit func(inference.Chunk) error) (inference.Final, error) {
	text := strings.Repeat("f", 4096)
	for i := 0; i < req.MaxTokens; i++ {
		if err := ctx.Err(); err != nil {
			return inference.Final{}, err
		}
		if err := emit(inference.Chunk{Text: text}); err != nil {
			return inference.Final{}, err
		}
	}
	return inference.Final{FinishReason: inference.FinishLength, CompletionTokens: req.MaxTokens}, nil
}

// TestStalledReaderLosesItsSlot: a caller that stops reading, or reads a
// frame now and then, loses its serving slot once it kept the server
// waiting MaxWriteWait in all, although each frame's wait stays within
// IdleTimeout.
func TestStalledReaderLosesItsSlot(t *testing.T) {
	const maxWait = 500 * time.Millisecond
	for _, tc := range []struct {
		name  string
		every time.Duration // between two frames read (0: none read)
	}{
		{"never reads", 0},
		{"reads a frame every 150 ms", 150 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := newHost(t)
			h := newHost(t)
			slots := inference.NewPrioritized(flood{}, inference.PriorityConfig{Capacity: 2})
			svc := NewService(h, slots, ServiceConfig{IdleTimeout: 10 * time.Second, MaxWriteWait: maxWait})
			t.Cleanup(func() { svc.Close() })
			connect(t, client, h)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := client.NewStream(ctx, h.ID(), ID)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Reset()
			if err := wire.WriteJSON(s, request{Model: inference.SyntheticName, Prompt: "x", MaxTokens: 4096}, MaxRequestSize); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 5*time.Second, "the call holds a slot", func() error {
				if slots.Active() != 1 {
					return errors.New("no slot taken")
				}
				return nil
			})
			start := time.Now()
			if tc.every > 0 {
				go func() {
					r := wire.NewReader(s, MaxFrameSize)
					for ctx.Err() == nil {
						if _, err := r.ReadMsg(); err != nil {
							return
						}
						time.Sleep(tc.every)
					}
				}()
			}
			wait.For(t, maxWait+5*time.Second, "the slot is freed", func() error {
				if slots.Active() != 0 {
					return errors.New("still held")
				}
				return nil
			})
			t.Logf("slot freed %s after the call started, MaxWriteWait %s", time.Since(start).Round(time.Millisecond), maxWait)
		})
	}
}
