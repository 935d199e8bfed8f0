package cli

import (
	"crypto/ed25519"
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

	"github.com/mwpeer/mwpeer"
	"github.com/mwpeer/mwpeer/membership"
	"github.com/mwpeer/mwpeer/p2p"
)

const swarmKeyUsage = `Usage:
  mwpeer swarm-key new [--out FILE]
                              make a private swarm's key (libp2p's /key/swarm/psk/1.0.0/ format)

Without --out the key goes to stdout; keep the file private, e.g. (umask 077; mwpeer swarm-key new > swarm.key).
Every peer of the private swarm runs with --swarm-key FILE; peers without the key cannot connect.
A private swarm runs over TCP only.
`

const certUsage = `Usage:
  mwpeer cert operator-key [--out FILE]
                              make an operator key (mode 0600) and print its public key, the --trust-issuer value
  mwpeer cert pubkey [--key FILE]
                              print the public key of an operator key
  mwpeer cert issue PEERID --until DATE [--from DATE] [--key FILE]
                              print a membership certificate for PEERID, the value of its --cert
  mwpeer cert show CERT|@FILE print what a certificate says

DATE is RFC 3339 (2027-01-31T12:00:00Z), a day (2027-01-31, 00:00 UTC) or a time from now (720h, 90d).
--from defaults to 5 minutes ago, so that clocks a little behind accept the certificate at once.
FILE defaults to operator.key in the default data dir.
`

// runSwarmKey runs mwpeer swarm-key.
func runSwarmKey(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "new" {
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(stdout, swarmKeyUsage)
			return exitOK
		}
		fmt.Fprint(stderr, "mwpeer swarm-key: want new\n\n"+swarmKeyUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("mwpeer swarm-key new", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "file to write the key to (mode 0600; never overwritten); default stdout")
	if code, ok := parseNoArgs(fs, args[1:], swarmKeyUsage); !ok {
		return code
	}
	key, err := p2p.NewSwarmKey()
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	if *out == "" {
		stdout.Write(key)
		return exitOK
	}
	if err := writeSecret(*out, key); err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stderr, "swarm key written to %s\n", *out)
	return exitOK
}

// parseNoArgs parses flags that take no positional argument.
func parseNoArgs(fs *flag.FlagSet, args []string, usage string) (int, bool) {
	fs.Usage = func() { fmt.Fprintf(fs.Output(), "%s\nFlags:\n", usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage, false
	}
	return 0, true
}

// writeSecret creates path with mode 0600 (its directory 0700 if missing);
// an existing file is never overwritten.
func writeSecret(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; it is never overwritten", path)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

func defaultOperatorKey() string {
	return filepath.Join(mwpeer.DefaultConfig().DataDir, "operator.key")
}

// runCert runs mwpeer cert.
func runCert(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "mwpeer cert: no subcommand\n\n"+certUsage)
		return exitUsage
	}
	switch args[0] {
	case "operator-key":
		return runOperatorKey(args[1:], stdout, stderr)
	case "pubkey":
		return runCertPubkey(args[1:], stdout, stderr)
	case "issue":
		return runCertIssue(args[1:], stdout, stderr)
	case "show":
		return runCertShow(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, certUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "mwpeer cert: unknown subcommand %q\n\n%s", args[0], certUsage)
		return exitUsage
	}
}

func runOperatorKey(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer cert operator-key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", defaultOperatorKey(), "file to write the operator key to (mode 0600; never overwritten)")
	if code, ok := parseNoArgs(fs, args, certUsage); !ok {
		return code
	}
	k, err := membership.NewKey()
	if err == nil {
		var data []byte
		if data, err = membership.MarshalKey(k); err == nil {
			err = writeSecret(*out, data)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: operator key: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stderr, "operator key written to %s; peers trust it with --trust-issuer and the line below\n", *out)
	fmt.Fprintln(stdout, membership.FormatIssuer(k.Public().(ed25519.PublicKey)))
	return exitOK
}

// readOperatorKey reads an operator key file, naming it in errors.
func readOperatorKey(path string) (ed25519.PrivateKey, error) {
	data, err := readSmall(path)
	if err != nil {
		return nil, fmt.Errorf("operator key: %w", err)
	}
	k, err := membership.ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("operator key file %s: %v", path, err)
	}
	return k, nil
}

