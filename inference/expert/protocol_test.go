package expert

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/llama"
)

// randRows returns n rows of dim random values.
func randRows(n, dim int) [][]float32 {
	r := make([][]float32, n)
	for i := range r {
		r[i] = make([]float32, dim)
		for j := range r[i] {
			r[i][j] = rand.Float32()
		}
	}
	return r
}

// checkApply fails unless out is what x computes from in.
func checkApply(t *testing.T, x *llama.Expert, in, out [][]float32) {
	t.Helper()
	want := randRows(len(in), len(in[0]))
	if err := x.Apply(in, want); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		for j := range want[i] {
			if want[i][j] != out[i][j] {
				t.Fatalf("row %d col %d: %v, want %v", i, j, out[i][j], want[i][j])
			}
		}
	}
}

// TestCallOverMemoryBudgetIsBusy: a call whose rows the server's resource
// manager will not budget in the mwpeer.expert service is answered busy
// (inference.ErrBusy) without being read into memory, and the stream stays
// usable for calls that fit.
func TestCallOverMemoryBudgetIsBusy(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	// 512 KiB for the service: at medium priority a reservation may take it
	// to 60%, about 300 KiB. A stream's buffers (128 KiB) and a small call
	// fit; 1024 rows of 64 values, in and out (512 KiB), do not.
	limits := rcmgr.PartialLimitConfig{Service: map[string]rcmgr.ResourceLimits{
		ServiceName: {Memory: 512 << 10},
	}}.Build(rcmgr.DefaultLimits.AutoScale())
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits))
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.ResourceManager(rm))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	srv := NewServer(h, ServerConfig{})
	t.Cleanup(func() { srv.Close() })
	x, err := m.Expert(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	srv.Add(testModel, 0, 1, x)

	req := newHost(t)
	connect(t, req, h)
	cl := NewClient(req)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	in, out := randRows(2, c.Embedding), randRows(2, c.Embedding)
	if err := cl.Call(ctx, h.ID(), testModel, 0, 1, in, out); err != nil {
		t.Fatalf("small call: %v", err)
	}
	checkApply(t, x, in, out)

	big := randRows(MaxRows, c.Embedding)
	err = cl.Call(ctx, h.ID(), testModel, 0, 1, big, randRows(MaxRows, c.Embedding))
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != StatusBusy || re.Msg != "memory limit" || !errors.Is(err, inference.ErrBusy) {
		t.Fatalf("call over the budget: %v, want busy", err)
	}
	if srv.Calls.Load() != 1 {
		t.Fatalf("server computed %d calls, want 1", srv.Calls.Load())
	}

	// The busy answer left the stream in step: the next call on it works.
	in, out = randRows(3, c.Embedding), randRows(3, c.Embedding)
	if err := cl.Call(ctx, h.ID(), testModel, 0, 1, in, out); err != nil {
		t.Fatalf("small call after busy: %v", err)
	}
	checkApply(t, x, in, out)
	if n := len(req.Network().ConnsToPeer(h.ID())[0].GetStreams()); n > 1 {
		t.Fatalf("%d streams open to the server, want the one pooled stream", n)
	}
}

// TestPrepareRunsBeforeEachNewStream: Prepare is asked before a stream is
// opened (not for a pooled one), and its refusal ends the call before
// anything is sent.
func TestPrepareRunsBeforeEachNewStream(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	s := newSwarm(t, m, 1, func(l, e int) []int { return []int{0} })
	p := s.hosts[0].ID()
	cl := NewClient(s.req)
	defer cl.Close()
	refuse := errors.New("reachable only through a relay")
	var asked atomic.Int32
	var refusing atomic.Bool
	cl.Prepare = func(ctx context.Context, to peer.ID) (context.Context, error) {
		asked.Add(1)
		if to != p {
			t.Errorf("prepare for %s, want %s", to, p)
		}
		if refusing.Load() {
			return nil, refuse
		}
		return ctx, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		if err := cl.Call(ctx, p, testModel, 0, 0, randRows(2, c.Embedding), randRows(2, c.Embedding)); err != nil {
			t.Fatal(err)
		}
	}
	if asked.Load() != 1 {
		t.Fatalf("prepare asked %d times for 3 calls on one pooled stream", asked.Load())
	}
	cl.Close() // no pooled stream: the next call needs a new one
	cl = NewClient(s.req)
	defer cl.Close()
	cl.Prepare = func(context.Context, peer.ID) (context.Context, error) { asked.Add(1); return nil, refuse }
	before := s.servers[0].Calls.Load()
	if err := cl.Call(ctx, p, testModel, 0, 0, randRows(2, c.Embedding), randRows(2, c.Embedding)); !errors.Is(err, refuse) {
		t.Fatalf("refused by prepare: %v", err)
	}
	if s.servers[0].Calls.Load() != before {
		t.Fatal("a call prepare refused reached the server")
	}
}

