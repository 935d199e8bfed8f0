package tally

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/internal/p2ptest"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/internal/wire"
	"github.com/mwpeer/mwpeer/receipt"
)

const model = "5f1d7c0e8a9b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d"
const ff = 128

// stored collects what a Store hook is given.
type stored struct {
	mu  sync.Mutex
	all []*receipt.SignedTally
}

func (s *stored) store(t *receipt.SignedTally) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, t)
	return nil
}

func (s *stored) list() []*receipt.SignedTally {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*receipt.SignedTally(nil), s.all...)
}

func keyOf(h host.Host) crypto.PrivKey { return h.Peerstore().PrivKey(h.ID()) }

// pair is a payer and a worker on loopback, the worker's Service counting
// in experts and shards.
type pair struct {
	payer, worker host.Host
	experts       *Meter
	shards        *Meter
	svc           *Service
	paid, worked  stored
	p             *Payer
	ctx           context.Context
	cancel        context.CancelFunc
}

func newPair(t *testing.T) *pair {
	pr := &pair{payer: p2ptest.NewHost(t), worker: p2ptest.NewHost(t), experts: NewMeter(0), shards: NewMeter(0)}
	p2ptest.Connect(t, pr.payer, pr.worker)
	pr.svc = NewService(pr.worker, ServiceConfig{
		Key: keyOf(pr.worker), Experts: pr.experts, Shards: pr.shards, Store: pr.worked.store, CatchUp: 200 * time.Millisecond,
		FeedForward: func(m string) int {
			if m == model {
				return ff
			}
			return 0
		},
	})
	t.Cleanup(func() { pr.svc.Close() })
	pr.p = &Payer{Host: pr.payer, Key: keyOf(pr.payer), Store: pr.paid.store}
	pr.ctx, pr.cancel = context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(pr.cancel)
	return pr
}

func (pr *pair) expertTally(w Work) receipt.Tally {
	return receipt.Tally{Kind: receipt.KindExpert, Worker: pr.worker.ID(), Model: model, Calls: w.Calls, Rows: w.Rows,
		Flops: receipt.ExpertFlops(w.Values, ff), Start: time.Now().Add(-time.Second), End: time.Now()}
}

func TestAgreedTallyIsSignedByBothAndStoredOnBothSides(t *testing.T) {
	wait.NoLeak(t)
	pr := newPair(t)
	w := Work{Calls: 12, Rows: 40, Values: 40 * 64}
	pr.experts.Add(pr.payer.ID(), model, w)
	s, err := pr.p.Settle(pr.ctx, pr.expertTally(w))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	paid, worked := pr.paid.list(), pr.worked.list()
	if len(paid) != 1 || len(worked) != 1 || string(paid[0].Marshal()) != string(worked[0].Marshal()) {
		t.Fatalf("payer stored %d, worker %d tallies, or they differ", len(paid), len(worked))
	}
	if err := worked[0].Verify(); err != nil {
		t.Fatalf("worker's copy: %v", err)
	}
	if s.Flops != receipt.ExpertFlops(40*64, ff) || s.Cost != receipt.ExpertCost(s.Flops) {
		t.Fatalf("flops %d cost %d", s.Flops, s.Cost)
	}
	if n := pr.experts.Len(); n != 0 {
		t.Fatalf("worker's meter holds %d counterparts after settling, want a new window", n)
	}
	// The same proposal again is a replay.
	pr.experts.Add(pr.payer.ID(), model, w)
	again := *s
	again.WorkerSig = nil
	if _, err := Propose(pr.ctx, pr.payer, &again); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "settled already") {
		t.Fatalf("replayed tally: %v", err)
	}
}

func TestDisagreementIsRefusedAndStoredDisputed(t *testing.T) {
	cases := []struct {
		name       string
		counted    Work // by the worker
		proposed   Work // by the payer
		disputedAt int  // tallies the worker stores
	}{
		{"worker counts more rows", Work{Calls: 3, Rows: 12, Values: 12 * 64}, Work{Calls: 3, Rows: 10, Values: 10 * 64}, 1},
		{"payer claims more calls", Work{Calls: 3, Rows: 10, Values: 10 * 64}, Work{Calls: 4, Rows: 10, Values: 10 * 64}, 1},
		{"other flops", Work{Calls: 3, Rows: 10, Values: 10 * 64}, Work{Calls: 3, Rows: 10, Values: 10 * 32}, 1},
		{"nothing counted", Work{}, Work{Calls: 1, Rows: 1, Values: 64}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pr := newPair(t)
			if !c.counted.IsZero() {
				pr.experts.Add(pr.payer.ID(), model, c.counted)
			}
			s, err := pr.p.Settle(pr.ctx, pr.expertTally(c.proposed))
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("settle: %v, want ErrRefused", err)
			}
			t.Logf("refused: %v", err)
			if s == nil || s.WorkerSig != nil || s.VerifyPayer() != nil {
				t.Fatalf("payer's tally %+v", s)
			}
			if paid := pr.paid.list(); len(paid) != 1 || paid[0].WorkerSig != nil {
				t.Fatalf("payer stored %d tallies, want its disputed one", len(paid))
			}
			worked := pr.worked.list()
			if len(worked) != c.disputedAt {
				t.Fatalf("worker stored %d tallies, want %d", len(worked), c.disputedAt)
			}
			for _, w := range worked {
				if w.WorkerSig != nil || w.ID != s.ID {
					t.Fatal("worker stored a signed or another tally")
				}
			}
			if pr.experts.Len() != 0 {
				t.Fatal("the worker's window did not close")
			}
		})
	}
}

