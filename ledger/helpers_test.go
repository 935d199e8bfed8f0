package ledger

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/internal/leaktest"
	"github.com/mwpeer/mwpeer/receipt"
)

// TestMain removes the benchmarks' directory, and fails the tests if any
// goroutine outlives them.
func TestMain(m *testing.M) {
	code := leaktest.Run(m)
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// party is a peer with its key.
type party struct {
	key crypto.PrivKey
	id  peer.ID
}

func newParty(t testing.TB) party {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return party{k, id}
}

var epoch = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// serve is a receipt of srv serving req, signed by srv only; change, if
// not nil, edits it before signing.
func serve(t testing.TB, srv, req party, change func(*receipt.Receipt)) *receipt.Signed {
	t.Helper()
	r := receipt.Receipt{
		ID: receipt.NewID(), Requester: req.id, Server: srv.id, Model: "llama3.2:1b", Digest: "sha256:a80c4f17acd5",
		PromptTokens: 12, CompletionTokens: 34, Start: epoch, TTFT: 1500 * time.Microsecond,
		RequestHash: receipt.Sum([]byte("request")), AnswerHash: receipt.Sum([]byte("answer")),
		Cost: receipt.Cost(12, 34, 1_200_000_000, false),
	}
	if change != nil {
		change(&r)
	}
	s, err := receipt.SignServer(r, srv.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signedBy is s countersigned by req, as a new value.
func signedBy(t testing.TB, s *receipt.Signed, req party) *receipt.Signed {
	t.Helper()
	c := *s
	if err := c.Countersign(req.key); err != nil {
		t.Fatal(err)
	}
	return &c
}

// both is a receipt of srv serving req, signed by both.
func both(t testing.TB, srv, req party, change func(*receipt.Receipt)) *receipt.Signed {
	t.Helper()
	return signedBy(t, serve(t, srv, req, change), req)
}

// propose is a tally of expert calls worker answered for payer, signed by
// payer only (disputed until countersigned); change, if not nil, edits it
// before signing, and the cost follows the rule unless change set one.
func propose(t testing.TB, payer, worker party, change func(*receipt.Tally)) *receipt.SignedTally {
	t.Helper()
	tl := receipt.Tally{
		ID: receipt.NewID(), Kind: receipt.KindExpert, Payer: payer.id, Worker: worker.id, Model: "qwen3:30b-a3b",
		Calls: 96, Rows: 384, Flops: receipt.ExpertFlops(384*2048, 768), Start: epoch, End: epoch.Add(30 * time.Second),
	}
	if change != nil {
		change(&tl)
	}
	if tl.Cost == 0 {
		tl.Cost = tl.Price()
	}
	st, err := receipt.SignPayer(tl, payer.key)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// shardTally is a change to propose: a shard tally of n bytes.
func shardTally(n uint64) func(*receipt.Tally) {
	return func(tl *receipt.Tally) {
		tl.Kind, tl.Model, tl.Calls, tl.Rows, tl.Flops, tl.Bytes = receipt.KindShard, "", 4, 0, 0, n
	}
}

// countersigned is st countersigned by worker, as a new value.
func countersigned(t testing.TB, st *receipt.SignedTally, worker party) *receipt.SignedTally {
	t.Helper()
	c := *st
	if err := c.Countersign(worker.key); err != nil {
		t.Fatal(err)
	}
	return &c
}

// agreed is a tally of worker's work for payer, signed by both.
func agreed(t testing.TB, payer, worker party, change func(*receipt.Tally)) *receipt.SignedTally {
	t.Helper()
	return countersigned(t, propose(t, payer, worker, change), worker)
}

func open(t testing.TB) *Ledger {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), File))
}

func openAt(t testing.TB, path string) *Ledger {
	t.Helper()
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// audit checks the ledger against its receipts and tallies: the file's
// integrity, every receipt's and tally's signatures and columns against its
// bytes, and every aggregate against the sum over receipts and tallies; and
// that the counters equal the totals. It is what a crash must not break.
func audit(t testing.TB, l *Ledger) {
	t.Helper()
	ctx := context.Background()
	var ok string
	if err := l.r.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check: %q %v", ok, err)
	}
	var owner []byte
	l.r.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'owner'").Scan(&owner)
	self := peer.ID(owner)

	type sum struct{ earned, spent, signed, unsigned, tallies, disputed int64 }
	want := map[peer.ID]*sum{}
	of := func(p peer.ID) *sum {
		w := want[p]
		if w == nil {
			w = &sum{}
			want[p] = w
		}
		return w
	}
	rows, err := l.r.QueryContext(ctx, `SELECT r.id, c.peer, r.served, r.signed, r.start, r.tokens, r.cost, r.raw
		FROM receipts r JOIN counterparts c ON c.id = r.peer`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var (
			id, cp, raw         []byte
			served, signed      bool
			start, tokens, cost int64
		)
		if err := rows.Scan(&id, &cp, &served, &signed, &start, &tokens, &cost, &raw); err != nil {
			t.Fatal(err)
		}
		n++
		s, err := receipt.UnmarshalSigned(raw)
		if err != nil {
			t.Fatalf("receipt %x: %v", id, err)
		}
		if signed {
			err = s.Verify()
		} else if err = s.VerifyServer(); err == nil && s.RequesterSig != nil {
			t.Errorf("receipt %x stored unsigned with a requester signature", id)
		}
		if err != nil {
			t.Errorf("receipt %x does not verify: %v", id, err)
		}
		other := s.Server
		if served {
			other = s.Requester
		}
		if string(id) != string(s.ID[:]) || peer.ID(cp) != other || (s.Server == self) != served ||
			start != s.Start.UnixMilli() || tokens != int64(s.PromptTokens)+int64(s.CompletionTokens) || cost != int64(s.Cost) {
			t.Errorf("receipt %x: columns differ from its bytes", id)
		}
		w := of(peer.ID(cp))
		switch {
		case !signed:
			w.unsigned++
		case served:
			w.signed++
			w.earned += cost
		default:
			w.signed++
			w.spent += cost
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()

	rows, err = l.r.QueryContext(ctx, `SELECT t.id, c.peer, t.worked, t.signed, t.kind, t.start, t.end, t.cost, t.raw
		FROM tallies t JOIN counterparts c ON c.id = t.peer`)
	if err != nil {
		t.Fatal(err)
	}
	nt := 0
	for rows.Next() {
		var (
			id, cp, raw            []byte
			worked, signed         bool
			kind, start, end, cost int64
		)
		if err := rows.Scan(&id, &cp, &worked, &signed, &kind, &start, &end, &cost, &raw); err != nil {
			t.Fatal(err)
		}
		nt++
		st, err := receipt.UnmarshalSignedTally(raw)
		if err != nil {
			t.Fatalf("tally %x: %v", id, err)
		}
		if signed {
			err = st.Verify()
		} else if err = st.VerifyPayer(); err == nil && st.WorkerSig != nil {
			t.Errorf("tally %x stored disputed with a worker signature", id)
		}
		if err != nil {
			t.Errorf("tally %x does not verify: %v", id, err)
		}
		other := st.Worker
		if worked {
			other = st.Payer
		}
		if string(id) != string(st.ID[:]) || peer.ID(cp) != other || (st.Worker == self) != worked || kind != int64(st.Kind) ||
			start != st.Start.UnixMilli() || end != st.End.UnixMilli() || cost != int64(st.Cost) {
			t.Errorf("tally %x: columns differ from its bytes", id)
		}
		w := of(peer.ID(cp))
		switch {
		case !signed:
			w.disputed++
		case worked:
			w.tallies++
			w.earned += cost
		default:
			w.tallies++
			w.spent += cost
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()

	bs, tot, err := l.Balances()
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != len(want) {
		t.Errorf("%d counterparts, receipts name %d", len(bs), len(want))
	}
	var count, countT int64
	for _, b := range bs {
		w := want[b.Peer]
		if w == nil || b.Earned != w.earned || b.Spent != w.spent || b.Receipts != w.signed || b.Unsigned != w.unsigned ||
			b.Tallies != w.tallies || b.Disputed != w.disputed || b.Balance != b.Spent-b.Earned {
			t.Errorf("aggregate of %s is %+v; its receipts and tallies sum to %+v", b.Peer.ShortString(), b, w)
		}
		count += b.Receipts + b.Unsigned
		countT += b.Tallies + b.Disputed
	}
	if count != int64(n) || tot.Receipts+tot.Unsigned != int64(n) {
		t.Errorf("aggregates count %d receipts (totals %d), the table holds %d", count, tot.Receipts+tot.Unsigned, n)
	}
	if countT != int64(nt) || tot.Tallies+tot.Disputed != int64(nt) {
		t.Errorf("aggregates count %d tallies (totals %d), the table holds %d", countT, tot.Tallies+tot.Disputed, nt)
	}
	if c := l.Counters(); c != tot {
		t.Errorf("counters %+v, totals %+v", c, tot)
	}
}
