package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mwpeer/mwpeer"
	"github.com/mwpeer/mwpeer/ledger"
	"github.com/mwpeer/mwpeer/receipt"
)

const ledgerUsage = `Usage:
  mwpeer ledger [--data-dir DIR]         earned, spent and balance per peer, and totals, in credits
  mwpeer ledger export --from DATE --to DATE [--out FILE] [--data-dir DIR]
                                         write the JSON statement of every receipt and tally of the period
  mwpeer ledger verify FILE              check every signature and sum of a statement

DATE is 2006-01-02, a whole UTC day (--from takes its start, --to its end), or an RFC 3339 time
(--to is then exclusive). verify exits 0 when the statement checks, 1 when it does not (saying
why), 2 on bad arguments. These commands read the ledger in the data dir, whether or not the
peer runs.
`

// errNoLedger: the data dir has no ledger yet.
var errNoLedger = errors.New("no ledger")

// dataDirFlag binds --data-dir as run has it.
func dataDirFlag(fs *flag.FlagSet) *string {
	return fs.String("data-dir", env("DATA_DIR", mwpeer.DefaultConfig().DataDir), "directory of the peer's identity and state (MWPEER_DATA_DIR)")
}

// openLedger opens the ledger of a data dir. Without create, a data dir
// without one is errNoLedger: reading commands do not make files.
func openLedger(dir string, create bool) (*ledger.Ledger, error) {
	path := filepath.Join(dir, ledger.File)
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s", errNoLedger, dir)
	}
	return ledger.Open(path)
}

// runLedger runs mwpeer ledger and its subcommands.
func runLedger(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "export":
			return runLedgerExport(args[1:], stdout, stderr)
		case "verify":
			return runLedgerVerify(args[1:], stdout, stderr)
		case "help", "-h", "--help":
			fmt.Fprint(stdout, ledgerUsage)
			return exitOK
		}
	}
	fs := flag.NewFlagSet("mwpeer ledger", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := dataDirFlag(fs)
	fs.Usage = func() { fmt.Fprint(fs.Output(), ledgerUsage) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mwpeer ledger: unknown subcommand %q\n\n%s", fs.Arg(0), ledgerUsage)
		return exitUsage
	}
	l, err := openLedger(*dir, false)
	if errors.Is(err, errNoLedger) {
		fmt.Fprintf(stdout, "no ledger in %s yet: no receipts\n", *dir)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer ledger: %v\n", err)
		return exitError
	}
	defer l.Close()
	bs, t, err := l.Balances()
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer ledger: %v\n", err)
		return exitError
	}
	writeBalances(stdout, bs, t)
	return exitOK
}

// writeBalances prints balances in credits.
func writeBalances(w io.Writer, bs []ledger.Balance, t ledger.Totals) {
	if len(bs) == 0 {
		fmt.Fprintln(w, "no receipts yet")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "peer\tearned\tspent\tbalance\treceipts\tunsigned\ttallies\tdisputed\t")
	for _, b := range bs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t\n", b.Peer, credits(b.Earned), credits(b.Spent), credits(b.Balance),
			b.Receipts, b.Unsigned, b.Tallies, b.Disputed)
	}
	fmt.Fprintf(tw, "total (%d peers)\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t\n", t.Peers, credits(t.Earned), credits(t.Spent), credits(t.Balance),
		t.Receipts, t.Unsigned, t.Tallies, t.Disputed)
	tw.Flush()
	fmt.Fprintln(w, "credits; earned: for work this peer did; spent: for work done for it; balance = spent - earned, the credit a peer holds here")
	fmt.Fprintln(w, "tallies: expert calls and shard bytes settled in batches; unsigned receipts and disputed tallies count for nothing")
}

// credits writes micro-credits as credits, exactly.
func credits(micro int64) string {
	sign := ""
	u := uint64(micro)
	if micro < 0 {
		sign, u = "-", uint64(-micro)
	}
	return fmt.Sprintf("%s%d.%06d", sign, u/receipt.Micro, u%receipt.Micro)
}

