package moe

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/inference/llama"
	"github.com/mwpeer/mwpeer/trust"
)

// A corruption turns an honest expert's answer into a wrong one.
type corruption func(out [][]float32)

// The adversaries of these tests, each as hostile as the protocol lets a
// host be: it runs the real expert, then changes what it sends.
var (
	// randomRows answers rows of plausible size that have nothing to do
	// with the input.
	randomRows corruption = func(out [][]float32) {
		for _, r := range out {
			for j := range r {
				r[j] = float32(rand.NormFloat64()) * 0.05
			}
		}
	}
	// nanRows slips a single NaN into the last row.
	nanRows corruption = func(out [][]float32) { r := out[len(out)-1]; r[len(r)/2] = float32(math.NaN()) }
	// otherKernels stands for an honest host of another kernel set: the
	// last bit of each value differs, as neon's or generic's sums differ
	// from avx2's.
	otherKernels corruption = func(out [][]float32) {
		for _, r := range out {
			for j := range r {
				r[j] = math.Float32frombits(math.Float32bits(r[j]) ^ 1)
			}
		}
	}
	// scaled answers the right rows times 1.01: close, but not the bits.
	scaled corruption = func(out [][]float32) {
		for _, r := range out {
			for j := range r {
				r[j] *= 1.01
			}
		}
	}
)

// lying is a hosted expert that computes honestly and then applies its
// corruption; calls counts the calls it answered.
type lying struct {
	expert.Engine
	corrupt corruption
	calls   *atomic.Int64
}

func (l lying) Apply(in, out [][]float32) error {
	if err := l.Engine.Apply(in, out); err != nil {
		return err
	}
	l.calls.Add(1)
	if l.corrupt != nil {
		l.corrupt(out)
	}
	return nil
}

// crowd is a requester and hosts that each hold every expert of a model,
// host i corrupting its answers with corrupt[i] (nil: honest).
type crowd struct {
	*swarm
	calls []*atomic.Int64 // answered per host
}

func newCrowd(t testing.TB, m *llama.Model, corrupt []corruption) *crowd {
	all := make([]int, len(corrupt))
	for i := range all {
		all[i] = i
	}
	s := newSwarm(t, m, len(corrupt), func(int, int) []int { return nil })
	s.owners = func(int, int) []int { return all }
	c := &crowd{swarm: s}
	for i, srv := range s.servers {
		n := new(atomic.Int64)
		c.calls = append(c.calls, n)
		for l := range m.Config.Layers {
			for e := range m.Config.Experts {
				x, err := m.Expert(l, e)
				if err != nil {
					t.Fatal(err)
				}
				srv.Add(testModel, l, e, lying{x, corrupt[i], n})
			}
		}
	}
	return c
}