// TestLimitedConnectionOnlyThroughPrepare: a host reached only through a
// circuit relay (a limited connection) gets no expert call from a Client
// without Prepare; Prepare can allow the limited connection.
func TestLimitedConnectionOnlyThroughPrepare(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)

	relayHost := newHost(t)
	rl, err := relay.New(relayHost)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rl.Close() })
	// The expert host listens nowhere: it is reachable only through the relay.
	behind, err := libp2p.New(libp2p.NoListenAddrs, libp2p.EnableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { behind.Close() })
	connect(t, behind, relayHost)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.Reserve(ctx, behind, peer.AddrInfo{ID: relayHost.ID(), Addrs: relayHost.Addrs()}); err != nil {
		t.Fatal(err)
	}
	srv := NewServer(behind, ServerConfig{})
	t.Cleanup(func() { srv.Close() })
	x, err := m.Expert(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	srv.Add(testModel, 1, 2, x)

	req, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.EnableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { req.Close() })
	circuit, err := ma.NewMultiaddr(relayHost.Addrs()[0].String() + "/p2p/" + relayHost.ID().String() + "/p2p-circuit")
	if err != nil {
		t.Fatal(err)
	}
	if err := req.Connect(ctx, peer.AddrInfo{ID: behind.ID(), Addrs: []ma.Multiaddr{circuit}}); err != nil {
		t.Fatal(err)
	}
	conns := req.Network().ConnsToPeer(behind.ID())
	if len(conns) != 1 || !conns[0].Stat().Limited {
		t.Fatalf("want one limited connection to the expert host, have %d", len(conns))
	}

	call := func(ctx context.Context, cl *Client) error {
		in, out := randRows(2, c.Embedding), randRows(2, c.Embedding)
		if err := cl.Call(ctx, behind.ID(), testModel, 1, 2, in, out); err != nil {
			return err
		}
		checkApply(t, x, in, out)
		return nil
	}
	// Without Prepare the stream waits for a direct connection, which never
	// comes (nobody can dial the host and nothing hole punches here).
	strict := NewClient(req)
	defer strict.Close()
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelShort()
	if err := call(short, strict); err == nil {
		t.Fatal("call without Prepare went over a limited connection")
	} else if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, network.ErrLimitedConn) {
		t.Fatalf("call without Prepare over a limited connection: %v", err)
	}
	if srv.Calls.Load() != 0 {
		t.Fatal("a call without Prepare reached the host behind the relay")
	}
	allowing := NewClient(req)
	defer allowing.Close()
	allowing.Prepare = func(ctx context.Context, _ peer.ID) (context.Context, error) {
		return network.WithAllowLimitedConn(ctx, "only host of the expert"), nil
	}
	if err := call(ctx, allowing); err != nil {
		t.Fatalf("call allowed over the relay: %v", err)
	}
	if srv.Calls.Load() != 1 {
		t.Fatalf("expert host computed %d calls, want 1", srv.Calls.Load())
	}
}

