package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/spf13/cobra"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/task"
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
	f.StringVar(&bf.typ, "type", "echo", "task type to publish")
	f.IntVar(&bf.count, "count", 10000, "tasks to publish")
	f.IntVar(&bf.concurrency, "concurrency", 64, "publishing goroutines")
	f.IntVar(&bf.size, "size", 128, "payload size in bytes")
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

// benchReport is the outcome of a bench run; it is also the --json output.
type benchReport struct {
	Type          string    `json:"type"`
	Tasks         int       `json:"tasks"`
	Concurrency   int       `json:"concurrency"`
	Size          int       `json:"size"`
	Rate          float64   `json:"rate,omitempty"`
	Warmup        int       `json:"warmup,omitempty"`
	Published     int       `json:"published"`
	PublishErrors int       `json:"publish_errors"`
	Received      int       `json:"received"`
	Missing       int       `json:"missing"`
	ElapsedMS     float64   `json:"elapsed_ms"`
	PublishPerSec float64   `json:"publish_per_sec"`
	ResultsPerSec float64   `json:"tasks_per_sec"`
	LatencyMS     latencyMS `json:"latency_ms"`
	// Queueing is true when the latency includes waiting behind a
	// backlog: no --rate (every task published at once), or results
	// slower than the rate.
	Queueing bool `json:"latency_includes_queueing"`
	// Embedded is true on a worker's embedded server (worker --embedded),
	// which fsyncs every write unless started with --embedded-fsync
	// interval.
	Embedded       bool `json:"embedded_server"`
	latencies      []time.Duration
	resultDeadline time.Duration
	firstPubErr    error // the first failed publish, if any
}

