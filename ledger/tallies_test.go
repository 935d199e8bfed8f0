package ledger

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/receipt"
)

func TestTallyIsStoredOnceByID(t *testing.T) {
	l := open(t)
	me, them := newParty(t), newParty(t)
	st := agreed(t, them, me, nil) // we worked for them

	for i, want := range []bool{true, false, false} {
		added, err := l.PutTally(me.id, st)
		if err != nil || added != want {
			t.Fatalf("put %d: added %v, %v; want %v", i, added, err, want)
		}
	}
	// The same tally with only the payer's signature is not news.
	if added, err := l.PutTally(me.id, &receipt.SignedTally{Tally: st.Tally, PayerSig: st.PayerSig}); err != nil || added {
		t.Fatalf("disputed copy of a signed tally: %v, %v", added, err)
	}
	// A stored ID with other content, validly signed, is a conflict.
	for name, change := range map[string]func(*receipt.Tally){
		"more rows":   func(tl *receipt.Tally) { tl.ID = st.ID; tl.Rows++ },
		"other model": func(tl *receipt.Tally) { tl.ID = st.ID; tl.Model = "llama3.2:1b" },
		"shard bytes": func(tl *receipt.Tally) { tl.ID = st.ID; shardTally(1 << 20)(tl) },
	} {
		c := agreed(t, them, me, change)
		if added, err := l.PutTally(me.id, c); !errors.Is(err, ErrConflict) || added {
			t.Errorf("%s under a stored ID: %v, %v; want ErrConflict", name, added, err)
		}
	}
	// Receipts and tallies have IDs of their own: a receipt with the
	// tally's ID is another record.
	r := both(t, me, them, func(r *receipt.Receipt) { r.ID = st.ID })
	if added, err := l.Put(me.id, r); err != nil || !added {
		t.Fatalf("receipt with a tally's ID: %v, %v", added, err)
	}
	c := int64(st.Cost) + int64(r.Cost)
	if b, _ := l.Balance(them.id); (b != Balance{Peer: them.id, Earned: c, Balance: -c, Receipts: 1, Tallies: 1}) {
		t.Fatalf("balance %+v", b)
	}
	audit(t, l)
}

func TestForgedTalliesAreRejected(t *testing.T) {
	me, them, mallory := newParty(t), newParty(t), newParty(t)
	alteredRows := agreed(t, them, me, nil)
	alteredRows.Rows++
	alteredCost := agreed(t, them, me, nil)
	alteredCost.Cost *= 10 // off the rule
	alteredWork := agreed(t, them, me, nil)
	alteredWork.Flops *= 10 // and the cost with it: the rule holds, the signatures do not
	alteredWork.Cost = alteredWork.Price()
	alteredBytes := agreed(t, me, them, shardTally(1<<30))
	alteredBytes.Bytes, alteredBytes.Cost = 10<<30, receipt.ShardCost(10<<30)
	wrongPayerKey := propose(t, mallory, me, nil)
	wrongPayerKey.Payer = them.id
	wrongWorkerKey := agreed(t, them, me, nil)
	wrongWorkerKey.WorkerSig = agreed(t, them, mallory, func(tl *receipt.Tally) { tl.ID = wrongWorkerKey.ID }).WorkerSig
	swapped := agreed(t, them, me, nil)
	swapped.PayerSig, swapped.WorkerSig = swapped.WorkerSig, swapped.PayerSig
	noPayerSig := agreed(t, them, me, nil)
	noPayerSig.PayerSig = nil
	receiptSigs := agreed(t, them, me, nil) // signatures from a receipt of the same peers
	rs := both(t, me, them, nil)
	receiptSigs.PayerSig, receiptSigs.WorkerSig = rs.RequesterSig, rs.ServerSig

	for _, c := range []struct {
		name string
		st   *receipt.SignedTally
		want error
	}{
		{"altered rows", alteredRows, receipt.ErrBadSignature},
		{"altered cost", alteredCost, receipt.ErrMalformed},
		{"altered flops and cost", alteredWork, receipt.ErrBadSignature},
		{"altered shard bytes and cost", alteredBytes, receipt.ErrBadSignature},
		{"payer signature by another key", wrongPayerKey, receipt.ErrBadSignature},
		{"worker signature by another key", wrongWorkerKey, receipt.ErrBadSignature},
		{"signatures swapped", swapped, receipt.ErrBadSignature},
		{"a receipt's signatures", receiptSigs, receipt.ErrBadSignature},
		{"no payer signature", noPayerSig, receipt.ErrUnsigned},
		{"between other peers", agreed(t, them, mallory, nil), ErrNotParty},
		{"cost out of range", agreed(t, them, me, shardTally(math.MaxUint64)), receipt.ErrMalformed},
		{"nil", nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := open(t)
			added, err := l.PutTally(me.id, c.st)
			if err == nil || added || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("PutTally: %v, %v; want %v", added, err, c.want)
			}
			if _, tot, _ := l.Balances(); tot != (Totals{}) {
				t.Fatalf("a rejected tally left %+v", tot)
			}
		})
	}
}

