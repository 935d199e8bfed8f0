package ledger

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/receipt"
)

func TestReceiptIsStoredOnceByID(t *testing.T) {
	l := open(t)
	me, them := newParty(t), newParty(t)
	s := both(t, me, them, nil)

	for i, want := range []bool{true, false, false} {
		added, err := l.Put(me.id, s)
		if err != nil || added != want {
			t.Fatalf("put %d: added %v, %v; want %v", i, added, err, want)
		}
	}
	// The same receipt with only the server's signature is not news.
	if added, err := l.Put(me.id, &receipt.Signed{Receipt: s.Receipt, ServerSig: s.ServerSig}); err != nil || added {
		t.Fatalf("unsigned copy of a signed receipt: %v, %v", added, err)
	}
	// A replayed ID with other content, validly signed, is a conflict.
	replay := both(t, me, them, func(r *receipt.Receipt) { r.ID = s.ID; r.CompletionTokens = 3400 })
	if added, err := l.Put(me.id, replay); !errors.Is(err, ErrConflict) || added {
		t.Fatalf("replayed ID: %v, %v; want ErrConflict", added, err)
	}
	if n, err := l.PutBatch(me.id, []*receipt.Signed{both(t, me, them, nil), replay}); !errors.Is(err, ErrConflict) || n != 0 {
		t.Fatalf("batch with a replayed ID: %d, %v; want nothing stored and ErrConflict", n, err)
	}
	b, _ := l.Balance(them.id)
	if b.Receipts != 1 || b.Earned != int64(s.Cost) {
		t.Fatalf("balance after replays: %+v", b)
	}
	audit(t, l)
}

func TestForgedReceiptsAreRejected(t *testing.T) {
	me, them, mallory := newParty(t), newParty(t), newParty(t)
	altered := both(t, them, me, nil)
	altered.CompletionTokens++
	alteredCost := both(t, them, me, nil)
	alteredCost.Cost *= 10
	wrongServerKey := serve(t, mallory, me, nil)
	wrongServerKey.Server = them.id
	wrongRequesterKey := serve(t, me, them, nil)
	wrongRequesterKey = signedBy(t, wrongRequesterKey, them)
	wrongRequesterKey.RequesterSig = signedBy(t, serve(t, me, mallory, func(r *receipt.Receipt) { r.ID = wrongRequesterKey.ID }), mallory).RequesterSig
	swapped := both(t, them, me, nil)
	swapped.ServerSig, swapped.RequesterSig = swapped.RequesterSig, swapped.ServerSig
	noServerSig := both(t, them, me, nil)
	noServerSig.ServerSig = nil

	for _, c := range []struct {
		name string
		s    *receipt.Signed
		want error
	}{
		{"altered token count", altered, receipt.ErrBadSignature},
		{"altered cost", alteredCost, receipt.ErrBadSignature},
		{"server signature by another key", wrongServerKey, receipt.ErrBadSignature},
		{"requester signature by another key", wrongRequesterKey, receipt.ErrBadSignature},
		{"signatures swapped", swapped, receipt.ErrBadSignature},
		{"no server signature", noServerSig, receipt.ErrUnsigned},
		{"between other peers", both(t, them, mallory, nil), ErrNotParty},
		{"a peer serving itself", both(t, me, me, nil), ErrNotParty},
		{"cost out of range", both(t, them, me, func(r *receipt.Receipt) { r.Cost = MaxCost + 1 }), receipt.ErrMalformed},
		{"nil", nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := open(t)
			added, err := l.Put(me.id, c.s)
			if err == nil || added || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("Put: %v, %v; want %v", added, err, c.want)
			}
			if n, err := l.PutBatch(me.id, []*receipt.Signed{both(t, them, me, nil), c.s}); err == nil || n != 0 {
				t.Fatalf("PutBatch: %d, %v; want an error and nothing stored", n, err)
			}
			if _, tot, _ := l.Balances(); tot != (Totals{}) {
				t.Fatalf("a rejected receipt left %+v", tot)
			}
		})
	}
}

