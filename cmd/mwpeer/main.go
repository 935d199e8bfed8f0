// Command mwpeer runs a peer of the mwpeer inference swarm and talks to a
// running one. `mwpeer --help` lists the subcommands and flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/mwpeer/mwpeer/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
