package infer

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
	"github.com/mwpeer/mwpeer/internal/wire"
)

// FuzzRequest decodes and validates a request frame's body as the service
// does: it is refused with ErrInvalidRequest, or it is within every limit
// and converts to an inference.Request and back to the same frame.
func FuzzRequest(f *testing.F) {
	temp, topP, seed := 0.0, 0.9, int64(42)
	reqs := []inference.Request{
		{Model: "llama3:8b", Messages: []inference.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}}, MaxTokens: 32, Temperature: &temp, TopP: &topP, Seed: &seed, Stop: []string{"\n\n"}},
		{Model: "mix", Prompt: "Once upon", Raw: true, Logprobs: true, TopLogprobs: 5, Continue: "a time"},
		{Model: "m", Messages: []inference.Message{
			{Role: "user", Content: "weather?", Images: [][]byte{{0x89, 'P', 'N', 'G'}}},
			{Role: "assistant", ToolCalls: []inference.ToolCall{{Index: 0, ID: "c1", Name: "weather", Arguments: `{"city":"Oslo"}`}}},
			{Role: "tool", Content: "3°C", ToolCallID: "c1", ToolName: "weather"},
		}, Tools: json.RawMessage(`[{"type":"function","function":{"name":"weather"}}]`), ToolChoice: "auto", Format: json.RawMessage(`"json"`)},
		{Model: "embed", Input: []string{"a", "b"}},
	}
	for _, r := range reqs {
		w := toWireRequest(r)
		w.TimeoutMS, w.Grant, w.Cert = 1500, []byte("grant"), []byte("cert")
		b, err := json.Marshal(w)
		if err != nil {
			f.Fatal(err)
		}
		fuzzcorpus.Add(f, b)
	}
	fuzzcorpus.Add(f, []byte(`{"model":"m","prompt":"x","max_tokens":-1}`))
	fuzzcorpus.Add(f, []byte(`{"model":"m","prompt":"x","temperature":1e309}`))
	fuzzcorpus.Add(f, []byte(`{"model":"m","messages":[{"role":"root","content":"x"}]}`))
	fuzzcorpus.Add(f, []byte(`{"model":"m","prompt":"x","timeout_ms":9223372036854775807}`))
	fuzzcorpus.Add(f, []byte(`{"model":"m","prompt":"x","tools":{"not":"an array"}}`))
	s := &Service{cfg: DefaultServiceConfig()}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > MaxRequestSize {
			return
		}
		var wr request
		if err := json.Unmarshal(body, &wr); err != nil {
			return
		}
		if err := s.validate(&wr); err != nil {
			if !errors.Is(err, inference.ErrInvalidRequest) {
				t.Fatalf("refused with %v, want ErrInvalidRequest", err)
			}
			return
		}
		if wr.Model == "" || len(wr.Model) > s.cfg.MaxModelName || len(wr.Messages) > s.cfg.MaxMessages || len(wr.Stop) > s.cfg.MaxStop ||
			wr.MaxTokens < 0 || wr.MaxTokens > s.cfg.MaxTokens || wr.TimeoutMS < 0 || wr.TopLogprobs < 0 || wr.TopLogprobs > 20 {
			t.Fatalf("accepted a request over a limit: %+v", wr)
		}
		if n := s.maxTokens(wr.MaxTokens); n <= 0 || n > s.cfg.TokensCap {
			t.Fatalf("runs with max_tokens %d", n)
		}
		// The frame carries exactly what the Request does, and the
		// credentials and timeout beside it.
		back := toWireRequest(wr.request())
		back.TimeoutMS, back.Grant, back.Cert = wr.TimeoutMS, wr.Grant, wr.Cert
		b1, err1 := json.Marshal(wr)
		b2, err2 := json.Marshal(back)
		if err1 != nil || err2 != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("request changed on its way through inference.Request:\n%s\n%s (%v, %v)", b1, b2, err1, err2)
		}
	})
}

