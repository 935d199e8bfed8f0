package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/mwpeer/mwpeer/experts/shard"
)

const shardUsage = `Usage:
  mwpeer shard split MODEL.gguf --out DIR   cut a llama MoE GGUF into a dense shard and one shard per (layer, expert)
  mwpeer shard verify DIR [DIR...]          hash every shard in the store directories against every manifest

verify exits 1 if a shard or manifest is corrupt; missing shards (a peer hosting part of a model) are listed, not errors.
`

// runShard runs the shard subcommands, which work on local files only.
func runShard(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "mwpeer shard: no subcommand\n\n"+shardUsage)
		return exitUsage
	}
	switch args[0] {
	case "split":
		return runShardSplit(args[1:], stdout, stderr)
	case "verify":
		return runShardVerify(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, shardUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "mwpeer shard: unknown subcommand %q\n\n%s", args[0], shardUsage)
		return exitUsage
	}
}

// parseInterspersed parses fs from args, allowing flags after positional
// arguments, and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func runShardSplit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer shard split", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "store directory to write the shards and manifest to (created if missing)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: mwpeer shard split MODEL.gguf --out DIR\n\nFlags:\n")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if len(pos) != 1 || *out == "" {
		fmt.Fprintln(stderr, "mwpeer shard split: need one MODEL.gguf and --out DIR")
		fs.Usage()
		return exitUsage
	}
	start := time.Now()
	m, err := shard.Split(pos[0], *out)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer shard split: %v\n", err)
		return exitError
	}
	took := time.Since(start)
	dense := m.Dense()
	var experts int64
	for _, s := range m.Shards[1:] {
		experts += s.Size
	}
	fmt.Fprintf(stdout, "model %s\n", m.ID())
	fmt.Fprintf(stdout, "name %s: %d layers × %d experts (%d used per token), embedding %d, feed-forward %d\n",
		m.Name, m.Shape.Layers, m.Shape.Experts, m.Shape.ExpertsUsed, m.Shape.Embedding, m.Shape.FeedForward)
	fmt.Fprintf(stdout, "%d shards, %s in all, in %s:\n", len(m.Shards), bytesText(m.Size()), took.Round(time.Millisecond))
	fmt.Fprintf(stdout, "  dense   %s  %s\n", dense.Hash, bytesText(dense.Size))
	fmt.Fprintf(stdout, "  experts %d × %s  (%s)\n", len(m.Shards)-1, bytesText(m.Shards[1].Size), bytesText(experts))
	fmt.Fprintf(stdout, "stored in %s\n", *out)
	return exitOK
}

func runShardVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer shard verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(fs.Output(), "Usage: mwpeer shard verify DIR [DIR...]\n") }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "mwpeer shard verify: no directory given")
		fs.Usage()
		return exitUsage
	}
	r, err := shard.Verify(fs.Args()...)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer shard verify: %v\n", err)
		return exitError
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	var model *shard.Manifest
	for _, st := range r.Shards {
		if st.Model != model {
			model = st.Model
			fmt.Fprintf(tw, "model %s (%s)\n", model.ID(), model.Name)
		}
		line := fmt.Sprintf("  %s\t%s\t%s\t%s", st.Status, st.Shard, st.Shard.Hash, bytesText(st.Shard.Size))
		if st.Err != nil {
			line += "\t" + st.Err.Error()
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	for _, b := range r.BadManifests {
		fmt.Fprintf(stdout, "bad manifest %s: %v\n", b.Path, b.Err)
	}
	fmt.Fprintf(stdout, "%d ok, %d missing, %d corrupt", r.Count(shard.StatusOK), r.Count(shard.StatusMissing), r.Count(shard.StatusCorrupt))
	if len(r.BadManifests) > 0 {
		fmt.Fprintf(stdout, ", %d bad manifests", len(r.BadManifests))
	}
	fmt.Fprintln(stdout)
	if !r.OK() {
		return exitError
	}
	return exitOK
}

// bytesText writes n bytes for people: 1.5 MiB.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/unit, 0
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTP"[i])
}