// TestServerRejects: calls the server cannot answer get an error status or
// a reset at once, never a hang or a wrong answer.
func TestServerRejects(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	s := newSwarm(t, m, 1, func(l, e int) []int { return []int{0} })
	cl := NewClient(s.req)
	defer cl.Close()
	p := s.hosts[0].ID()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows := func(n, dim int) [][]float32 {
		r := make([][]float32, n)
		for i := range r {
			r[i] = make([]float32, dim)
			for j := range r[i] {
				r[i][j] = rand.Float32()
			}
		}
		return r
	}
	var re *RemoteError
	// Unknown expert and unknown model: not hosted.
	if err := cl.Call(ctx, p, testModel, 0, c.Experts, rows(2, c.Embedding), rows(2, c.Embedding)); !errors.As(err, &re) || re.Status != StatusNotFound {
		t.Fatalf("unknown expert: %v", err)
	}
	if err := cl.Call(ctx, p, ModelKey{9}, 0, 0, rows(2, c.Embedding), rows(2, c.Embedding)); !errors.As(err, &re) || re.Status != StatusNotFound {
		t.Fatalf("unknown model: %v", err)
	}
	// Wrong row length: refused before the rows are read.
	if err := cl.Call(ctx, p, testModel, 0, 0, rows(2, c.Embedding+1), rows(2, c.Embedding+1)); !errors.As(err, &re) || re.Status != StatusBad {
		t.Fatalf("wrong row length: %v", err)
	}
	// Too many rows never leave the client.
	if err := cl.Call(ctx, p, testModel, 0, 0, rows(MaxRows+1, 1), rows(MaxRows+1, 1)); err == nil {
		t.Fatal("oversized call accepted")
	}
	// A good call on the same (pooled) stream still works, and matches local.
	in, out := rows(3, c.Embedding), rows(3, c.Embedding)
	if err := cl.Call(ctx, p, testModel, 1, 2, in, out); err != nil {
		t.Fatal(err)
	}
	want := rows(3, c.Embedding)
	ex, _ := m.Expert(1, 2)
	if err := ex.Apply(in, want); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		for j := range want[i] {
			if want[i][j] != out[i][j] {
				t.Fatalf("row %d col %d: %v, want %v", i, j, out[i][j], want[i][j])
			}
		}
	}
	// Garbage and a header announcing a huge payload: an error status and a
	// closed stream, at once.
	for name, raw := range map[string][]byte{
		"garbage": bytes.Repeat([]byte("x"), headerSize),
		"huge": func() []byte {
			b := make([]byte, headerSize)
			header{model: testModel, rows: MaxRows, dim: MaxDim}.marshal(b)
			return b
		}(),
	} {
		str, err := s.req.NewStream(ctx, p, ID)
		if err != nil {
			t.Fatal(err)
		}
		str.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := str.Write(raw); err != nil {
			t.Fatal(err)
		}
		status, msg, err := readStatus(str)
		if err != nil || status != StatusBad {
			t.Fatalf("%s: status %d %q %v", name, status, msg, err)
		}
		str.Reset()
	}
	// A call that gets no answer in time ends at its deadline.
	short, cancel2 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel2()
	time.Sleep(time.Millisecond)
	if err := cl.Call(short, p, testModel, 0, 0, rows(1, c.Embedding), rows(1, c.Embedding)); err == nil {
		t.Fatal("expired call succeeded")
	}
}

// TestPolicyRefusalIsNotBusy: an Admit error wrapping inference.ErrRefused
// answers refused, which the caller's errors.Is sees as ErrRefused (and not
// busy); the stream stays in step.
func TestPolicyRefusalIsNotBusy(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	h := newHost(t)
	var refuse atomic.Bool
	refuse.Store(true)
	srv := NewServer(h, ServerConfig{Admit: func(ctx context.Context, caller peer.ID, call Call) error {
		if refuse.Load() {
			return fmt.Errorf("not a member: %w", inference.ErrConsentRefused)
		}
		return nil
	}})
	t.Cleanup(func() { srv.Close() })
	x, err := m.Expert(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	srv.Add(testModel, 0, 1, x)
	req := newHost(t)
	connect(t, req, h)
	cl := NewClient(req)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in, out := randRows(2, c.Embedding), randRows(2, c.Embedding)
	err = cl.Call(ctx, h.ID(), testModel, 0, 1, in, out)
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != StatusRefused || !errors.Is(err, inference.ErrRefused) || errors.Is(err, inference.ErrBusy) {
		t.Fatalf("refused call: %v", err)
	}
	refuse.Store(false)
	if err := cl.Call(ctx, h.ID(), testModel, 0, 1, in, out); err != nil {
		t.Fatalf("admitted call on the same stream: %v", err)
	}
	checkApply(t, x, in, out)
}
