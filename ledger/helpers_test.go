package ledger

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/receipt"
)

func TestMain(m *testing.M) {
	code := m.Run()
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

// audit checks the ledger against its receipts: the file's integrity,
// every receipt's signatures and columns against its bytes, and every
// aggregate against the sum over receipts; and that the counters equal the
// totals. It is what a crash must not break.
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

	type sum struct{ earned, spent, signed, unsigned int64 }
	want := map[peer.ID]*sum{}
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
		w := want[peer.ID(cp)]
		if w == nil {
			w = &sum{}
			want[peer.ID(cp)] = w
		}
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

	bs, tot, err := l.Balances()
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != len(want) {
		t.Errorf("%d counterparts, receipts name %d", len(bs), len(want))
	}
	var count int64
	for _, b := range bs {
		w := want[b.Peer]
		if w == nil || b.Earned != w.earned || b.Spent != w.spent || b.Receipts != w.signed || b.Unsigned != w.unsigned ||
			b.Balance != b.Spent-b.Earned {
			t.Errorf("aggregate of %s is %+v; its receipts sum to %+v", b.Peer.ShortString(), b, w)
		}
		count += b.Receipts + b.Unsigned
	}
	if count != int64(n) || tot.Receipts+tot.Unsigned != int64(n) {
		t.Errorf("aggregates count %d receipts (totals %d), the table holds %d", count, tot.Receipts+tot.Unsigned, n)
	}
	if c := l.Counters(); c != tot {
		t.Errorf("counters %+v, totals %+v", c, tot)
	}
}
