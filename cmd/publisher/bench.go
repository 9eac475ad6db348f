package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/loadgen"
)

// benchFlags are the local flags of `bench`.
type benchFlags struct {
	typ         string
	count       int
	concurrency int
	size        int
	rate        float64
	warmup      int
	json        bool
}

func (a *app) benchCmd() *cobra.Command {
	var bf benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Generate load and report throughput and latency percentiles",
		Long: `Publish --count tasks of --type from --concurrency publishers and time each
from its publish to the arrival of its result (a core subscription on the
result subjects, made before the first publish). Reports throughput (results
per second, first publish to last result) and end-to-end latency percentiles;
exits 1 when results are missing after --timeout past the last publish.

Without --rate all tasks are published at once, as fast as the server
acknowledges: throughput is the worker's ceiling, and the latency is mostly
the time tasks queue behind the backlog (the report says so). Give --rate to
measure latency without that queueing, at a load the worker keeps up with.

A server that fsyncs every write (sync_interval: always; worker --embedded
does, unless --embedded-fsync interval) bounds both figures by the disk: say
which mode a figure was measured in. A client cannot read the server's fsync
setting, so the report names it only for a worker's embedded server.

Each payload is unique (a JSON object padded to --size bytes), so no result
cache answers in place of the backend. --warmup tasks run first and are not
counted.`,
		Example: `  publisher bench --count 100000 --concurrency 16
  publisher bench --type echo --rate 2000 --count 20000 --json`,
		Args: argsRange(0, 0, "no arguments"),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return a.bench(cmd.Context(), bf)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&bf.typ, "type", loadgen.DefaultType, "task type to publish")
	f.IntVar(&bf.count, "count", loadgen.DefaultCount, "tasks to publish")
	f.IntVar(&bf.concurrency, "concurrency", loadgen.DefaultConcurrency, "publishing goroutines")
	f.IntVar(&bf.size, "size", loadgen.DefaultSize, "payload size in bytes")
	f.Float64Var(&bf.rate, "rate", 0, "total publish rate in tasks/s (0: as fast as acknowledged)")
	f.IntVar(&bf.warmup, "warmup", 0, "tasks to run first, not counted")
	f.BoolVar(&bf.json, "json", false, "print the report as one JSON object")
	// Shadows the global --timeout, whose help must speak of every command,
	// to say the one default that matters here.
	f.DurationVar(&a.g.timeout, "timeout", 0, "how long to wait for results after the last publish, and at most for each server request (default 30s)")
	return cmd
}

func (bf benchFlags) validate() error {
	if err := client.ValidType(bf.typ); err != nil {
		return usagef("--type: %v", err)
	}
	switch {
	case bf.count < 1:
		return usagef("--count must be at least 1")
	case bf.concurrency < 1:
		return usagef("--concurrency must be at least 1")
	case bf.size < 0:
		return usagef("--size must not be negative")
	case bf.rate < 0 || math.IsNaN(bf.rate) || math.IsInf(bf.rate, 0):
		return usagef("--rate must be a positive number of tasks/s, or 0")
	case bf.warmup < 0:
		return usagef("--warmup must not be negative")
	}
	return nil
}

func (a *app) bench(ctx context.Context, bf benchFlags) error {
	if err := bf.validate(); err != nil {
		return err
	}
	// Asynchronous publishing with a window per goroutine: a synchronous
	// publish costs a round trip (and with fsync on every write, a disk
	// flush) per task, so a few publishers would measure themselves, not
	// the worker.
	window := loadgen.Window(bf.concurrency)
	cctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	c, closeConn, err := a.client(cctx, "bench", nil, client.WithAsyncWindow(window*bf.concurrency))
	cancel()
	if err != nil {
		return err
	}
	defer closeConn()

	r, w, err := loadgen.Run(ctx, c, loadgen.Options{
		Type: bf.typ, Count: bf.count, Concurrency: bf.concurrency, Size: bf.size, Rate: bf.rate, Warmup: bf.warmup,
		ResultTimeout: a.resultTimeout(), RequestTimeout: a.requestTimeout(),
	})
	if err != nil {
		return err
	}
	if w != nil {
		a.benchWarnings(w)
		if w.Missing > 0 || w.PublishErrors > 0 {
			// Worth knowing, but not a reason to skip the measurement.
			fmt.Fprintf(a.stderr, "publisher: warmup: %d of %d results missing, %d publishes failed\n",
				w.Missing, bf.warmup, w.PublishErrors)
		}
	}
	a.benchWarnings(r)
	if r.PublishErr != nil && r.Published == 0 {
		// Nothing to report: say why in one line.
		return r.PublishErr
	}
	if err := a.printBench(r, bf.json); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if r.PublishErr != nil {
		return fmt.Errorf("%d of %d results missing after %s, %d publishes failed (first: %w)",
			r.Missing, r.Tasks, r.ResultDeadline, r.PublishErrors, r.PublishErr)
	}
	if r.Missing > 0 {
		return fmt.Errorf("%d of %d results missing after %s", r.Missing, r.Tasks, r.ResultDeadline)
	}
	return nil
}

// benchWarnings says what the client dropped in a phase.
func (a *app) benchWarnings(r *loadgen.Report) {
	if r.Dropped > 0 {
		fmt.Fprintf(a.stderr, "publisher: %d results dropped by the client (slow consumer)\n", r.Dropped)
	}
}

func (a *app) printBench(r *loadgen.Report, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", b)
		return err
	}
	pct := func(p float64) string { return roundDuration(loadgen.Percentile(r.Latencies, p)).String() }
	maxStr := "0s"
	if len(r.Latencies) > 0 {
		maxStr = roundDuration(r.Latencies[len(r.Latencies)-1]).String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d tasks, %d concurrency, %d bytes: %.0f tasks/s\n", r.Tasks, r.Concurrency, r.Size, r.ResultsPerSec)
	switch {
	case r.Rate == 0:
		b.WriteString("end-to-end latency incl. queueing (all tasks published at once)")
	case r.Queueing:
		fmt.Fprintf(&b, "end-to-end latency at --rate %g/s, incl. queueing (results came at %.0f/s: the worker fell behind)", r.Rate, r.ResultsPerSec)
	default:
		fmt.Fprintf(&b, "end-to-end latency at --rate %g/s (the worker kept up: no queueing behind a backlog)", r.Rate)
	}
	fmt.Fprintf(&b, ": p50 %s, p95 %s, p99 %s, max %s\n", pct(50), pct(95), pct(99), maxStr)
	if r.Missing > 0 || r.PublishErrors > 0 {
		fmt.Fprintf(&b, "%d results missing, %d publishes failed\n", r.Missing, r.PublishErrors)
	}
	if r.Embedded {
		b.WriteString("note: a worker's embedded server (worker --embedded) fsyncs every write unless started with --embedded-fsync interval: the disk then bounds these figures\n")
	} else {
		b.WriteString("note: if the server fsyncs every write (sync_interval: always; worker --embedded does), the disk bounds these figures\n")
	}
	if r.Rate == 0 {
		b.WriteString("note: give --rate (tasks/s the worker keeps up with) to measure latency without queueing\n")
	}
	_, err := io.WriteString(a.stdout, b.String())
	return err
}

// roundDuration keeps three or four significant digits, enough to read.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