// latencyMS are the latency statistics in milliseconds.
type latencyMS struct {
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

func (a *app) bench(ctx context.Context, bf benchFlags) error {
	if err := bf.validate(); err != nil {
		return err
	}
	topo, err := a.topology()
	if err != nil {
		return err
	}
	// Asynchronous publishing with a window per goroutine: a synchronous
	// publish costs a round trip (and with fsync on every write, a disk
	// flush) per task, so a few publishers would measure themselves, not
	// the worker. The windows add up to client.DefaultAsyncWindow whatever the
	// concurrency, which bounds the tasks in flight to the server.
	window := max(1, client.DefaultAsyncWindow/bf.concurrency)
	cctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	nc, js, err := a.connectJS(cctx, "bench",
		jetstream.WithPublishAsyncMaxPending(window*bf.concurrency),
		jetstream.WithPublishAsyncTimeout(a.requestTimeout()),
	)
	cancel()
	if err != nil {
		return err
	}
	defer nc.Close()

	if bf.warmup > 0 {
		w, err := a.benchPhase(ctx, nc, js, topo, bf, bf.warmup, window)
		if err != nil {
			return fmt.Errorf("warmup: %w", err)
		}
		if w.firstPubErr != nil && w.Published == 0 {
			return fmt.Errorf("warmup: %w", w.firstPubErr)
		}
		if w.Missing > 0 || w.PublishErrors > 0 {
			// Worth knowing, but not a reason to skip the measurement.
			fmt.Fprintf(a.stderr, "publisher: warmup: %d of %d results missing, %d publishes failed\n",
				w.Missing, bf.warmup, w.PublishErrors)
		}
	}
	r, err := a.benchPhase(ctx, nc, js, topo, bf, bf.count, window)
	if err != nil {
		return err
	}
	if r.firstPubErr != nil && r.Published == 0 {
		// Nothing to report: say why in one line.
		return r.firstPubErr
	}
	r.Rate, r.Warmup = bf.rate, bf.warmup
	r.Queueing = bf.rate == 0 || r.ResultsPerSec < behind*bf.rate
	r.Embedded = nc.ConnectedServerName() == embeddedServerName
	if err := a.printBench(r, bf.json); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if r.firstPubErr != nil {
		return fmt.Errorf("%d of %d results missing after %s, %d publishes failed (first: %w)",
			r.Missing, r.Tasks, r.resultDeadline, r.PublishErrors, r.firstPubErr)
	}
	if r.Missing > 0 {
		return fmt.Errorf("%d of %d results missing after %s", r.Missing, r.Tasks, r.resultDeadline)
	}
	return nil
}

// benchRun is the shared state of one phase. Times are nanoseconds since
// start plus one, so that zero means "not yet".
type benchRun struct {
	prefix   string // "<run id>-", every task id of the phase starts with it
	start    time.Time
	sent     []atomic.Int64
	arrived  []atomic.Int64
	received atomic.Int64
	progress chan struct{} // signalled (never blocking) on each new result
}

func (r *benchRun) since() int64 { return int64(time.Since(r.start)) + 1 }

// onResult records the arrival of a result of this phase; duplicates (a
// redelivered task answered twice) and other runs' results are ignored.
func (r *benchRun) onResult(m *nats.Msg) {
	now := r.since()
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	num, ok := strings.CutPrefix(id, r.prefix)
	if !ok {
		return
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || n >= len(r.arrived) {
		return
	}
	if r.arrived[n].CompareAndSwap(0, now) {
		r.received.Add(1)
		select {
		case r.progress <- struct{}{}:
		default:
		}
	}
}

// benchPhase publishes n tasks and waits for their results. Its
// goroutines (the publishers, and the subscription's handler, which is
// unsubscribed on return) all end before it returns.
func (a *app) benchPhase(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, topo bus.Topology,
	bf benchFlags, n, window int) (*benchReport, error) {
	run := &benchRun{
		prefix:   "bench-" + nuid.Next() + "-",
		sent:     make([]atomic.Int64, n),
		arrived:  make([]atomic.Int64, n),
		progress: make(chan struct{}, 1),
	}
	// Results are JetStream-stored messages, but a core subscription on
	// their subjects sees each one as it is published: no consumer, no
	// acks, and the arrival time is the client's.
	sub, err := nc.Subscribe(topo.ResultsFilter(bf.typ), run.onResult)
	if err != nil {
		return nil, fmt.Errorf("subscribe to results: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // best effort; the connection closes soon
	// A dropped result would be counted as missing: never drop.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	fctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("subscribe to results: %w", err)
	}

	subject := topo.TaskSubject(bf.typ)
	pad := strings.Repeat("x", bf.size)
	var (
		next    atomic.Int64
		pubErrs atomic.Int64
		firstMu sync.Once
		pubErr  error
		wg      sync.WaitGroup
	)
	run.start = time.Now()
	for range bf.concurrency {
		wg.Go(func() {
			queue := make([]inflight, 0, window)
			await := func(p inflight) {
				select {
				case <-p.paf.Ok():
				case err := <-p.paf.Err():
					pubErrs.Add(1)
					firstMu.Do(func() { pubErr = err })
				case <-ctx.Done():
				}
			}
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					break
				}
				if bf.rate > 0 && !waitUntil(ctx, run.start.Add(time.Duration(float64(i)/bf.rate*float64(time.Second)))) {
					break
				}
				id := run.prefix + strconv.Itoa(i)
				msg := &nats.Msg{
					Subject: subject,
					Header:  nats.Header{task.HeaderID: {id}, task.HeaderMsgID: {id}},
					Data:    benchPayload(i, bf.size, pad),
				}
				run.sent[i].Store(run.since())
				paf, err := client.PublishAsync(ctx, js, msg)
				if err != nil {
					pubErrs.Add(1)
					firstMu.Do(func() { pubErr = err })
					continue
				}
				queue = append(queue, inflight{line: i, paf: paf})
				if len(queue) >= window {
					await(queue[0])
					queue = queue[1:]
				}
			}
			for _, p := range queue {
				await(p)
			}
		})
	}
	wg.Wait()
	published := time.Since(run.start)
	sentCount := 0
	for i := range run.sent {
		if run.sent[i].Load() != 0 {
			sentCount++
		}
	}
	errs := int(pubErrs.Load())

	// Wait for the results of every acknowledged task, or the deadline.
	want := int64(sentCount - errs)
	deadline := time.NewTimer(a.resultTimeout())
	defer deadline.Stop()
wait:
	for run.received.Load() < want {
		select {
		case <-run.progress:
		case <-deadline.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	// Stop counting before reading: late results must not change the
	// figures while they are computed.
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return nil, err
	}
	if dropped, _ := sub.Dropped(); dropped > 0 {
		fmt.Fprintf(a.stderr, "publisher: %d results dropped by the client (slow consumer)\n", dropped)
	}
	rep := run.report(bf, n, sentCount, errs, published, a.resultTimeout())
	if pubErr != nil {
		rep.firstPubErr = fmt.Errorf("publish to %s: %w", subject, streamHint(pubErr, topo.TasksStream()))
	}
	return rep, nil
}

// report computes the figures of a finished phase.
func (r *benchRun) report(bf benchFlags, n, sent, errs int, published, resultDeadline time.Duration) *benchReport {
	rep := &benchReport{
		Type: bf.typ, Tasks: n, Concurrency: bf.concurrency, Size: bf.size,
		Published: sent - errs, PublishErrors: errs, resultDeadline: resultDeadline,
	}
	var last int64
	for i := range r.arrived {
		at := r.arrived[i].Load()
		if at == 0 {
			continue
		}
		rep.latencies = append(rep.latencies, time.Duration(at-r.sent[i].Load()))
		last = max(last, at)
	}
	rep.Received = len(rep.latencies)
	rep.Missing = max(0, rep.Published-rep.Received)
	if published > 0 {
		rep.PublishPerSec = float64(rep.Published) / published.Seconds()
	}
	if last > 0 {
		elapsed := time.Duration(last - 1)
		rep.ElapsedMS = ms(elapsed)
		rep.ResultsPerSec = float64(rep.Received) / elapsed.Seconds()
	}
	if len(rep.latencies) > 0 {
		slices.Sort(rep.latencies)
		var sum time.Duration
		for _, d := range rep.latencies {
			sum += d
		}
		l := rep.latencies
		rep.LatencyMS = latencyMS{
			Min: ms(l[0]), Max: ms(l[len(l)-1]),
			Mean: ms(sum / time.Duration(len(l))),
			P50:  ms(percentile(l, 50)), P95: ms(percentile(l, 95)), P99: ms(percentile(l, 99)),
		}
	}
	return rep
}

// percentile is the nearest-rank percentile p (0 < p ≤ 100) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// embeddedServerName is the server name of `worker --embedded` (set in
// bus.StartEmbedded). The server's fsync mode is in its /varz, which only
// the system account can ask for over NATS ($SYS.REQ.SERVER.*.VARZ), not a
// client of the tasks' account; the name is what a client can see.
const embeddedServerName = "breakwater-embedded"

// behind is the share of --rate under which the results are said to have
// fallen behind the publishing, so that the latency includes queueing.
const behind = 0.9

func (a *app) printBench(r *benchReport, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", b)
		return err
	}
	pct := func(p float64) string { return roundDuration(percentile(r.latencies, p)).String() }
	maxStr := "0s"
	if len(r.latencies) > 0 {
		maxStr = roundDuration(r.latencies[len(r.latencies)-1]).String()
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

// benchPayload is a payload of size bytes unique to task i: a JSON object
// padded with pad, or only the number when size is too small for it.
func benchPayload(i, size int, pad string) []byte {
	b := make([]byte, 0, size)
	b = append(b, `{"n":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `,"pad":"`...)
	if fill := size - len(b) - 2; fill >= 0 {
		b = append(b, pad[:fill]...)
		return append(b, `"}`...)
	}
	b = strconv.AppendInt(b[:0], int64(i), 10)
	if len(b) > size {
		return b[len(b)-size:]
	}
	return b
}

// waitUntil waits for t (the --rate pacing); false when ctx ended first.
func waitUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type inflight struct {
	line int
	paf  jetstream.PubAckFuture
}