func TestProposalsOnlyFromTheirPayerToTheirWorker(t *testing.T) {
	pr := newPair(t)
	third := p2ptest.NewHost(t)
	p2ptest.Connect(t, third, pr.worker)
	w := Work{Calls: 1, Rows: 2, Values: 128}
	pr.experts.Add(pr.payer.ID(), model, w)

	// A third peer passing on the payer's signed tally.
	tl := pr.expertTally(w)
	tl.ID, tl.Payer = receipt.NewID(), pr.payer.ID()
	tl.Cost = tl.Price()
	s, err := receipt.SignPayer(tl, keyOf(pr.payer))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Propose(pr.ctx, third, s); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "proposed by") {
		t.Fatalf("relayed proposal: %v", err)
	}
	// A tally for another worker.
	tl.Worker, tl.ID = third.ID(), receipt.NewID()
	s, _ = receipt.SignPayer(tl, keyOf(pr.payer))
	s.Worker = pr.worker.ID() // and sent to this one: the signature no longer holds
	if _, err := Propose(pr.ctx, pr.payer, s); !errors.Is(err, ErrRefused) {
		t.Fatalf("tally for another worker: %v", err)
	}
	// An unknown model.
	tl = pr.expertTally(w)
	tl.Model = strings.Repeat("0", 64)
	if _, err := pr.p.Settle(pr.ctx, tl); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not hosted") {
		t.Fatalf("unknown model: %v", err)
	}
	if n := len(pr.worked.list()); n != 0 {
		t.Fatalf("worker stored %d tallies from bad proposals", n)
	}
	// The real work still settles.
	if _, err := pr.p.Settle(pr.ctx, pr.expertTally(w)); err != nil {
		t.Fatal(err)
	}
}