// TestWrongExpertsAreCaughtAndExcluded: three of six hosts of every expert
// lie (random rows, a NaN, rows scaled by 1.01) and are the nearest, so
// replica choice prefers them. With a quarter of the calls spot-checked,
// each liar is caught within a few of its calls (the NaN at once), is
// reported once and excluded, and then the model answers exactly as it
// does run locally, with no call reaching a liar.
func TestWrongExpertsAreCaughtAndExcluded(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	want, err := generate(t, m, nil, 32, nil)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"random", "NaN", "×1.01", "honest", "honest", "honest"}
	cr := newCrowd(t, m, []corruption{randomRows, nanRows, scaled, nil, nil, nil})
	x := cr.experts(t)
	x.Verify = 0.25
	x.RTT = func(p peer.ID) (time.Duration, bool) {
		if cr.index(p) < 3 {
			return time.Millisecond, true // the liars are the nearest
		}
		return 5 * time.Millisecond, true
	}
	var mu sync.Mutex
	caughtAfter := map[int]int64{} // liar → calls it had answered when caught
	reports := map[peer.ID]int{}
	x.OnBadHost = func(p peer.ID, model, reason string) {
		mu.Lock()
		defer mu.Unlock()
		reports[p]++
		i := cr.index(p)
		caughtAfter[i] = cr.calls[i].Load()
		t.Logf("caught %s (%s) after %d of its calls: %s", p.ShortString(), names[i], caughtAfter[i], reason)
	}
	for round := 0; ; round++ {
		if round == 20 {
			t.Fatalf("after %d generations only %v of the liars were caught", round, caughtAfter)
		}
		if _, err := generate(t, m, x, 16, nil); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		n := len(caughtAfter)
		mu.Unlock()
		if n == 3 {
			break
		}
	}
	for i := range 3 {
		if !x.Trust.Excluded(cr.hosts[i].ID().String()) {
			t.Fatalf("%s liar not excluded", names[i])
		}
		if reports[cr.hosts[i].ID()] != 1 {
			t.Fatalf("%s liar reported %d times, want once", names[i], reports[cr.hosts[i].ID()])
		}
		if sc := x.Trust.Score(cr.hosts[i].ID().String()); len(sc.Reasons) == 0 || sc.Wrong == 0 {
			t.Fatalf("%s liar's score: %+v", names[i], sc)
		}
	}
	// Every NaN answer is rejected, the first one convicts: only calls
	// already in flight with it (one layer's experts, at most 4 by the
	// in-flight weighing of replica order) were answered before.
	if caughtAfter[1] > 4 {
		t.Fatalf("the NaN host answered %d calls before being caught", caughtAfter[1])
	}
	for i := 3; i < 6; i++ {
		if _, ok := caughtAfter[i]; ok || x.Trust.Excluded(cr.hosts[i].ID().String()) {
			t.Fatalf("honest host %d convicted", i)
		}
	}
	if x.Undecided.Load() != 0 {
		t.Fatalf("%d undecided spot-checks with three honest replicas", x.Undecided.Load())
	}
	before := []int64{cr.calls[0].Load(), cr.calls[1].Load(), cr.calls[2].Load()}
	got, err := generate(t, m, x, 32, nil)
	if err != nil {
		t.Fatal(err)
	}
	same(t, got, want)
	for i := range 3 {
		if cr.calls[i].Load() != before[i] {
			t.Fatalf("the excluded %s liar still got calls", names[i])
		}
	}
	t.Logf("spot-checks %d of %d remote calls, caught %d", x.Checks.Load(), x.RemoteCalls.Load(), x.Caught.Load())
}

// index returns the number of host p in the swarm, or -1.
func (s *swarm) index(p peer.ID) int {
	return slices.IndexFunc(s.hosts, func(h host.Host) bool { return h.ID() == p })
}

