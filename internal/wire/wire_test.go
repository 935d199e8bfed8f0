package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestFramesAreCappedOnBothSides(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, map[string]string{"a": "b"}, 64); err != nil {
		t.Fatal(err)
	}
	if err := Write(&buf, make([]byte, 65), 64); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized write: %v", err)
	}
	if err := Write(&buf, bytes.Repeat([]byte("x"), 100), 100); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf, 64)
	var v map[string]string
	if err := ReadJSON(r, &v); err != nil || v["a"] != "b" {
		t.Fatalf("read %v (%v)", v, err)
	}
	if n, err := r.NextMsgLen(); err != nil || n != 100 {
		t.Fatalf("next length %d (%v): the length is told before the cap is checked", n, err)
	}
	if _, err := r.ReadMsg(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized read: %v", err)
	}
	buf.Reset()
	Write(&buf, []byte("{not json"), 64)
	if err := ReadJSON(NewReader(&buf, 64), &v); !errors.Is(err, ErrMalformed) {
		t.Fatalf("garbage: %v", err)
	}
}

var (
	errBusy = errors.New("busy")
	errGone = errors.New("gone")
)

func TestRemoteErrorUnwrapsToItsProtocolsSentinel(t *testing.T) {
	codes := Codes{"busy": errBusy, "gone": errGone, "timeout": context.DeadlineExceeded, "failed": nil}
	for _, tc := range []struct {
		err      error
		code     string
		sentinel error
	}{
		{fmt.Errorf("slot: %w", errBusy), "busy", errBusy},
		{errGone, "gone", errGone},
		{context.DeadlineExceeded, "timeout", context.DeadlineExceeded},
		{errors.New("boom"), CodeInternal, nil},
		{nil, CodeInternal, nil},
	} {
		code := codes.CodeOf(tc.err)
		if code != tc.code {
			t.Errorf("CodeOf(%v) = %q, want %q", tc.err, code, tc.code)
		}
		re := codes.Remote("peer", code, "m")
		if re.Unwrap() != tc.sentinel {
			t.Errorf("remote %q unwraps to %v, want %v", code, re.Unwrap(), tc.sentinel)
		}
	}
	re := codes.Remote("peer", "failed", strings.Repeat("x", 2*MaxMessage))
	if re.Unwrap() != nil || len(re.Message) != MaxMessage {
		t.Fatalf("failed: unwraps to %v, message of %d bytes", re.Unwrap(), len(re.Message))
	}
	// Another protocol's codes give another protocol's sentinels.
	if errors.Is(Codes{"busy": errGone}.Remote("peer", "busy", ""), errBusy) {
		t.Fatal("codes leaked between protocols")
	}
}

func TestDefaultFillsZeroAndNegative(t *testing.T) {
	cfg := struct {
		A, B, C time.Duration
		N       int
		S       string
	}{B: -1, C: time.Second}
	Default(&cfg.A, time.Minute)
	Default(&cfg.B, time.Minute)
	Default(&cfg.C, time.Minute)
	Default(&cfg.N, 4)
	Default(&cfg.S, "x")
	if cfg.A != time.Minute || cfg.B != time.Minute || cfg.C != time.Second || cfg.N != 4 || cfg.S != "x" {
		t.Fatalf("%+v", cfg)
	}
}