// TestWorkerWaitsForItsCountToCatchUp: the payer may have read the answer
// a moment before the worker counted it.
func TestWorkerWaitsForItsCountToCatchUp(t *testing.T) {
	pr := newPair(t)
	pr.experts.Add(pr.payer.ID(), model, Work{Calls: 1, Rows: 2, Values: 128})
	done := make(chan error, 1)
	go func() {
		_, err := pr.p.Settle(pr.ctx, pr.expertTally(Work{Calls: 2, Rows: 4, Values: 256}))
		done <- err
	}()
	wait.For(t, 5*time.Second, "the worker is waiting for its count", func() error {
		pr.experts.mu.Lock()
		defer pr.experts.mu.Unlock()
		if pr.experts.wake == nil {
			return errors.New("nobody waits")
		}
		return nil
	})
	pr.experts.Add(pr.payer.ID(), model, Work{Calls: 1, Rows: 2, Values: 128})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestShardTallySettles(t *testing.T) {
	pr := newPair(t)
	pr.shards.Add(pr.payer.ID(), "", Work{Calls: 3, Bytes: 3 << 20})
	s, err := pr.p.Settle(pr.ctx, receipt.Tally{Kind: receipt.KindShard, Worker: pr.worker.ID(), Calls: 3, Bytes: 3 << 20,
		Start: time.Now().Add(-time.Second), End: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if s.Verify() != nil || s.Cost != receipt.ShardCost(3<<20) {
		t.Fatalf("shard tally %+v", s.Tally)
	}
}

// TestOversizedProposalIsNotRead: the worker reads no more than
// MaxProposal bytes of a proposal.
func TestOversizedProposalIsNotRead(t *testing.T) {
	pr := newPair(t)
	str, err := pr.payer.NewStream(pr.ctx, pr.worker.ID(), ID)
	if err != nil {
		t.Fatal(err)
	}
	defer str.Reset()
	str.Write(binary.AppendUvarint(nil, MaxProposal+1))
	str.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := wire.NewReader(str, MaxAnswer).ReadMsg(); err == nil {
		t.Fatal("the worker answered an oversized proposal")
	}
	// Garbage of a valid size is refused with a reason.
	str2, err := pr.payer.NewStream(pr.ctx, pr.worker.ID(), ID)
	if err != nil {
		t.Fatal(err)
	}
	defer str2.Reset()
	wire.Write(str2, []byte("not a tally"), MaxProposal)
	str2.SetDeadline(time.Now().Add(5 * time.Second))
	frame, err := wire.NewReader(str2, MaxAnswer).ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	if kind, reason, err := decodeAnswer(frame); err != nil || kind != answerRefuse || !strings.Contains(string(reason), "malformed") {
		t.Fatalf("garbage: %q %q %v", kind, reason, err)
	}
}

func TestMeterIsBoundedLeastRecentlyUsedFirst(t *testing.T) {
	m := NewMeter(3)
	ids := []peer.ID{"a", "b", "c", "d"}
	for _, p := range ids[:3] {
		m.Add(p, "", Work{Calls: 1})
	}
	m.Add("a", "", Work{Calls: 1}) // a is now the most recent
	m.Add("d", "", Work{Calls: 1}) // pushes out b
	if m.Len() != 3 || m.Evicted() != 1 {
		t.Fatalf("len %d evicted %d", m.Len(), m.Evicted())
	}
	if w, _ := m.Get("b", ""); !w.IsZero() {
		t.Fatal("b was kept")
	}
	if w, _ := m.Get("a", ""); w.Calls != 2 {
		t.Fatalf("a counts %d calls", w.Calls)
	}
	// One peer's models are counterparts of their own.
	m.Add("a", "m1", Work{Rows: 5})
	if w, _ := m.Get("a", ""); w.Rows != 0 {
		t.Fatal("models mixed")
	}
	if due := m.Due("m1", 0); len(due) != 1 || due[0] != "a" {
		t.Fatalf("due %v", due)
	}
	if due := m.Due("m1", time.Hour); len(due) != 0 {
		t.Fatalf("due within the hour %v", due)
	}
	w, _, ok := m.Take("a", "m1")
	if !ok || w.Rows != 5 {
		t.Fatalf("take %v %v", w, ok)
	}
	if _, _, ok := m.Take("a", "m1"); ok {
		t.Fatal("taken twice")
	}
}

func TestMeterManyStrangers(t *testing.T) {
	m := NewMeter(0)
	for i := range 3 * DefaultMaxEntries {
		m.Add(peer.ID(fmt.Sprint(i)), "", Work{Bytes: 1})
	}
	if m.Len() != DefaultMaxEntries || m.Evicted() != 2*DefaultMaxEntries {
		t.Fatalf("len %d evicted %d", m.Len(), m.Evicted())
	}
}

// TestBusyWorkerTakesNothing: a worker at its limit of settlements answers
// busy; the payer stores nothing and learns the work is still owed, and the
// worker's count is untouched. So is a worker that cannot be reached.
func TestBusyWorkerTakesNothing(t *testing.T) {
	pr := newPair(t)
	pr.svc.Close()
	pr.svc = NewService(pr.worker, ServiceConfig{Key: keyOf(pr.worker), Experts: pr.experts, Store: pr.worked.store, MaxStreams: 1,
		FeedForward: func(string) int { return ff }})
	t.Cleanup(func() { pr.svc.Close() })
	w := Work{Calls: 2, Rows: 4, Values: 256}
	pr.experts.Add(pr.payer.ID(), model, w)

	hold, err := pr.payer.NewStream(pr.ctx, pr.worker.ID(), ID) // takes the one slot, sends nothing
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Reset()
	hold.Write(nil)
	wait.For(t, 5*time.Second, "the held stream takes the slot", func() error {
		if len(pr.svc.slots) != 1 {
			return errors.New("slot free")
		}
		return nil
	})
	s, err := pr.p.Settle(pr.ctx, pr.expertTally(w))
	if !errors.Is(err, ErrNotProposed) || s != nil {
		t.Fatalf("busy worker: %v (%v), want ErrNotProposed", err, s)
	}
	if len(pr.paid.list())+len(pr.worked.list()) != 0 {
		t.Fatal("a tally was stored")
	}
	if got, _ := pr.experts.Get(pr.payer.ID(), model); got != w {
		t.Fatalf("the worker's count changed: %+v", got)
	}
	hold.Reset()
	wait.For(t, 5*time.Second, "the slot is free", func() error {
		if len(pr.svc.slots) != 0 {
			return errors.New("slot held")
		}
		return nil
	})
	if _, err := pr.p.Settle(pr.ctx, pr.expertTally(w)); err != nil {
		t.Fatalf("once free: %v", err)
	}

	// A worker that cannot be reached.
	gone := p2ptest.NewHost(t)
	gone.Close()
	tl := pr.expertTally(w)
	tl.Worker = gone.ID()
	if _, err := pr.p.Settle(pr.ctx, tl); !errors.Is(err, ErrNotProposed) {
		t.Fatalf("unreachable worker: %v, want ErrNotProposed", err)
	}
}
