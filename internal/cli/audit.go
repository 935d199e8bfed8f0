package cli

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mwpeer/mwpeer/ledger"
)

const auditUsage = `Usage:
  mwpeer audit verify [--data-dir DIR]   check the audit chain; exit 0 when intact, 1 naming each problem
  mwpeer audit tail [-n N] [--follow] [--data-dir DIR]
                                         the last N entries (default 20); --follow prints new ones as they come
  mwpeer audit export [--format jsonl] [--out FILE] [--data-dir DIR]
                                         every entry, checkpoint and the head as JSON lines

The audit chain records every prompt this peer served or refused by policy, every prompt it
asked of others and every tally it settled, hash-chained, with checkpoints signed by the
peer's key. Prompts and answers are kept only as hashes unless the peer runs with
--audit-prompts. These commands read the ledger in the data dir, whether or not the peer runs.
`

// runAudit runs mwpeer audit and its subcommands.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return exitUsage
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(ctx, args[1:], stdout, stderr)
	case "tail":
		return runAuditTail(ctx, args[1:], stdout, stderr)
	case "export":
		return runAuditExport(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, auditUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "mwpeer audit: unknown subcommand %q\n\n%s", args[0], auditUsage)
	return exitUsage
}

// auditFlags parses the flags of mwpeer audit NAME, with --data-dir and
// what bind adds; ok false means return code.
func auditFlags(name string, args []string, stderr io.Writer, bind func(fs *flag.FlagSet)) (dir string, code int, ok bool) {
	fs := flag.NewFlagSet("mwpeer audit "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	d := dataDirFlag(fs)
	if bind != nil {
		bind(fs)
	}
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), auditUsage+"\nFlags of "+name+":\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", exitOK, false
		}
		return "", exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mwpeer audit %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", exitUsage, false
	}
	return *d, 0, true
}

func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	dir, code, ok := auditFlags("verify", args, stderr, nil)
	if !ok {
		return code
	}
	l, err := openLedger(dir, false)
	if errors.Is(err, errNoLedger) {
		fmt.Fprintf(stdout, "no ledger in %s yet: no audit entries\n", dir)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer audit verify: %v\n", err)
		return exitError
	}
	defer l.Close()
	start := time.Now()
	rep, err := l.VerifyAudit(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer audit verify: %v\n", err)
		return exitError
	}
	took := time.Since(start).Round(time.Millisecond)
	if rep.OK() {
		if rep.Entries == 0 {
			fmt.Fprintf(stdout, "ok: the audit chain is empty (%s)\n", took)
			return exitOK
		}
		fmt.Fprintf(stdout, "ok: %d entries (%d-%d), signed checkpoints: %d, head at %d, signed by %s (%s)\n",
			rep.Entries, rep.First, rep.Last, rep.Checkpoints, rep.HeadSeq, rep.Signer, took)
		return exitOK
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(stdout, "%s\n", printable(p.Detail))
	}
	if rep.More > 0 {
		fmt.Fprintf(stdout, "... and %d more problems\n", rep.More)
	}
	fmt.Fprintf(stdout, "FAILED: %d problems in %d entries (%d-%d), %d checkpoints\n",
		len(rep.Problems)+rep.More, rep.Entries, rep.First, rep.Last, rep.Checkpoints)
	return exitError
}

func runAuditTail(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var n int
	var follow bool
	dir, code, ok := auditFlags("tail", args, stderr, func(fs *flag.FlagSet) {
		fs.IntVar(&n, "n", 20, "entries to show")
		fs.BoolVar(&follow, "follow", false, "go on printing entries as they are appended, until interrupted")
	})
	if !ok {
		return code
	}
	if n < 0 {
		fmt.Fprintln(stderr, "mwpeer audit tail: -n must not be negative")
		return exitUsage
	}
	l, err := openLedger(dir, false)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer audit tail: %v\n", err)
		return exitError
	}
	defer l.Close()
	es, err := l.AuditTail(ctx, n)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer audit tail: %v\n", err)
		return exitError
	}
	w := bufio.NewWriter(stdout)
	var last int64
	for _, e := range es {
		writeEntry(w, e)
		last = e.Seq
	}
	w.Flush()
	if !follow {
		return exitOK
	}
	if len(es) == 0 {
		if t, err := l.AuditTail(ctx, 1); err == nil && len(t) == 1 {
			last = t[0].Seq
		}
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return exitOK
		case <-tick.C:
		}
		err := l.AuditEntries(ctx, last, func(e ledger.AuditEntry) error {
			writeEntry(w, e)
			last = e.Seq
			return nil
		})
		w.Flush()
		if err != nil && ctx.Err() == nil {
			fmt.Fprintf(stderr, "mwpeer audit tail: %v\n", err)
			return exitError
		}
	}
}

// writeEntry prints an entry on one line; what a peer supplied (the model
// name, the outcome) is stripped of terminal control characters.
func writeEntry(w io.Writer, e ledger.AuditEntry) {
	p := "-"
	if e.Peer != "" {
		p = e.Peer.String()
	}
	model := printable(e.Model)
	if model == "" {
		model = "-"
	}
	fmt.Fprintf(w, "%d  %s  %-9s  %s  %s  tokens %d  %s  req %s  ans %s  hash %s\n", e.Seq, e.Time.UTC().Format(time.RFC3339Nano),
		printable(e.Kind), p, model, e.Tokens, printable(e.Outcome), shortHash(e.RequestHash), shortHash(e.AnswerHash), shortHash(e.Hash))
}

func shortHash(h [32]byte) string {
	if h == ([32]byte{}) {
		return "-"
	}
	return hex.EncodeToString(h[:6])
}

// printable strips terminal control characters (C0, DEL, C1, and the
// Unicode line separators and bidirectional overrides) from a string a peer
// supplied, so printing it cannot move the cursor, recolour or reorder the
// terminal's text.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0, r == '\u2028', r == '\u2029',
			r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
			return -1
		}
		return r
	}, s)
}

func runAuditExport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var format, out string
	dir, code, ok := auditFlags("export", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&format, "format", "jsonl", "output format: jsonl (one JSON object a line)")
		fs.StringVar(&out, "out", "", "file to write to; standard output when empty")
	})
	if !ok {
		return code
	}
	if format != "jsonl" {
		fmt.Fprintf(stderr, "mwpeer audit export: --format %q: only jsonl\n", format)
		return exitUsage
	}
	l, err := openLedger(dir, false)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer audit export: %v\n", err)
		return exitError
	}
	defer l.Close()
	write := func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 64<<10)
		if err := l.WriteAudit(ctx, bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	if out == "" {
		err = write(stdout)
	} else {
		err = writeFileAtomic(out, write)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer audit export: %v\n", err)
		return exitError
	}
	return exitOK
}
