package loadgen

import (
	"context"
	"errors"
	"fmt"
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

	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/task"
)

// Defaults of Options.
const (
	DefaultType        = "echo"
	DefaultCount       = 10000
	DefaultConcurrency = 64
	// DefaultSize is the payload size the bench command uses; Options'
	// Size has no default (0 is an empty payload).
	DefaultSize          = 128
	DefaultResultTimeout = client.DefaultResultTimeout
)

// EmbeddedServerName is the server name of `worker --embedded` (set in
// bus.StartEmbedded). The server's fsync mode is in its /varz, which only
// the system account can ask for over NATS ($SYS.REQ.SERVER.*.VARZ), not a
// client of the tasks' account; the name is what a client can see.
const EmbeddedServerName = "breakwater-embedded"

// behind is the share of the rate under which the results are said to
// have fallen behind the publishing, so that the latency includes
// queueing.
const behind = 0.9

// ErrInvalidOption marks a bad Options value.
var ErrInvalidOption = errors.New("invalid load option")

// Options describe a load. Zero values but Size's and Rate's take the
// defaults above.
type Options struct {
	Type        string
	Count       int
	Concurrency int
	// Size is the payload size in bytes (0: empty payloads).
	Size int
	// Rate is the total publish rate in tasks/s; 0 publishes as fast as
	// the server acknowledges.
	Rate float64
	// Warmup tasks run first and are not counted.
	Warmup int
	// ResultTimeout is how long to wait for results after the last
	// publish.
	ResultTimeout time.Duration
	// RequestTimeout bounds a request to the server (the subscription's
	// flush).
	RequestTimeout time.Duration
}

func (o Options) withDefaults() (Options, error) {
	if o.Type == "" {
		o.Type = DefaultType
	}
	if o.Count == 0 {
		o.Count = DefaultCount
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.ResultTimeout == 0 {
		o.ResultTimeout = DefaultResultTimeout
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = client.DefaultRequestTimeout
	}
	if err := client.ValidType(o.Type); err != nil {
		return o, fmt.Errorf("%w: type: %w", ErrInvalidOption, err)
	}
	switch {
	case o.Count < 1, o.Concurrency < 1, o.Size < 0, o.Warmup < 0, o.ResultTimeout < 0, o.RequestTimeout < 0:
		return o, fmt.Errorf("%w: count and concurrency must be at least 1, size, warmup and result timeout not negative", ErrInvalidOption)
	case o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0):
		return o, fmt.Errorf("%w: rate must be a positive number of tasks/s, or 0", ErrInvalidOption)
	}
	return o, nil
}

// Window is the async publish window of each publishing goroutine: the
// windows add up to client.DefaultAsyncWindow whatever the concurrency,
// which bounds the tasks in flight to the server. Open the Client given
// to Run with client.WithAsyncWindow(Window(c)*c).
func Window(concurrency int) int { return max(1, client.DefaultAsyncWindow/max(concurrency, 1)) }

// Report is the outcome of a run; its JSON is the bench command's --json.
type Report struct {
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
	LatencyMS     LatencyMS `json:"latency_ms"`
	// Queueing is true when the latency includes waiting behind a
	// backlog: no rate (every task published at once), or results
	// slower than the rate.
	Queueing bool `json:"latency_includes_queueing"`
	// Embedded is true on a worker's embedded server (worker --embedded),
	// which fsyncs every write unless started with --embedded-fsync
	// interval.
	Embedded bool `json:"embedded_server"`

	// Latencies are the tasks' end-to-end latencies, sorted.
	Latencies []time.Duration `json:"-"`
	// ResultDeadline is how long results were waited for.
	ResultDeadline time.Duration `json:"-"`
	// PublishErr is the first failed publish, if any.
	PublishErr error `json:"-"`
	// Dropped counts results the client dropped (a slow consumer).
	Dropped int `json:"-"`
}