func TestDisputedTallyCountsForNothingUntilCountersigned(t *testing.T) {
	l := open(t)
	me, them := newParty(t), newParty(t)
	disputed := propose(t, me, them, nil) // they worked for us and refused our count
	if added, err := l.PutTally(me.id, disputed); err != nil || !added {
		t.Fatalf("disputed: %v, %v", added, err)
	}
	if b, _ := l.Balance(them.id); (b != Balance{Peer: them.id, Disputed: 1}) {
		t.Fatalf("a disputed tally counted: %+v", b)
	}
	if added, err := l.PutTally(me.id, disputed); err != nil || added {
		t.Fatalf("disputed again: %v, %v", added, err)
	}
	// A countersignature by someone else is no upgrade.
	forged := *disputed
	stranger := newParty(t)
	forged.WorkerSig = agreed(t, me, stranger, func(tl *receipt.Tally) { tl.ID = disputed.ID }).WorkerSig
	if _, err := l.PutTally(me.id, &forged); !errors.Is(err, receipt.ErrBadSignature) {
		t.Fatalf("forged countersignature: %v", err)
	}
	if added, err := l.PutTally(me.id, countersigned(t, disputed, them)); err != nil || !added {
		t.Fatalf("countersigned: %v, %v", added, err)
	}
	c := int64(disputed.Cost)
	if b, _ := l.Balance(them.id); (b != Balance{Peer: them.id, Spent: c, Balance: c, Tallies: 1}) {
		t.Fatalf("after countersigning: %+v", b)
	}
	if tot := l.Counters(); tot.Tallies != 1 || tot.Disputed != 0 || tot.Spent != c {
		t.Fatalf("counters after the upgrade: %+v", tot)
	}
	audit(t, l)
}