func TestUnsignedCountsForNothingUntilCountersigned(t *testing.T) {
	l := open(t)
	me, them := newParty(t), newParty(t)
	unsigned := serve(t, me, them, nil)
	if added, err := l.Put(me.id, unsigned); err != nil || !added {
		t.Fatalf("unsigned: %v, %v", added, err)
	}
	b, _ := l.Balance(them.id)
	if (b != Balance{Peer: them.id, Unsigned: 1}) {
		t.Fatalf("an unsigned receipt counted: %+v", b)
	}
	if added, err := l.Put(me.id, unsigned); err != nil || added {
		t.Fatalf("unsigned again: %v, %v", added, err)
	}
	// A countersignature by someone else is no upgrade.
	forged := *unsigned
	stranger := newParty(t)
	forged.RequesterSig = signedBy(t, serve(t, me, stranger, nil), stranger).RequesterSig
	if _, err := l.Put(me.id, &forged); !errors.Is(err, receipt.ErrBadSignature) {
		t.Fatalf("forged countersignature: %v", err)
	}
	if added, err := l.Put(me.id, signedBy(t, unsigned, them)); err != nil || !added {
		t.Fatalf("countersigned: %v, %v", added, err)
	}
	c := int64(unsigned.Cost)
	b, _ = l.Balance(them.id)
	if (b != Balance{Peer: them.id, Earned: c, Balance: -c, Receipts: 1}) {
		t.Fatalf("after countersigning: %+v", b)
	}
	audit(t, l)
}

func TestBalanceIsSpentMinusEarned(t *testing.T) {
	l := open(t)
	me, them := newParty(t), newParty(t)
	cost := func(c uint64) func(*receipt.Receipt) { return func(r *receipt.Receipt) { r.Cost = c } }
	for _, s := range []*receipt.Signed{
		both(t, me, them, cost(300)),  // we served them: earned
		both(t, them, me, cost(1000)), // they served us: spent
		both(t, them, me, cost(50)),
		serve(t, them, me, cost(9999)), // unsigned: nothing
	} {
		if _, err := l.Put(me.id, s); err != nil {
			t.Fatal(err)
		}
	}
	want := Balance{Peer: them.id, Earned: 300, Spent: 1050, Balance: 750, Receipts: 3, Unsigned: 1}
	if b, err := l.Balance(them.id); err != nil || b != want {
		t.Fatalf("balance %+v, %v; want %+v", b, err, want)
	}
	if b, err := l.Balance(newParty(t).id); err != nil || b.Receipts != 0 || b.Balance != 0 {
		t.Fatalf("stranger's balance %+v, %v", b, err)
	}
	_, tot, _ := l.Balances()
	if (tot != Totals{Earned: 300, Spent: 1050, Balance: 750, Receipts: 3, Unsigned: 1, Peers: 1}) {
		t.Fatalf("totals %+v", tot)
	}
}