func runCertPubkey(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer cert pubkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", defaultOperatorKey(), "operator key file")
	if code, ok := parseNoArgs(fs, args, certUsage); !ok {
		return code
	}
	k, err := readOperatorKey(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	fmt.Fprintln(stdout, membership.FormatIssuer(k.Public().(ed25519.PublicKey)))
	return exitOK
}

func runCertIssue(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer cert issue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", defaultOperatorKey(), "operator key file")
	until := fs.String("until", "", "end of validity (required): RFC 3339, a day, or a time from now like 90d")
	from := fs.String("from", "", "start of validity; default 5 minutes ago")
	fs.Usage = func() { fmt.Fprintf(fs.Output(), "%s\nFlags:\n", certUsage); fs.PrintDefaults() }
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if len(pos) != 1 || *until == "" {
		fmt.Fprint(stderr, "mwpeer cert issue: want PEERID and --until DATE\n\n"+certUsage)
		return exitUsage
	}
	id, err := peer.Decode(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %q is not a peer ID: %v\n", pos[0], err)
		return exitUsage
	}
	now := time.Now()
	notAfter, err := parseWhen(*until, now)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: --until: %v\n", err)
		return exitUsage
	}
	notBefore := now.Add(-5 * time.Minute)
	if *from != "" {
		if notBefore, err = parseWhen(*from, now); err != nil {
			fmt.Fprintf(stderr, "mwpeer: --from: %v\n", err)
			return exitUsage
		}
	}
	if !notAfter.After(now) {
		fmt.Fprintf(stderr, "mwpeer: warning: this certificate expired at %s\n", notAfter.UTC().Format(time.RFC3339))
	}
	k, err := readOperatorKey(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	cert, err := membership.Issue(k, id, notBefore, notAfter)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitUsage
	}
	fmt.Fprintln(stdout, membership.Encode(cert))
	return exitOK
}

func runCertShow(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprint(stderr, "mwpeer cert show: want CERT or @FILE\n\n"+certUsage)
		return exitUsage
	}
	b, err := readCert(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	c, _ := membership.Parse(b)
	sig := "valid"
	if err := c.VerifySignature(); err != nil {
		sig = err.Error()
	}
	now := time.Now()
	state := "valid now"
	if err := c.Valid(c.Subject, now); err != nil {
		state = err.Error()
	}
	fmt.Fprintf(stdout, "subject    %s\nissuer     %s\nnot before %s\nnot after  %s\nsignature  %s\nstate      %s\n",
		c.Subject, membership.FormatIssuer(c.Issuer), c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), sig, state)
	return exitOK
}

// parseWhen reads a DATE of cert issue: RFC 3339, a day (00:00 UTC), or a
// duration from now (Go's, or a number of days like 90d).
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.AddDate(0, 0, n), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d), nil
	}
	return time.Time{}, fmt.Errorf("%q is not RFC 3339, YYYY-MM-DD or a duration like 720h or 90d", s)
}

// maxSmallFile bounds the key and certificate files the command reads.
const maxSmallFile = 16 << 10

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSmallFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxSmallFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxSmallFile)
	}
	return data, nil
}

// readCert reads a certificate given as its text or as @FILE holding the
// text, and returns its binary form.
func readCert(v string) ([]byte, error) {
	text, where := v, "certificate"
	if path, ok := strings.CutPrefix(v, "@"); ok {
		data, err := readSmall(path)
		if err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
		text, where = string(data), "certificate file "+path
	}
	c, err := membership.Decode(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return c.Bytes(), nil
}

// listFlag is a flag that may be repeated and takes comma-separated
// values; the first use replaces the default (from the environment).
type listFlag struct {
	vals []string
	set  bool
}

func (l *listFlag) String() string { return strings.Join(l.vals, ",") }
func (l *listFlag) Set(v string) error {
	if !l.set {
		l.vals, l.set = nil, true
	}
	l.vals = append(l.vals, splitList(v)...)
	return nil
}

// memberFlags binds the flags of private and certified swarms onto fs and
// returns what fills them into a Config once fs is parsed.
func memberFlags(fs *flag.FlagSet) func(c *mwpeer.Config) error {
	swarmKey := fs.String("swarm-key", env("SWARM_KEY", ""), "private swarm: the key file (mwpeer swarm-key new) every peer of the swarm holds; peers without it cannot connect; TCP only (MWPEER_SWARM_KEY)")
	issuers := &listFlag{vals: splitList(env("TRUST_ISSUER", ""))}
	fs.Var(issuers, "trust-issuer", "certified swarm: an operator public key (mwpeer cert operator-key); repeat or separate with commas; serve and ask only peers certified by one (MWPEER_TRUST_ISSUER)")
	cert := fs.String("cert", env("CERT", ""), "this peer's membership certificate (mwpeer cert issue), as text or @FILE (MWPEER_CERT)")
	return func(c *mwpeer.Config) error {
		if *swarmKey != "" {
			psk, err := p2p.ReadSwarmKey(*swarmKey)
			if err != nil {
				return fmt.Errorf("--swarm-key: %w", err)
			}
			c.SwarmKey = psk
		}
		c.TrustIssuers = issuers.vals
		if *cert != "" {
			b, err := readCert(*cert)
			if err != nil {
				return fmt.Errorf("--cert: %w", err)
			}
			c.Cert = b
		}
		return nil
	}
}
