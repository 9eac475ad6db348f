package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/cliflag"
)

// Exit codes of the command.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the process exit code. It
// is main without the process: tests call it with buffers. Every failure is
// reported once, as one line on stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// Some commands write to stderr from more than one goroutine (the
	// batch publisher's ack collector, the connection's logger).
	errw := &lockedWriter{w: stderr}
	a := &app{stdin: stdin, stdout: stdout, stderr: errw}
	root := a.rootCmd()
	plainBools(root)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(errw)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(errw, "publisher: %s\n", oneLine(err.Error()))
	var failed failure
	if errors.As(err, &failed) && !errors.Is(err, bus.ErrInvalidOption) {
		return exitFailure
	}
	// Everything else came from the command line: cobra's own errors
	// (unknown command or flag, bad flag value), our usageErrors, and bad
	// connection options (--tls-cert without --tls-key).
	return exitUsage
}

// usageError is a mistake on the command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}

// failure marks an error returned by a command's work (as opposed to the
// parsing of its command line): exit code 1. Every RunE is wrapped by
// runE, which tags its errors, so an untagged error can only come from
// cobra's parsing.
type failure struct{ err error }

func (f failure) Error() string { return f.err.Error() }
func (f failure) Unwrap() error { return f.err }

// oneLine keeps the first line of a multi-line message (cobra appends
// "Did you mean this?" blocks) so every failure is exactly one line.
func oneLine(s string) string {
	first, rest, ok := strings.Cut(strings.TrimSpace(s), "\n")
	if !ok {
		return first
	}
	// Keep cobra's suggestion, which is useful, on the same line.
	if _, sugg, ok := strings.Cut(rest, "Did you mean this?"); ok {
		if names := strings.Fields(sugg); len(names) > 0 {
			return fmt.Sprintf("%s (did you mean %s?)", first, strings.Join(names, " or "))
		}
	}
	return first
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// plainBools prints every command's boolean flags as --name in the help,
// not --name[=true|false].
func plainBools(c *cobra.Command) {
	c.InitDefaultHelpFlag()
	cliflag.PlainBools(c.Flags())
	cliflag.PlainBools(c.PersistentFlags())
	for _, sub := range c.Commands() {
		plainBools(sub)
	}
}