func TestLedgerBelongsToOnePeer(t *testing.T) {
	l := open(t)
	me, them, other := newParty(t), newParty(t), newParty(t)
	if _, err := l.Put(me.id, both(t, me, them, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Put(other.id, both(t, other, them, nil)); err == nil {
		t.Fatal("a second peer stored receipts in the ledger")
	}
	if _, err := l.Put("", both(t, me, them, nil)); err == nil {
		t.Fatal("no self")
	}
}

// TestAggregatesEqualSumsAfterRandomInserts stores a random mix of signed,
// unsigned, upgraded, repeated and conflicting receipts with several
// counterparts, one at a time, in batches and from several goroutines at
// once, and checks the aggregates against the receipts and a model.
func TestAggregatesEqualSumsAfterRandomInserts(t *testing.T) {
	l := open(t)
	rng := rand.New(rand.NewPCG(1, 2))
	me := newParty(t)
	peers := make([]party, 6)
	for i := range peers {
		peers[i] = newParty(t)
	}
	parties := map[peer.ID]party{me.id: me}
	for _, p := range peers {
		parties[p.id] = p
	}
	counterpart := func(s *receipt.Signed) peer.ID {
		if s.Server == me.id {
			return s.Requester
		}
		return s.Server
	}
	model := map[peer.ID]*Balance{}
	account := func(s *receipt.Signed) {
		other := counterpart(s)
		b := model[other]
		if b == nil {
			b = &Balance{Peer: other}
			model[other] = b
		}
		switch {
		case s.RequesterSig == nil:
			b.Unsigned++
		case s.Server == me.id:
			b.Receipts++
			b.Earned += int64(s.Cost)
		default:
			b.Receipts++
			b.Spent += int64(s.Cost)
		}
		b.Balance = b.Spent - b.Earned
	}
	var stored []*receipt.Signed
	var pending []*receipt.Signed // unsigned, waiting for a countersignature
	var batch []*receipt.Signed
	make1 := func() *receipt.Signed {
		p := peers[rng.IntN(len(peers))]
		srv, req := me, p
		if rng.IntN(2) == 0 {
			srv, req = p, me
		}
		s := serve(t, srv, req, func(r *receipt.Receipt) {
			r.Cost = uint64(rng.IntN(1_000_000))
			r.PromptTokens, r.CompletionTokens = uint32(rng.IntN(4000)), uint32(rng.IntN(4000))
			r.Start = epoch.Add(time.Duration(rng.IntN(1e6)) * time.Millisecond)
		})
		if rng.IntN(4) > 0 {
			s = signedBy(t, s, req)
		} else {
			pending = append(pending, s)
		}
		return s
	}
	for range 300 {
		switch rng.IntN(6) {
		case 0, 1:
			s := make1()
			if added, err := l.Put(me.id, s); err != nil || !added {
				t.Fatalf("put: %v, %v", added, err)
			}
			account(s)
			stored = append(stored, s)
		case 2:
			s := make1()
			batch = append(batch, s)
			if len(batch) == 8 {
				if n, err := l.PutBatch(me.id, batch); err != nil || n != len(batch) {
					t.Fatalf("batch: %d, %v", n, err)
				}
				for _, s := range batch {
					account(s)
				}
				stored = append(stored, batch...)
				batch = nil
			}
		case 3:
			if len(stored) == 0 {
				continue
			}
			s := stored[rng.IntN(len(stored))]
			if added, err := l.Put(me.id, s); err != nil || added {
				t.Fatalf("repeat: %v, %v", added, err)
			}
		case 4:
			if len(pending) == 0 || !slices.Contains(stored, pending[0]) {
				continue
			}
			s := pending[0]
			pending = pending[1:]
			c := signedBy(t, s, parties[s.Requester])
			if added, err := l.Put(me.id, c); err != nil || !added {
				t.Fatalf("upgrade: %v, %v", added, err)
			}
			model[counterpart(s)].Unsigned--
			account(c)
		case 5:
			if len(stored) == 0 {
				continue
			}
			old := stored[rng.IntN(len(stored))]
			c := both(t, parties[old.Server], parties[old.Requester], func(r *receipt.Receipt) { r.ID = old.ID; r.Cost = old.Cost + 1 })
			if _, err := l.Put(me.id, c); !errors.Is(err, ErrConflict) {
				t.Fatalf("conflict: %v", err)
			}
		}
	}
	// And concurrently: writers and readers at once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	for g := range 4 {
		var mine []*receipt.Signed
		for range 10 {
			mine = append(mine, make1())
		}
		wg.Go(func() {
			for _, s := range mine {
				if _, err := l.Put(me.id, s); err != nil {
					t.Error(err)
				}
				if _, err := l.Balance(peers[g].id); err != nil {
					t.Error(err)
				}
				mu.Lock()
				account(s)
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	audit(t, l)
	bs, _, err := l.Balances()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if m := model[b.Peer]; m == nil || *m != b {
			t.Errorf("%s: ledger %+v, model %+v", b.Peer.ShortString(), b, m)
		}
	}
	if len(bs) != len(model) {
		t.Errorf("%d counterparts, model %d", len(bs), len(model))
	}
}

func TestServedTokensCountsWhatWeServedSince(t *testing.T) {
	l := open(t)
	me, them, other := newParty(t), newParty(t), newParty(t)
	at := func(d time.Duration, p, c uint32) func(*receipt.Receipt) {
		return func(r *receipt.Receipt) { r.Start, r.PromptTokens, r.CompletionTokens = epoch.Add(d), p, c }
	}
	for _, s := range []*receipt.Signed{
		both(t, me, them, at(-time.Hour, 1000, 1000)),       // before
		both(t, me, them, at(0, 10, 20)),                    // at since: counts
		serve(t, me, them, at(time.Minute, 100, 200)),       // unsigned: counts
		both(t, them, me, at(time.Minute, 5000, 5000)),      // they served us
		both(t, me, other, at(time.Minute, 7000, 7000)),     // someone else
		both(t, me, them, at(time.Hour, 1, 2)),              // later: counts
		both(t, me, them, at(time.Millisecond/2, 0, 40000)), // rounded to the millisecond: counts
	} {
		if _, err := l.Put(me.id, s); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := l.ServedTokens(them.id, epoch); err != nil || n != 30+300+3+40000 {
		t.Fatalf("served tokens %d, %v; want %d", n, err, 30+300+3+40000)
	}
	if n, err := l.ServedTokens(newParty(t).id, epoch); err != nil || n != 0 {
		t.Fatalf("stranger: %d, %v", n, err)
	}
}
