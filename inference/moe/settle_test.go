package moe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"golang.org/x/sync/errgroup"

	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/inference/tally"
	"github.com/mwpeer/mwpeer/internal/wait"
	"github.com/mwpeer/mwpeer/receipt"
)

// ledger is a Store hook that keeps tallies by ID.
type ledger struct {
	mu  sync.Mutex
	ids []receipt.ID
	by  map[receipt.ID]*receipt.SignedTally
}

func (l *ledger) store(t *receipt.SignedTally) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.by == nil {
		l.by = make(map[receipt.ID]*receipt.SignedTally)
	}
	if _, ok := l.by[t.ID]; !ok {
		l.ids = append(l.ids, t.ID)
	}
	l.by[t.ID] = t
	return nil
}

func (l *ledger) all() []*receipt.SignedTally {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*receipt.SignedTally, 0, len(l.ids))
	for _, id := range l.ids {
		out = append(out, l.by[id])
	}
	return out
}

// settling is a swarm whose hosts settle tallies, and the runner's Experts
// that pays them.
type settling struct {
	*swarm
	x      *Experts
	runner ledger
	hosts  []*ledger
}

func newSettling(t *testing.T, m *llama.Model, n int) *settling {
	c := m.Config
	s := &settling{swarm: newSwarm(t, m, n, replicated(n, c.Experts))}
	for i, h := range s.swarm.hosts {
		l := &ledger{}
		s.hosts = append(s.hosts, l)
		svc := tally.NewService(h, tally.ServiceConfig{
			Key: key(h), Experts: s.servers[i].Meter, Store: l.store,
			FeedForward: func(model string) int {
				if model == testModel.String() {
					return c.FeedForward
				}
				return 0
			},
		})
		t.Cleanup(func() { svc.Close() })
	}
	s.x = s.experts(t)
	s.x.FeedForward = c.FeedForward
	s.x.Payer = &tally.Payer{Host: s.req, Key: key(s.req), Store: s.runner.store}
	return s
}

func key(h host.Host) crypto.PrivKey { return h.Peerstore().PrivKey(h.ID()) }

