package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
)

// FuzzVerifyStatement checks statements as `mwpeer ledger verify` does with
// a file someone handed over: one is ErrBadStatement, or it is exactly its
// canonical form. With reseal set, the input is first decoded, given its
// true checksum and written canonically, so that the fuzzer also reaches the
// checks behind the checksum: signatures, order, periods and sums.
func FuzzVerifyStatement(f *testing.F) {
	l, _ := statementLedger(f)
	for _, period := range [][2]time.Time{{epoch, epoch.Add(24 * time.Hour)}, {epoch.Add(-48 * time.Hour), epoch.Add(-24 * time.Hour)}} {
		st, err := l.Statement(period[0], period[1])
		if err != nil {
			f.Fatal(err)
		}
		var buf bytes.Buffer
		if err := WriteStatement(&buf, st); err != nil {
			f.Fatal(err)
		}
		fuzzcorpus.Add(f, buf.Bytes(), false)
		fuzzcorpus.Add(f, buf.Bytes(), true)
	}
	fuzzcorpus.Add(f, []byte(`{"version":1,"receipts":[],"peers":[],"totals":{},"checksum":""}`), true)
	fuzzcorpus.Add(f, []byte(`{"version":3}`), false)
	f.Fuzz(func(t *testing.T, data []byte, reseal bool) {
		if reseal {
			var st Statement
			if json.Unmarshal(data, &st) != nil || st.Version != StatementVersion {
				return
			}
			sum, err := checksum(&st)
			if err != nil {
				return
			}
			st.Checksum = sum
			if data, err = encode(&st); err != nil {
				return
			}
		}
		st, err := VerifyStatement(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrBadStatement) {
				t.Fatalf("refused with %v, want ErrBadStatement", err)
			}
			return
		}
		var buf bytes.Buffer
		if err := WriteStatement(&buf, st); err != nil || !bytes.Equal(buf.Bytes(), data) {
			t.Fatalf("a statement that verifies is not as written: %v", err)
		}
		if !st.From.Before(st.To) || st.Totals.Receipts < 0 {
			t.Fatalf("verified %+v", st.Totals)
		}
	})
}