// oneCall makes one Apply of expert (0, 0) on a single row.
func oneCall(t *testing.T, x *Experts, dim int) ([][]float32, error) {
	t.Helper()
	in := [][]float32{make([]float32, dim)}
	for j := range in[0] {
		in[0][j] = float32(j%7) / 10
	}
	out := [][]float32{make([]float32, dim)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return out, x.Apply(ctx, 0, 0, in, out)
}

// TestSpotCheckShare: a share Verify of remote calls is checked: none at 0,
// all at 1, about a tenth at 0.1.
func TestSpotCheckShare(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	cr := newCrowd(t, m, []corruption{nil, nil})
	for _, tc := range []struct {
		share    float64
		calls    int
		min, max uint64
	}{
		{0, 200, 0, 0},
		{1, 100, 100, 100},
		{0.1, 2000, 140, 260}, // mean 200, sd 13.4
	} {
		x := cr.experts(t)
		x.Verify = tc.share
		for range tc.calls {
			if _, err := oneCall(t, x, c.Embedding); err != nil {
				t.Fatal(err)
			}
		}
		if n := x.Checks.Load(); n < tc.min || n > tc.max {
			t.Fatalf("share %v: %d checks in %d calls, want %d..%d", tc.share, n, tc.calls, tc.min, tc.max)
		}
		if want := uint64(tc.calls) + x.Checks.Load(); x.RemoteCalls.Load() != want {
			t.Fatalf("share %v: %d remote calls, want %d (one more per check)", tc.share, x.RemoteCalls.Load(), want)
		}
	}
}

// TestMajorityDecides: a spot-check between a liar and an honest host is
// decided by a third replica; the liar is convicted and the call answered
// right. With only two replicas that disagree nobody is blamed and the
// call fails rather than answer wrongly.
func TestMajorityDecides(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	honest, _ := m.Expert(0, 0)
	in := [][]float32{make([]float32, c.Embedding)}
	for j := range in[0] {
		in[0][j] = float32(j%7) / 10
	}
	want := [][]float32{make([]float32, c.Embedding)}
	if err := honest.Apply(in, want); err != nil {
		t.Fatal(err)
	}
	// Host 3 is honest but computes with other kernels ("neon"): it is
	// replica order's second, yet neither compared with the liar nor asked
	// to decide, since its bits would differ from both.
	cr := newCrowd(t, m, []corruption{scaled, nil, nil, otherKernels})
	kernels := func(p peer.ID) string {
		if cr.index(p) == 3 {
			return "neon"
		}
		return "avx2" // the liar claims the honest hosts' set
	}
	for _, first := range []int{0, 1} { // the liar asked first, then second
		x := cr.experts(t)
		x.Verify = 1
		x.Kernels = kernels
		order := []int{first, 3, 1 - first, 2}
		x.Hosts = func(int, int) []peer.ID {
			return []peer.ID{cr.hosts[order[0]].ID(), cr.hosts[order[1]].ID(), cr.hosts[order[2]].ID(), cr.hosts[order[3]].ID()}
		}
		var reported []peer.ID
		x.OnBadHost = func(p peer.ID, _, _ string) { reported = append(reported, p) }
		got, err := oneCall(t, x, c.Embedding)
		if err != nil {
			t.Fatal(err)
		}
		if !equalRows(got, want) {
			t.Fatalf("liar asked %d: the answer is not the honest one", first)
		}
		if len(reported) != 1 || reported[0] != cr.hosts[0].ID() || !x.Trust.Excluded(cr.hosts[0].ID().String()) {
			t.Fatalf("liar asked %d: reported %v", first, reported)
		}
		for _, i := range []int{1, 2, 3} {
			if x.Trust.Excluded(cr.hosts[i].ID().String()) {
				t.Fatalf("honest host %d excluded", i)
			}
		}
	}
	if n := cr.calls[3].Load(); n != 0 {
		t.Fatalf("the host of other kernels answered %d spot-check calls", n)
	}

	x := cr.experts(t)
	x.Verify = 1
	x.Hosts = func(int, int) []peer.ID { return []peer.ID{cr.hosts[0].ID(), cr.hosts[1].ID()} }
	x.OnBadHost = func(p peer.ID, _, _ string) { t.Errorf("%s convicted without a majority", p.ShortString()) }
	if _, err := oneCall(t, x, c.Embedding); !errors.Is(err, ErrNoHost) {
		t.Fatalf("two replicas disagreeing: %v, want ErrNoHost", err)
	}
	if x.Undecided.Load() != 1 {
		t.Fatalf("undecided %d", x.Undecided.Load())
	}
}

// TestSpotChecksCompareOneKernelSet: of three honest hosts, one computes
// with other kernels (its last bits differ) and says so. With every call
// spot-checked and each host first in turn, it is never convicted: the two
// hosts of one set are checked against each other, and a call whose first
// host has no partner of its set goes unchecked (Unpaired). Without the
// kernel sets, the same calls convict it: the test's difference is real.
func TestSpotChecksCompareOneKernelSet(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	cr := newCrowd(t, m, []corruption{nil, nil, otherKernels})
	kernels := func(p peer.ID) string {
		if cr.index(p) == 2 {
			return "neon"
		}
		return "avx2"
	}
	x := cr.experts(t)
	x.Verify = 1
	x.Kernels = kernels
	x.OnBadHost = func(p peer.ID, _, reason string) { t.Errorf("%s convicted: %s", p.ShortString(), reason) }
	orders := [][]int{{0, 2, 1}, {2, 0, 1}, {1, 2, 0}, {2, 1, 0}, {0, 1, 2}}
	for _, order := range orders {
		x.Hosts = func(int, int) []peer.ID {
			return []peer.ID{cr.hosts[order[0]].ID(), cr.hosts[order[1]].ID(), cr.hosts[order[2]].ID()}
		}
		for range 5 {
			if _, err := oneCall(t, x, c.Embedding); err != nil {
				t.Fatalf("order %v: %v", order, err)
			}
		}
	}
	for i := range 3 {
		if x.Trust.Excluded(cr.hosts[i].ID().String()) {
			t.Fatalf("honest host %d excluded", i)
		}
	}
	// Three orders put an avx2 host first (each checked against the other
	// avx2 host), two the neon host (alone in its set: unchecked).
	if x.Checks.Load() != 15 || x.Unpaired.Load() != 10 || x.Caught.Load() != 0 || x.Undecided.Load() != 0 {
		t.Fatalf("checks %d unpaired %d caught %d undecided %d, want 15, 10, 0, 0",
			x.Checks.Load(), x.Unpaired.Load(), x.Caught.Load(), x.Undecided.Load())
	}
	if n := cr.calls[2].Load(); n != 10 {
		t.Fatalf("the neon host answered %d calls, want the 10 it came first in", n)
	}

	// The same calls without kernel sets: the neon host is outvoted.
	y := cr.experts(t)
	y.Verify = 1
	y.Hosts = func(int, int) []peer.ID { return []peer.ID{cr.hosts[2].ID(), cr.hosts[0].ID(), cr.hosts[1].ID()} }
	if _, err := oneCall(t, y, c.Embedding); err != nil {
		t.Fatal(err)
	}
	if !y.Trust.Excluded(cr.hosts[2].ID().String()) {
		t.Fatal("without kernel sets the neon host's bits went unnoticed: the test proves nothing")
	}
}

// TestNaNHostIsExcludedAtOnceAndForAWhile: a host answering a NaN is
// convicted on its first call without any spot-check, the call fails over
// to a replica, and the host is left out of replica choice until its
// exclusion ends.
func TestNaNHostIsExcludedAtOnceAndForAWhile(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	cr := newCrowd(t, m, []corruption{nanRows, nil})
	now := time.Unix(1_000_000, 0)
	var clockMu sync.Mutex
	x := cr.experts(t)
	x.Trust = trust.New(trust.Config{Exclusion: time.Minute, Now: func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }})
	x.Hosts = func(int, int) []peer.ID { return []peer.ID{cr.hosts[0].ID(), cr.hosts[1].ID()} }
	if _, err := oneCall(t, x, c.Embedding); err != nil {
		t.Fatal(err)
	}
	liar := cr.hosts[0].ID()
	if x.Caught.Load() != 1 || x.Failovers.Load() != 1 || !x.Trust.Excluded(liar.String()) {
		t.Fatalf("caught %d failovers %d excluded %v", x.Caught.Load(), x.Failovers.Load(), x.Trust.Excluded(liar.String()))
	}
	hosts := []peer.ID{liar, cr.hosts[1].ID()}
	if got := x.order(hosts); len(got) != 1 || got[0] != cr.hosts[1].ID() {
		t.Fatalf("order while excluded: %v", got)
	}
	// Its only host excluded, an expert has no host.
	x.Hosts = func(int, int) []peer.ID { return []peer.ID{liar} }
	if _, err := oneCall(t, x, c.Embedding); !errors.Is(err, ErrNoHost) {
		t.Fatalf("only the excluded host: %v, want ErrNoHost", err)
	}
	if n := cr.calls[0].Load(); n != 1 {
		t.Fatalf("the excluded host answered %d calls", n)
	}
	clockMu.Lock()
	now = now.Add(time.Minute + time.Second)
	clockMu.Unlock()
	if got := x.order(hosts); len(got) != 2 {
		t.Fatalf("order after the exclusion: %v", got)
	}
}
