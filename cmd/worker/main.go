// Command worker runs Breakwater's task pipeline: it pulls tasks from the
// TASKS stream, routes each to a backend, stores the result in RESULTS and
// dead-letters what cannot be done. With --embedded it brings its own NATS
// server, so one command gives a working system.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/breakwater/breakwater/bus"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	f, err := parseFlags(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return exitUsage
	}
	if err := serve(ctx, f, getenv, stderr); err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		// Bad connection settings (--tls-cert without --tls-key, a
		// URL with a wrong scheme) are usage errors wherever they came from.
		if errors.Is(err, bus.ErrInvalidOption) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}
