// Command worker runs Breakwater's task pipeline: it pulls tasks from the
// TASKS stream, routes each to a backend, stores the result in RESULTS and
// dead-letters what cannot be done. With --embedded it brings its own NATS
// server, so one command gives a working system. The worker itself is
// assembled by package service; this command parses flags, turns SIGHUP
// into config reloads and maps errors to exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/internal/version"
	"github.com/breakwater/breakwater/service"
	"github.com/breakwater/breakwater/tracing"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

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
	if f.version {
		fmt.Fprintf(stdout, "worker %s\n", version.Get())
		return exitOK
	}
	if f.check != "" {
		if _, err := service.Check(f.check); err != nil {
			// One problem a line, FILE:LINE: key: reason.
			fmt.Fprintln(stderr, err)
			return exitError
		}
		fmt.Fprintln(stdout, "ok")
		return exitOK
	}
	logger := newLogger(f, stderr)
	service.TuneRuntime(getenv, logger)
	reload, stopReload := reloads(ctx)
	defer stopReload()
	err = service.Run(ctx, service.Options{
		ConfigFile: f.config,
		Connect: func(file config.NATS) bus.ConnectOptions {
			return connectOptions(f, getenv, file)
		},
		Embedded:      f.embedded,
		EmbeddedFsync: f.embeddedSync,
		HTTPAddr:      f.httpAddr,
		WorkerID:      f.id,
		Getenv:        getenv,
		Logger:        logger,
		Reload:        reload,
	})
	if err != nil {
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

// reloads turns SIGHUP into reload requests until stop is called (a
// signal that comes while a reload runs makes one more, not one each).
func reloads(ctx context.Context) (<-chan struct{}, func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	out := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out, func() {
		signal.Stop(hup)
		cancel()
		<-done
	}
}

func newLogger(f *flags, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(f.logLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	// Lines logged with a task's context carry its trace and span ids.
	if f.logFormat == "text" {
		return slog.New(tracing.NewLogHandler(slog.NewTextHandler(w, opts)))
	}
	return slog.New(tracing.NewLogHandler(slog.NewJSONHandler(w, opts)))
}
