package ledger

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/receipt"
)

// receipts makes n receipts signed by both parties, alternating who served.
func receipts(b *testing.B, me party, others []party, n int) []*receipt.Signed {
	out := make([]*receipt.Signed, n)
	for i := range out {
		p := others[i%len(others)]
		srv, req := me, p
		if i%2 == 1 {
			srv, req = p, me
		}
		out[i] = both(b, srv, req, func(r *receipt.Receipt) { r.Start = epoch.Add(time.Duration(i) * time.Second) })
	}
	return out
}

func parties(b *testing.B, n int) []party {
	out := make([]party, n)
	for i := range out {
		out[i] = newParty(b)
	}
	return out
}

// reportRate reports receipts stored per second of wall time and the CPU
// time each took, which other load on the machine does not inflate.
func reportRate(b *testing.B, cpu time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "receipts/s")
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/receipt")
	}
}

func fileSize(b *testing.B, l *Ledger) int64 {
	// Checkpoint the WAL into the database file, then measure the file.
	if _, err := l.w.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		b.Fatal(err)
	}
	st, err := os.Stat(l.path)
	if err != nil {
		b.Fatal(err)
	}
	return st.Size()
}

// BenchmarkPut stores one receipt per transaction (one fsync each), as a
// peer does at the end of every answer.
func BenchmarkPut(b *testing.B) {
	me, others := newParty(b), parties(b, 50)
	rs := receipts(b, me, others, b.N)
	l := open(b)
	b.ResetTimer()
	cpu := cpuTime()
	for i := range b.N {
		if _, err := l.Put(me.id, rs[i]); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, cpuTime()-cpu)
}

// BenchmarkPutBatch stores receipts 1,000 to a transaction, signatures
// checked in parallel, and reports the file's size per receipt.
func BenchmarkPutBatch(b *testing.B) {
	const batch = 1000
	me, others := newParty(b), parties(b, 50)
	rs := receipts(b, me, others, b.N)
	l := open(b)
	b.ResetTimer()
	cpu := cpuTime()
	for i := 0; i < b.N; i += batch {
		if _, err := l.PutBatch(me.id, rs[i:min(i+batch, b.N)]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b, cpuTime()-cpu)
	if b.N >= 10000 {
		b.ReportMetric(float64(fileSize(b, l))/float64(b.N), "disk-B/receipt")
	}
}

// The 1,000,000-receipt ledger, built once per test binary run.
var (
	benchOnce sync.Once
	benchDir  string
	bench     *Ledger
	benchMe   peer.ID
	benchPeer []peer.ID
	benchErr  error
)

const (
	benchReceipts = 1_000_000
	benchPeers    = 1000
	benchSpan     = 100 * 24 * time.Hour // receipts spread over 100 days
)

// bigLedger builds a ledger of 1,000,000 receipts quickly: receipts of
// real size and shape, signed once as a template and varied in ID, peer
// and start, stored through the ledger's own insert path in transactions
// of 20,000 without checking signatures (they would not verify; the
// benchmarks that use it read balances and statements only).
func bigLedger(b *testing.B) *Ledger {
	benchOnce.Do(func() {
		benchDir, benchErr = os.MkdirTemp("", "mwpeer-ledger-bench")
		if benchErr != nil {
			return
		}
		me := newParty(b)
		benchMe = me.id
		for range benchPeers {
			benchPeer = append(benchPeer, newParty(b).id)
		}
		if bench, benchErr = Open(filepath.Join(benchDir, File)); benchErr != nil {
			return
		}
		start := time.Now()
		tmpl := both(b, me, newParty(b), nil)
		step := benchSpan / benchReceipts
		for i := 0; i < benchReceipts && benchErr == nil; i += 20000 {
			entries := make([]*entry, 0, 20000)
			for j := i; j < i+20000; j++ {
				s := *tmpl
				binary.BigEndian.PutUint64(s.ID[8:], uint64(j))
				s.Start = epoch.Add(time.Duration(j) * step).Truncate(time.Millisecond)
				e := &entry{id: s.ID, other: benchPeer[j%benchPeers], served: j%2 == 0, signed: j%10 != 0,
					start: s.Start.UnixMilli(), tokens: 46, cost: int64(s.Cost)}
				if e.served {
					s.Requester = e.other
				} else {
					s.Server, s.Requester = e.other, me.id
				}
				if !e.signed {
					s.RequesterSig = nil
				}
				e.content, e.raw = s.Receipt.Marshal(), s.Marshal()
				entries = append(entries, e)
			}
			_, benchErr = bench.store(me.id, len(entries), func(i int) (*entry, error) { return entries[i], nil })
		}
		if benchErr == nil {
			size := fileSize(b, bench)
			fmt.Fprintf(os.Stderr, "ledger of %d receipts built in %s: %d bytes, %.0f bytes/receipt\n",
				benchReceipts, time.Since(start).Round(time.Second), size, float64(size)/benchReceipts)
		}
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return bench
}

// BenchmarkBalance reads one counterpart's balance in a ledger of
// 1,000,000 receipts.
func BenchmarkBalance(b *testing.B) {
	l := bigLedger(b)
	b.ResetTimer()
	for i := range b.N {
		bal, err := l.Balance(benchPeer[i%benchPeers])
		if err != nil || bal.Receipts+bal.Unsigned != benchReceipts/benchPeers {
			b.Fatalf("%+v %v", bal, err)
		}
	}
}

// BenchmarkBalances lists all 1,000 counterparts of the 1,000,000-receipt
// ledger, with totals.
func BenchmarkBalances(b *testing.B) {
	l := bigLedger(b)
	b.ResetTimer()
	for range b.N {
		bs, _, err := l.Balances()
		if err != nil || len(bs) != benchPeers {
			b.Fatal(len(bs), err)
		}
	}
}

// BenchmarkServedTokensDay sums the tokens served to one peer over the
// last day of the 1,000,000-receipt ledger (about 10 receipts of its 1,000).
func BenchmarkServedTokensDay(b *testing.B) {
	l := bigLedger(b)
	since := epoch.Add(benchSpan - 24*time.Hour)
	b.ResetTimer()
	for i := range b.N {
		if _, err := l.ServedTokens(benchPeer[i%benchPeers], since); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStatementDay builds and writes the statement of one day (10,000
// receipts) of the 1,000,000-receipt ledger.
func BenchmarkStatementDay(b *testing.B) {
	l := bigLedger(b)
	from := epoch.Add(50 * 24 * time.Hour)
	var buf bytes.Buffer
	b.ResetTimer()
	for range b.N {
		st, err := l.Statement(from, from.Add(24*time.Hour))
		if err != nil || len(st.Receipts) != benchReceipts/100 {
			b.Fatal(err)
		}
		buf.Reset()
		if err := WriteStatement(&buf, st); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "statement-B")
}
