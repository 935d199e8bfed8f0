package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/mwpeer/mwpeer/ledger"
)

const keysUsage = `Usage:
  mwpeer keys add NAME --budget TOKENS [--period 720h] [--data-dir DIR]
                              make an API key for the local HTTP API and print it, this once
  mwpeer keys list [--data-dir DIR]
                              the keys with their budget, use this period and renewal
  mwpeer keys rm NAME [--data-dir DIR]
                              delete a key

A key's budget is tokens (prompt and completion) per period; the period starts when the key is
made. Unused budget carries into the next period only. Keys are stored hashed in the data dir's
ledger; only this command, on this machine, makes them.
`

// runKeys runs the keys subcommands, which work on the data dir's ledger
// whether or not the peer runs.
func runKeys(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "mwpeer keys: no subcommand\n\n"+keysUsage)
		return exitUsage
	}
	switch args[0] {
	case "add":
		return runKeysAdd(args[1:], stdout, stderr)
	case "list", "ls":
		return runKeysList(args[1:], stdout, stderr)
	case "rm", "remove":
		return runKeysRemove(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, keysUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "mwpeer keys: unknown subcommand %q\n\n%s", args[0], keysUsage)
		return exitUsage
	}
}

func runKeysAdd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer keys add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := dataDirFlag(fs)
	budget := fs.Int64("budget", 0, "tokens the key may use per period (required)")
	period := fs.Duration("period", ledger.DefaultKeyPeriod, "length of a budget period")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: mwpeer keys add NAME --budget TOKENS [--period 720h] [--data-dir DIR]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	switch {
	case len(pos) != 1:
		fmt.Fprintln(stderr, "mwpeer keys add: need one NAME")
	case *budget <= 0:
		fmt.Fprintln(stderr, "mwpeer keys add: --budget must be a positive number of tokens")
	case *period < time.Second:
		fmt.Fprintln(stderr, "mwpeer keys add: --period must be at least 1s")
	default:
		l, err := openLedger(*dir, true)
		if err != nil {
			fmt.Fprintf(stderr, "mwpeer keys add: %v\n", err)
			return exitError
		}
		defer l.Close()
		secret, err := l.AddKey(pos[0], *budget, *period)
		if err != nil {
			fmt.Fprintf(stderr, "mwpeer keys add: %v\n", err)
			return exitError
		}
		fmt.Fprintln(stdout, secret)
		fmt.Fprintf(stderr, "API key %s: %d tokens per %s. It is shown this once; send it as \"Authorization: Bearer KEY\".\n",
			pos[0], *budget, shortDuration(*period))
		return exitOK
	}
	fs.Usage()
	return exitUsage
}

func runKeysList(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer keys list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := dataDirFlag(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: mwpeer keys list [--data-dir DIR]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mwpeer keys list: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	l, err := openLedger(*dir, false)
	if errors.Is(err, errNoLedger) {
		fmt.Fprintln(stdout, "no API keys")
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer keys list: %v\n", err)
		return exitError
	}
	defer l.Close()
	ks, err := l.Keys()
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer keys list: %v\n", err)
		return exitError
	}
	if len(ks) == 0 {
		fmt.Fprintln(stdout, "no API keys")
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBUDGET\tPERIOD\tCARRIED\tUSED\tREMAINING\tRENEWS\tCREATED")
	for _, k := range ks {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%s\t%s\n", k.Name, k.Budget, shortDuration(k.Period), k.Carried, k.Used, k.Remaining,
			k.Renews.UTC().Format(time.RFC3339), k.Created.UTC().Format(time.RFC3339))
	}
	tw.Flush()
	return exitOK
}

func runKeysRemove(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer keys rm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := dataDirFlag(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: mwpeer keys rm NAME [--data-dir DIR]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "mwpeer keys rm: need one NAME")
		fs.Usage()
		return exitUsage
	}
	l, err := openLedger(*dir, false)
	if errors.Is(err, errNoLedger) {
		err = fmt.Errorf("%w: %s", ledger.ErrUnknownKey, pos[0])
	}
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer keys rm: %v\n", err)
		return exitError
	}
	defer l.Close()
	if err := l.RemoveKey(pos[0]); err != nil {
		fmt.Fprintf(stderr, "mwpeer keys rm: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "removed API key %s\n", pos[0])
	return exitOK
}
