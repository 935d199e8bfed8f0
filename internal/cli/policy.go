package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/consent"
	"github.com/mwpeer/mwpeer/p2p"
)

const policyUsage = `Usage:
  mwpeer policy check FILE    check a consent policy file (TOML, or YAML when it ends in .yaml or .yml)
                              and print what it allows; exit 1 naming the first error

A running peer (--policy FILE) re-reads its policy when the file changes and on SIGHUP; an invalid
file keeps the policy in force.
`

// runPolicy runs the policy subcommands.
func runPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, policyUsage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] != "check" {
		fmt.Fprintf(stderr, "mwpeer policy: unknown subcommand %q\n\n%s", args[0], policyUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("mwpeer policy check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	members := fs.Bool("members", false, "the peer checks membership certificates (--trust-issuer), for the warnings")
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return exitUsage
	}
	if len(pos) != 1 {
		fmt.Fprint(stderr, "mwpeer policy check: want exactly one FILE\n")
		return exitUsage
	}
	p, err := consent.Load(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer policy check: %v\n", err)
		return exitError
	}
	describePolicy(stdout, p)
	for _, w := range p.Warnings(*members) {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: ok\n", pos[0])
	return exitOK
}

func describePolicy(w io.Writer, p *consent.Policy) {
	or := func(list []string, def string) string {
		if len(list) == 0 {
			return def
		}
		return strings.Join(list, ", ")
	}
	limit := func(n int64, unit string) string {
		if n == 0 {
			return "no limit"
		}
		return strconv.FormatInt(n, 10) + unit
	}
	host, seed, relay := p.Offers()
	fmt.Fprintf(w, "shares:        %s", or(p.Share, "every model it serves"))
	if len(p.Local) > 0 {
		fmt.Fprintf(w, " (kept local: %s)", strings.Join(p.Local, ", "))
	}
	fmt.Fprintf(w, "\nwho:           %s; consent tokens it signed always count\n", or(p.Who, consent.Anyone))
	if len(p.Allow) > 0 || len(p.Deny) > 0 {
		fmt.Fprintf(w, "allow / deny:  %d / %d peers\n", len(p.Allow), len(p.Deny))
	}
	fmt.Fprintf(w, "per peer:      %s in flight, %s per request, %s\n", limit(int64(p.Limits.Concurrent), " requests"),
		limit(int64(p.Limits.MaxTokens), " tokens"), limit(p.Limits.TokensPerHour, " tokens an hour"))
	tz := p.Timezone
	if tz == "" {
		tz = "local time"
	}
	fmt.Fprintf(w, "hours:         %s on %s (%s)\n", or(p.Hours, "all day"), or(p.Days, "every day"), tz)
	fmt.Fprintf(w, "offers:        host experts %v, seed shards %v, relay %v\n", host, seed, relay)
}

const grantUsage = `Usage: mwpeer grant PEERID --model MODEL --tokens N --until DATE [--data-dir DIR]

Prints a consent token, signed with this peer's identity, that lets PEERID use MODEL here (a name or
a pattern such as "llama3*") for N tokens (prompt and completion) until DATE (2026-12-31,
2026-12-31T18:00:00Z, or a duration from now such as 720h or 30d). The other peer runs with
--grant TOKEN; this peer counts what it used and refuses it past N tokens or after DATE, whatever
its policy says about others.

Flags:
`

// runGrant signs a consent token with the data dir's identity.
func runGrant(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer grant", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := dataDirFlag(fs)
	model := fs.String("model", "", "model (or pattern) the token is for (required)")
	tokens := fs.Int64("tokens", 0, "tokens it allows over its life (required)")
	until := fs.String("until", "", "when it expires (required)")
	fs.Usage = func() { fmt.Fprint(fs.Output(), grantUsage); fs.PrintDefaults() }
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if len(pos) != 1 {
		fmt.Fprint(stderr, "mwpeer grant: want exactly one PEERID\n")
		return exitUsage
	}
	id, err := peer.Decode(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer grant: bad peer ID %q: %v\n", pos[0], err)
		return exitUsage
	}
	now := time.Now()
	end, err := parseWhen(*until, now)
	if *until == "" {
		err = errors.New("required")
	}
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer grant: --until: %v\n", err)
		return exitUsage
	}
	keyFile := filepath.Join(*dir, p2p.IdentityFile)
	if _, err := os.Stat(keyFile); err != nil {
		fmt.Fprintf(stderr, "mwpeer grant: no identity in %s (run the peer once, or pass --data-dir): %v\n", *dir, err)
		return exitError
	}
	key, err := p2p.LoadOrCreateIdentity(keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer grant: %v\n", err)
		return exitError
	}
	tok, err := consent.Issue(key, id, *model, *tokens, now, end)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer grant: %v\n", err)
		return exitUsage
	}
	fmt.Fprintln(stdout, tok)
	return exitOK
}