// TestRunnerAndHostsAgreeOnTallies: after a generation on three hosts, the
// runner settles with each; every host and the runner hold the same
// both-signed tally for it, and the tallies cover every remote call with
// the flops the model's shape gives.
func TestRunnerAndHostsAgreeOnTallies(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	s := newSettling(t, m, 3)
	if _, err := generate(t, m, s.x, 16, nil); err != nil {
		t.Fatal(err)
	}
	// What each host counted for the runner, before settling. A host
	// counts a call once its answer is sent, so the runner may hold the
	// last answer a moment before the host counted it.
	wait.For(t, 5*time.Second, "the hosts count every call the runner made", func() error {
		var n uint64
		for _, srv := range s.servers {
			w, _ := srv.Meter.Get(s.req.ID(), testModel.String())
			n += w.Calls
		}
		if n != s.x.RemoteCalls.Load() {
			return fmt.Errorf("hosts counted %d calls, the runner made %d", n, s.x.RemoteCalls.Load())
		}
		return nil
	})
	var counted []tally.Work
	for _, srv := range s.servers {
		w, _ := srv.Meter.Get(s.req.ID(), testModel.String())
		counted = append(counted, w)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.x.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	paid := s.runner.all()
	if len(paid) != len(s.swarm.hosts) {
		t.Fatalf("runner holds %d tallies for %d hosts", len(paid), len(s.swarm.hosts))
	}
	var calls uint64
	for i, h := range s.swarm.hosts {
		var mine *receipt.SignedTally
		for _, p := range paid {
			if p.Worker == h.ID() {
				mine = p
			}
		}
		if mine == nil {
			t.Fatalf("no tally with host %d", i)
		}
		if err := mine.Verify(); err != nil {
			t.Fatalf("host %d: %v", i, err)
		}
		theirs := s.hosts[i].all()
		if len(theirs) != 1 || string(theirs[0].Marshal()) != string(mine.Marshal()) {
			t.Fatalf("host %d holds %d tallies, not the runner's", i, len(theirs))
		}
		w := counted[i]
		if mine.Calls != w.Calls || mine.Rows != w.Rows || mine.Flops != receipt.ExpertFlops(w.Values, c.FeedForward) ||
			mine.Flops != 6*uint64(c.Embedding*c.FeedForward)*w.Rows || mine.Model != testModel.String() ||
			mine.Payer != s.req.ID() || mine.Cost != receipt.ExpertCost(mine.Flops) {
			t.Fatalf("host %d: tally %+v, host counted %+v", i, mine.Tally, w)
		}
		calls += mine.Calls
	}
	if calls != s.x.RemoteCalls.Load() {
		t.Fatalf("tallies cover %d calls, the runner made %d", calls, s.x.RemoteCalls.Load())
	}
	// Both sides start a new window: nothing is left to settle.
	for i, srv := range s.servers {
		if w, _ := srv.Meter.Get(s.req.ID(), testModel.String()); !w.IsZero() {
			t.Fatalf("host %d still counts %+v", i, w)
		}
	}
	if err := s.x.Settle(ctx); err != nil || len(s.runner.all()) != len(paid) {
		t.Fatalf("settling again: %v, %d tallies", err, len(s.runner.all()))
	}
}

// TestHostClaimingMoreRowsGetsNoSignedTally: a host whose count says it
// answered more rows than the runner received does not get the runner's
// tally countersigned: it is refused, and both sides hold it disputed
// (the runner's signature only), for the runner's own count.
func TestHostClaimingMoreRowsGetsNoSignedTally(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	s := newSettling(t, m, 2)
	if _, err := generate(t, m, s.x, 8, nil); err != nil {
		t.Fatal(err)
	}
	liar := 1
	s.servers[liar].Meter.Add(s.req.ID(), testModel.String(), tally.Work{Rows: 3, Values: 3 * uint64(c.Embedding)})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := s.x.Settle(ctx)
	if !errors.Is(err, tally.ErrRefused) {
		t.Fatalf("settle: %v, want a refusal", err)
	}
	t.Logf("refused: %v", err)
	for _, p := range s.runner.all() {
		honest := p.Worker == s.swarm.hosts[0].ID()
		if honest != (p.Verify() == nil) {
			t.Fatalf("tally with %s: both signed %v", p.Worker.ShortString(), p.Verify() == nil)
		}
		if !honest {
			theirs := s.hosts[liar].all()
			if len(theirs) != 1 || theirs[0].ID != p.ID || theirs[0].WorkerSig != nil || theirs[0].Rows != p.Rows {
				t.Fatalf("the lying host holds %+v", theirs)
			}
		}
	}
}

// TestConcurrentGenerationsSettleExactly: generations running at once on
// the same hosts, each settling when it ends, never disagree: settling
// with a host holds back the other generations' calls to it.
func TestConcurrentGenerationsSettleExactly(t *testing.T) {
	wait.NoLeak(t)
	c := moeConfig()
	m := loadModel(t, c)
	s := newSettling(t, m, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var g errgroup.Group
	for i := range 4 {
		g.Go(func() error {
			if _, err := generate(t, m, s.x, 8+4*i, nil); err != nil {
				return err
			}
			return s.x.Settle(ctx)
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	var calls uint64
	for _, p := range s.runner.all() {
		if err := p.Verify(); err != nil {
			t.Fatalf("tally with %s: %v", p.Worker.ShortString(), err)
		}
		calls += p.Calls
	}
	if calls != s.x.RemoteCalls.Load() {
		t.Fatalf("tallies cover %d calls, the runner made %d", calls, s.x.RemoteCalls.Load())
	}
	wait.For(t, 5*time.Second, "every host holds what the runner holds", func() error {
		n := 0
		for _, l := range s.hosts {
			n += len(l.all())
		}
		if n != len(s.runner.all()) {
			return fmt.Errorf("hosts hold %d tallies, the runner %d", n, len(s.runner.all()))
		}
		return nil
	})
}