// TestTalliesCountInBalanceAndClass: work served through expert calls and
// shard seeding earns as answers do, and makes a peer that did it for us a
// contributor.
func TestTalliesCountInBalanceAndClass(t *testing.T) {
	l := open(t)
	me, host, seeder, runner := newParty(t), newParty(t), newParty(t), newParty(t)
	cost := func(c uint64) func(*receipt.Receipt) { return func(r *receipt.Receipt) { r.Cost = c } }
	expert := agreed(t, me, host, nil)                   // host answered our expert calls: spent
	shards := agreed(t, me, seeder, shardTally(3<<30))   // seeder sent us 3 GiB: spent
	served := agreed(t, runner, me, nil)                 // we answered runner's expert calls: earned
	refused := propose(t, runner, me, shardTally(1<<30)) // disputed: nothing
	answer := both(t, me, runner, cost(5000))            // we answered runner: earned
	for _, st := range []*receipt.SignedTally{expert, shards, served, refused} {
		if _, err := l.PutTally(me.id, st); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Put(me.id, answer); err != nil {
		t.Fatal(err)
	}
	ec, sc, rc := int64(expert.Cost), int64(shards.Cost), int64(served.Cost)
	if sc != 3*receipt.Micro {
		t.Fatalf("3 GiB seeded cost %d", sc)
	}
	for _, want := range []Balance{
		{Peer: host.id, Spent: ec, Balance: ec, Tallies: 1},
		{Peer: seeder.id, Spent: sc, Balance: sc, Tallies: 1},
		{Peer: runner.id, Earned: rc + 5000, Balance: -rc - 5000, Receipts: 1, Tallies: 1, Disputed: 1},
	} {
		if b, err := l.Balance(want.Peer); err != nil || b != want {
			t.Errorf("balance %+v, %v; want %+v", b, err, want)
		}
	}
	_, tot, _ := l.Balances()
	want := Totals{Earned: rc + 5000, Spent: ec + sc, Balance: ec + sc - rc - 5000, Receipts: 1, Tallies: 3, Disputed: 1, Peers: 3}
	if tot != want || l.Counters() != want {
		t.Fatalf("totals %+v, counters %+v; want %+v", tot, l.Counters(), want)
	}

	a := &Accounting{Ledger: l, Self: me.id}
	for p, class := range map[peer.ID]inference.Class{
		host.id: inference.ClassContributor, seeder.id: inference.ClassContributor, runner.id: inference.ClassOther,
	} {
		if got := a.Class(inference.WithCaller(context.Background(), p), inference.Request{}); got != class {
			t.Errorf("class of %s: %v, want %v", p.ShortString(), got, class)
		}
	}
	audit(t, l)
}

func TestLedgerOwnerRuleHoldsForTallies(t *testing.T) {
	l := open(t)
	me, them, other := newParty(t), newParty(t), newParty(t)
	if _, err := l.PutTally(me.id, agreed(t, them, me, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.PutTally(other.id, agreed(t, other, them, nil)); err == nil {
		t.Fatal("a second peer stored tallies in the ledger")
	}
	if _, err := l.PutTally("", agreed(t, them, me, nil)); err == nil {
		t.Fatal("no self")
	}
	// A tally first makes the owner, for receipts too.
	l2 := open(t)
	if _, err := l2.PutTally(me.id, agreed(t, me, them, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Put(other.id, both(t, other, them, nil)); err == nil {
		t.Fatal("a receipt of another peer in a ledger a tally claimed")
	}
}

// TestAggregatesEqualSumsOverReceiptsAndTallies stores a random mix of
// receipts and tallies (signed, unsigned or disputed, upgraded, repeated,
// conflicting) with several counterparts, one at a time and through the
// Writer in mixed batches, and checks the aggregates against the rows and
// a model.
func TestAggregatesEqualSumsOverReceiptsAndTallies(t *testing.T) {
	l := open(t)
	rng := rand.New(rand.NewPCG(3, 4))
	me := newParty(t)
	peers := make([]party, 5)
	for i := range peers {
		peers[i] = newParty(t)
	}
	parties := map[peer.ID]party{me.id: me}
	for _, p := range peers {
		parties[p.id] = p
	}
	model := map[peer.ID]*Balance{}
	account := func(other peer.ID, d Balance) {
		b := model[other]
		if b == nil {
			b = &Balance{Peer: other}
			model[other] = b
		}
		d.Balance = d.Spent - d.Earned
		b.addBalance(d)
	}
	// effect is what a new receipt or tally adds to its counterpart.
	effectR := func(s *receipt.Signed) (peer.ID, Balance) {
		other, served := s.Server, false
		if s.Server == me.id {
			other, served = s.Requester, true
		}
		switch {
		case s.RequesterSig == nil:
			return other, Balance{Unsigned: 1}
		case served:
			return other, Balance{Earned: int64(s.Cost), Receipts: 1}
		}
		return other, Balance{Spent: int64(s.Cost), Receipts: 1}
	}
	effectT := func(st *receipt.SignedTally) (peer.ID, Balance) {
		other, worked := st.Worker, false
		if st.Worker == me.id {
			other, worked = st.Payer, true
		}
		switch {
		case st.WorkerSig == nil:
			return other, Balance{Disputed: 1}
		case worked:
			return other, Balance{Earned: int64(st.Cost), Tallies: 1}
		}
		return other, Balance{Spent: int64(st.Cost), Tallies: 1}
	}
	var (
		tallies  []*receipt.SignedTally
		unsigned []*receipt.Signed
		disputed []*receipt.SignedTally
		counter  = rng.IntN
	)
	makeR := func() *receipt.Signed {
		p := peers[counter(len(peers))]
		srv, req := me, p
		if counter(2) == 0 {
			srv, req = p, me
		}
		s := serve(t, srv, req, func(r *receipt.Receipt) {
			r.Cost = uint64(counter(1_000_000))
			r.Start = epoch.Add(time.Duration(counter(1e6)) * time.Millisecond)
		})
		if counter(4) > 0 {
			return signedBy(t, s, req)
		}
		return s
	}
	makeT := func() *receipt.SignedTally {
		p := peers[counter(len(peers))]
		payer, worker := me, p
		if counter(2) == 0 {
			payer, worker = p, me
		}
		st := propose(t, payer, worker, func(tl *receipt.Tally) {
			tl.Start = epoch.Add(time.Duration(counter(1e6)) * time.Millisecond)
			tl.End = tl.Start.Add(time.Duration(counter(30_000)) * time.Millisecond)
			if counter(3) == 0 {
				shardTally(uint64(counter(1 << 32)))(tl)
			} else {
				tl.Rows = uint64(counter(10_000))
				tl.Flops = receipt.ExpertFlops(tl.Rows*2048, 768)
			}
		})
		if counter(4) > 0 {
			return countersigned(t, st, worker)
		}
		return st
	}
	newR := func(s *receipt.Signed) {
		account(effectR(s))
		if s.RequesterSig == nil {
			unsigned = append(unsigned, s)
		}
	}
	newT := func(st *receipt.SignedTally) {
		account(effectT(st))
		tallies = append(tallies, st)
		if st.WorkerSig == nil {
			disputed = append(disputed, st)
		}
	}

	w := NewWriter(l, me.id, quiet)
	for range 400 {
		switch counter(9) {
		case 0:
			s := makeR()
			if added, err := l.Put(me.id, s); err != nil || !added {
				t.Fatalf("put receipt: %v, %v", added, err)
			}
			newR(s)
		case 1, 2:
			st := makeT()
			if added, err := l.PutTally(me.id, st); err != nil || !added {
				t.Fatalf("put tally: %v, %v", added, err)
			}
			newT(st)
		case 3: // a mixed batch through the Writer
			for range 1 + counter(12) {
				if counter(2) == 0 {
					s := makeR()
					if err := w.Queue(s); err != nil {
						t.Fatal(err)
					}
					newR(s)
				} else {
					st := makeT()
					if err := w.QueueTally(st); err != nil {
						t.Fatal(err)
					}
					newT(st)
				}
			}
			w.Close()
			w = NewWriter(l, me.id, quiet)
		case 4:
			if len(tallies) == 0 {
				continue
			}
			if added, err := l.PutTally(me.id, tallies[counter(len(tallies))]); err != nil || added {
				t.Fatalf("repeated tally: %v, %v", added, err)
			}
		case 5:
			if len(disputed) == 0 {
				continue
			}
			st := disputed[0]
			disputed = disputed[1:]
			c := countersigned(t, st, parties[st.Worker])
			if added, err := l.PutTally(me.id, c); err != nil || !added {
				t.Fatalf("upgraded tally: %v, %v", added, err)
			}
			other, d := effectT(c)
			d.Disputed = -1
			account(other, d)
		case 6:
			if len(unsigned) == 0 {
				continue
			}
			s := unsigned[0]
			unsigned = unsigned[1:]
			c := signedBy(t, s, parties[s.Requester])
			if added, err := l.Put(me.id, c); err != nil || !added {
				t.Fatalf("upgraded receipt: %v, %v", added, err)
			}
			other, d := effectR(c)
			d.Unsigned = -1
			account(other, d)
		case 7:
			if len(tallies) == 0 {
				continue
			}
			old := tallies[counter(len(tallies))]
			c := agreed(t, parties[old.Payer], parties[old.Worker], func(tl *receipt.Tally) {
				*tl = old.Tally
				tl.Calls++
			})
			if _, err := l.PutTally(me.id, c); !errors.Is(err, ErrConflict) {
				t.Fatalf("conflicting tally: %v", err)
			}
		case 8: // a bad tally in a Writer batch loses only itself
			good := makeT()
			w.QueueTally(agreed(t, peers[0], peers[1], nil))
			w.QueueTally(good)
			w.Close()
			w = NewWriter(l, me.id, quiet)
			newT(good)
		}
	}
	w.Close()
	if err := w.QueueTally(makeT()); !errors.Is(err, ErrClosed) {
		t.Fatalf("queue on a closed writer: %v", err)
	}

	audit(t, l)
	bs, tot, err := l.Balances()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("totals: %+v", tot)
	for _, b := range bs {
		if m := model[b.Peer]; m == nil || *m != b {
			t.Errorf("%s: ledger %+v, model %+v", b.Peer.ShortString(), b, m)
		}
	}
	if len(bs) != len(model) {
		t.Errorf("%d counterparts, model %d", len(bs), len(model))
	}
}

// quiet is a logger for tests that provoke warnings.
var quiet = slog.New(slog.DiscardHandler)