// LatencyMS are the latency statistics in milliseconds.
type LatencyMS struct {
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// Run runs the warmup, if any, then the measured load, and reports both
// (warmup nil without one). Results missing after the result timeout and
// failed publishes are counted in the report, not errors; the error is
// for what stops the run (a subscription, bad options, a warmup of which
// no publish got through). Open c with client.WithAsyncWindow(
// Window(o.Concurrency) * o.Concurrency). Its goroutines all end before
// it returns.
func Run(ctx context.Context, c *client.Client, o Options) (rep, warmup *Report, err error) {
	if o, err = o.withDefaults(); err != nil {
		return nil, nil, err
	}
	if o.Warmup > 0 {
		if warmup, err = phase(ctx, c, o, o.Warmup); err != nil {
			return nil, nil, fmt.Errorf("warmup: %w", err)
		}
		if warmup.PublishErr != nil && warmup.Published == 0 {
			// Nothing got through: the measurement would fail the same.
			return nil, warmup, fmt.Errorf("warmup: %w", warmup.PublishErr)
		}
	}
	if rep, err = phase(ctx, c, o, o.Count); err != nil {
		return nil, warmup, err
	}
	rep.Rate, rep.Warmup = o.Rate, o.Warmup
	rep.Queueing = o.Rate == 0 || rep.ResultsPerSec < behind*o.Rate
	rep.Embedded = c.Conn().ConnectedServerName() == EmbeddedServerName
	return rep, warmup, nil
}

// run is the shared state of one phase. Times are nanoseconds since start
// plus one, so that zero means "not yet".
type run struct {
	prefix   string // "<run id>-", every task id of the phase starts with it
	start    time.Time
	sent     []atomic.Int64
	arrived  []atomic.Int64
	received atomic.Int64
	progress chan struct{} // signalled (never blocking) on each new result
}

func (r *run) since() int64 { return int64(time.Since(r.start)) + 1 }

// onResult records the arrival of a result of this phase; duplicates (a
// redelivered task answered twice) and other runs' results are ignored.
func (r *run) onResult(m *nats.Msg) {
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

// phase publishes n tasks and waits for their results. Its goroutines (the
// publishers, and the subscription's handler, which is unsubscribed on
// return) all end before it returns.
func phase(ctx context.Context, c *client.Client, o Options, n int) (*Report, error) {
	nc, js, topo := c.Conn(), c.JetStream(), c.Topology()
	window := Window(o.Concurrency)
	r := &run{
		prefix:   "bench-" + nuid.Next() + "-",
		sent:     make([]atomic.Int64, n),
		arrived:  make([]atomic.Int64, n),
		progress: make(chan struct{}, 1),
	}
	// Results are JetStream-stored messages, but a core subscription on
	// their subjects sees each one as it is published.
	sub, err := nc.Subscribe(topo.ResultsFilter(o.Type), r.onResult)
	if err != nil {
		return nil, fmt.Errorf("subscribe to results: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // best effort; the connection closes soon
	// A dropped result would be counted as missing: never drop.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	fctx, cancel := context.WithTimeout(ctx, o.RequestTimeout)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("subscribe to results: %w", err)
	}

	subject := topo.TaskSubject(o.Type)
	pad := strings.Repeat("x", o.Size)
	var (
		next    atomic.Int64
		pubErrs atomic.Int64
		firstMu sync.Once
		pubErr  error
		wg      sync.WaitGroup
	)
	r.start = time.Now()
	for range o.Concurrency {
		wg.Go(func() {
			queue := make([]jetstream.PubAckFuture, 0, window)
			await := func(paf jetstream.PubAckFuture) {
				select {
				case <-paf.Ok():
				case err := <-paf.Err():
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
				if o.Rate > 0 && !waitUntil(ctx, r.start.Add(time.Duration(float64(i)/o.Rate*float64(time.Second)))) {
					break
				}
				id := r.prefix + strconv.Itoa(i)
				msg := &nats.Msg{
					Subject: subject,
					Header:  nats.Header{task.HeaderID: {id}, task.HeaderMsgID: {id}},
					Data:    Payload(i, o.Size, pad),
				}
				r.sent[i].Store(r.since())
				paf, err := client.PublishAsync(ctx, js, msg)
				if err != nil {
					pubErrs.Add(1)
					firstMu.Do(func() { pubErr = err })
					continue
				}
				queue = append(queue, paf)
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
	published := time.Since(r.start)
	sentCount := 0
	for i := range r.sent {
		if r.sent[i].Load() != 0 {
			sentCount++
		}
	}
	errs := int(pubErrs.Load())

	// Wait for the results of every acknowledged task, or the deadline.
	want := int64(sentCount - errs)
	deadline := time.NewTimer(o.ResultTimeout)
	defer deadline.Stop()
wait:
	for r.received.Load() < want {
		select {
		case <-r.progress:
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
	rep := r.report(o, n, sentCount, errs, published)
	if dropped, _ := sub.Dropped(); dropped > 0 {
		rep.Dropped = dropped
	}
	if pubErr != nil {
		rep.PublishErr = fmt.Errorf("publish to %s: %w", subject, client.StreamHint(pubErr, topo.TasksStream()))
	}
	return rep, nil
}

// report computes the figures of a finished phase.
func (r *run) report(o Options, n, sent, errs int, published time.Duration) *Report {
	rep := &Report{
		Type: o.Type, Tasks: n, Concurrency: o.Concurrency, Size: o.Size,
		Published: sent - errs, PublishErrors: errs, ResultDeadline: o.ResultTimeout,
	}
	var last int64
	for i := range r.arrived {
		at := r.arrived[i].Load()
		if at == 0 {
			continue
		}
		rep.Latencies = append(rep.Latencies, time.Duration(at-r.sent[i].Load()))
		last = max(last, at)
	}
	rep.Received = len(rep.Latencies)
	rep.Missing = max(0, rep.Published-rep.Received)
	if published > 0 {
		rep.PublishPerSec = float64(rep.Published) / published.Seconds()
	}
	if last > 0 {
		elapsed := time.Duration(last - 1)
		rep.ElapsedMS = ms(elapsed)
		rep.ResultsPerSec = float64(rep.Received) / elapsed.Seconds()
	}
	if len(rep.Latencies) > 0 {
		slices.Sort(rep.Latencies)
		var sum time.Duration
		for _, d := range rep.Latencies {
			sum += d
		}
		l := rep.Latencies
		rep.LatencyMS = LatencyMS{
			Min: ms(l[0]), Max: ms(l[len(l)-1]),
			Mean: ms(sum / time.Duration(len(l))),
			P50:  ms(Percentile(l, 50)), P95: ms(Percentile(l, 95)), P99: ms(Percentile(l, 99)),
		}
	}
	return rep
}

// Percentile is the nearest-rank percentile p (0 < p ≤ 100) of sorted.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Payload is a payload of size bytes unique to task i: a JSON object
// padded with pad (at least size bytes long), or only the number when
// size is too small for it.
func Payload(i, size int, pad string) []byte {
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

// waitUntil waits for t (the rate's pacing); false when ctx ended first.
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
