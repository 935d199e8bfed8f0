package ledger

import (
	"context"
	"path/filepath"
	"testing"
)

// BenchmarkAuditAppend hands b.N entries to a Writer as the request paths
// do (Audit, never waiting) and waits for them to be on disk: entries/s is
// what the chain sustains, with its checkpoints, head and fsyncs; B/entry
// is the database's size per entry.
func BenchmarkAuditAppend(b *testing.B) {
	me, other := newParty(b), newParty(b)
	l, c, _ := newChain(b, filepath.Join(b.TempDir(), File), me)
	es := entries(4096, other, newParty(b))
	w := NewAuditWriter(l, me.id, c, quiet)
	b.ResetTimer()
	for i := range b.N {
		w.Audit(es[i%len(es)])
	}
	w.Close()
	b.StopTimer()
	var stored, dropped int64
	if err := l.r.QueryRow(`SELECT count(*) FILTER (WHERE kind != 'dropped'), coalesce(sum(tokens) FILTER (WHERE kind = 'dropped'), 0)
		FROM audit`).Scan(&stored, &dropped); err != nil {
		b.Fatal(err)
	}
	if stored+dropped != int64(b.N) {
		b.Fatalf("%d stored and %d dropped of %d", stored, dropped, b.N)
	}
	b.ReportMetric(float64(stored)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(dropped), "dropped")
	b.ReportMetric(float64(fileSize(b, l))/float64(stored), "B/entry")
}

// BenchmarkAuditVerify1M verifies a chain of a million entries.
func BenchmarkAuditVerify1M(b *testing.B) {
	const n = 1_000_000
	me, other := newParty(b), newParty(b)
	l, c, _ := newChain(b, filepath.Join(b.TempDir(), File), me)
	es := entries(4096, other, newParty(b))
	for done := 0; done < n; done += len(es) {
		batch := es[:min(len(es), n-done)]
		if err := c.Append(batch...); err != nil {
			b.Fatal(err)
		}
	}
	size := fileSize(b, l)
	b.ResetTimer()
	for range b.N {
		rep, err := l.VerifyAudit(context.Background())
		if err != nil || !rep.OK() || rep.Entries != n {
			b.Fatalf("%+v %v", rep, err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/verify")
	b.ReportMetric(float64(size)/n, "B/entry")
}