// parseDate reads DATE: a day (its start, or with end its end) or an
// RFC 3339 time.
func parseDate(s string, end bool) (time.Time, error) {
	if d, err := time.Parse(time.DateOnly, s); err == nil {
		if end {
			d = d.AddDate(0, 0, 1)
		}
		return d, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a date like 2025-03-01 nor an RFC 3339 time", s)
	}
	return t, nil
}

func runLedgerExport(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer ledger export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := dataDirFlag(fs)
	fromFlag := fs.String("from", "", "start of the period: DATE")
	toFlag := fs.String("to", "", "end of the period: DATE")
	out := fs.String("out", "", "file to write the statement to; standard output when empty")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: mwpeer ledger export --from DATE --to DATE [--out FILE] [--data-dir DIR]\n\n"+
			"DATE is 2006-01-02, a whole UTC day, or an RFC 3339 time (--to exclusive).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	usage := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "mwpeer ledger export: "+format+"\n", args...)
		fs.Usage()
		return exitUsage
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q", fs.Arg(0))
	}
	if *fromFlag == "" || *toFlag == "" {
		return usage("need --from and --to")
	}
	from, err := parseDate(*fromFlag, false)
	if err != nil {
		return usage("--from: %v", err)
	}
	to, err := parseDate(*toFlag, true)
	if err != nil {
		return usage("--to: %v", err)
	}
	if !from.Before(to) {
		return usage("--to %s is not after --from %s", *toFlag, *fromFlag)
	}
	l, err := openLedger(*dir, false)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer ledger export: %v\n", err)
		return exitError
	}
	defer l.Close()
	st, err := l.Statement(from, to)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer ledger export: %v\n", err)
		return exitError
	}
	if *out == "" {
		if err := ledger.WriteStatement(stdout, st); err != nil {
			fmt.Fprintf(stderr, "mwpeer ledger export: %v\n", err)
			return exitError
		}
		return exitOK
	}
	if err := writeFileAtomic(*out, func(w io.Writer) error { return ledger.WriteStatement(w, st) }); err != nil {
		fmt.Fprintf(stderr, "mwpeer ledger export: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stderr, "statement of %d receipts and %d tallies from %s to %s written to %s\n", len(st.Receipts), len(st.Tallies),
		st.From.Format(time.RFC3339), st.To.Format(time.RFC3339), *out)
	return exitOK
}

// writeFileAtomic writes path (mode 0600) through a temporary file in the
// same directory, so that it is whole or absent.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func runLedgerVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer ledger verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: mwpeer ledger verify FILE\n\n"+
			"Checks every receipt's and tally's signatures and every sum of a statement from mwpeer ledger export.\n"+
			"Exit 0: it checks; 1: it does not (the reason is printed); 2: bad arguments.\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "mwpeer ledger verify: need one statement FILE")
		fs.Usage()
		return exitUsage
	}
	name := fs.Arg(0)
	f, err := os.Open(name)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer ledger verify: %v\n", err)
		return exitError
	}
	defer f.Close()
	st, err := ledger.VerifyStatement(f)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer ledger verify: %s: %s\n", name, clean(err.Error()))
		fmt.Fprintf(stdout, "%s: FAILED\n", name)
		return exitError
	}
	t := st.Totals
	fmt.Fprintf(stdout, "%s: ok: %d receipts (%d signed, %d unsigned), %d tallies (%d signed, %d disputed) with %d peers from %s to %s\n",
		name, len(st.Receipts), t.Receipts, t.Unsigned, len(st.Tallies), t.Tallies, t.Disputed, t.Peers,
		st.From.Format(time.RFC3339), st.To.Format(time.RFC3339))
	if st.Peer != "" {
		fmt.Fprintf(stdout, "ledger of %s: earned %s, spent %s, balance %s credits\n", st.Peer, credits(t.Earned), credits(t.Spent), credits(t.Balance))
	}
	return exitOK
}

// shortDuration writes d without trailing zero units: 720h, 1h30m, 90s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