// FuzzFrames reads a server's answer as Call does: frames are decoded or
// ErrMalformed, chunks and finals convert to inference values and back to
// the same frames, and the answer limit stops a server that sends more
// chunks or bytes than asked for with ErrAnswerTooLong.
func FuzzFrames(f *testing.F) {
	frames := func(frs ...frame) []byte {
		var b bytes.Buffer
		for _, fr := range frs {
			if err := wire.WriteJSON(&b, fr, MaxFrameSize); err != nil {
				f.Fatal(err)
			}
		}
		return b.Bytes()
	}
	text := func(s string) frame { return frame{Chunk: toWireChunk(inference.Chunk{Text: s})} }
	lp := frame{Chunk: toWireChunk(inference.Chunk{Text: " world", Logprobs: []inference.TokenLogprob{{Token: " world", Logprob: -0.25, Top: []inference.TopLogprob{{Token: " world", Logprob: -0.25}, {Token: " there", Logprob: -1.5}}}}})}
	tools := frame{Chunk: toWireChunk(inference.Chunk{ToolCalls: []inference.ToolCall{{Name: "weather", Arguments: `{"city":"Oslo"}`}}})}
	emb := frame{Chunk: toWireChunk(inference.Chunk{Embedding: []float32{0.5, -1, 3.25}})}
	fin := frame{Final: toWireFinal(inference.Final{FinishReason: "stop", PromptTokens: 3, CompletionTokens: 2, TTFT: 20 * time.Millisecond, Duration: time.Second, MeanLogprob: -0.4, HasLogprob: true})}
	fuzzcorpus.Add(f, frames(text("Hello"), lp, fin), 2)
	fuzzcorpus.Add(f, frames(tools, fin), 0)
	fuzzcorpus.Add(f, frames(emb, fin), 1)
	fuzzcorpus.Add(f, frames(text("a"), text("b"), text("c"), text("d"), fin), 1)
	fuzzcorpus.Add(f, frames(frame{Error: &errorFrame{Code: CodeBusy, Message: "too many streams"}}), 8)
	fuzzcorpus.Add(f, frames(fin, frame{Receipt: []byte{1, 2, 3}}), 8)
	fuzzcorpus.Add(f, []byte("\x05{\"chu"), 8)
	fuzzcorpus.Add(f, []byte("\x02{}"), 8)
	f.Fuzz(func(t *testing.T, data []byte, maxTokens int) {
		maxTokens = max(0, min(maxTokens, 64))
		r := wire.NewReader(bytes.NewReader(data), MaxFrameSize)
		lim := answerLimit{tokens: maxTokens, bytes: 64 << 10}
		chunks, read := 0, 0
		for {
			var fr frame
			n, err := readFrame(r, &fr)
			if err != nil {
				var se *json.SyntaxError
				if errors.As(err, &se) && !errors.Is(err, wire.ErrMalformed) {
					t.Fatalf("undecodable frame: %v, want ErrMalformed", err)
				}
				if errors.Is(err, wire.ErrMalformed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, wire.ErrTooLarge) {
					return
				}
				return // a bad length prefix
			}
			if n > MaxFrameSize {
				t.Fatalf("read a frame of %d bytes", n)
			}
			read += n
			if fr.Chunk != nil {
				chunks++
			}
			if err := lim.add(n, fr.Chunk != nil); err != nil {
				if !errors.Is(err, ErrAnswerTooLong) {
					t.Fatalf("limit: %v, want ErrAnswerTooLong", err)
				}
				if chunks <= lim.tokens+TokenSlack && read <= lim.bytes {
					t.Fatalf("stopped at %d chunks and %d bytes, within %d+%d and %d", chunks, read, lim.tokens, TokenSlack, lim.bytes)
				}
				return
			}
			if chunks > lim.tokens+TokenSlack || read > lim.bytes {
				t.Fatalf("let %d chunks and %d bytes through, limits %d+%d and %d", chunks, read, lim.tokens, TokenSlack, lim.bytes)
			}
			if fr.Chunk != nil {
				if back := toWireChunk(fr.Chunk.chunk()); !reflect.DeepEqual(back, fr.Chunk) {
					t.Fatalf("chunk changed through inference.Chunk:\n%+v\n%+v", fr.Chunk, back)
				}
			}
			if fr.Final != nil {
				if back := toWireFinal(fr.Final.final()); !reflect.DeepEqual(back, fr.Final) {
					t.Fatalf("final changed through inference.Final:\n%+v\n%+v", fr.Final, back)
				}
			}
			if fr.Error != nil {
				re := codes.Remote("", fr.Error.Code, fr.Error.Message)
				if len(re.Message) > wire.MaxMessage {
					t.Fatalf("remote message of %d bytes", len(re.Message))
				}
				if errors.Unwrap(re) == nil && fr.Error.Code != CodeInternal {
					if _, known := codes[fr.Error.Code]; known {
						t.Fatalf("code %q maps to no sentinel", fr.Error.Code)
					}
				}
			}
		}
	})
}
