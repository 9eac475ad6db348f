package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/cache"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/task"
	"github.com/breakwater/breakwater/tracing"
)

// outcome is what processing one delivery came to; the settler carries it
// out. Exactly one of these holds: err != nil (failed: Decide says what
// next), stored != nil (done before: the stored result is the answer),
// hold != "" (the route cannot serve now: hold the task), or else ans is
// the answer to store.
type outcome struct {
	t         *task.Task
	delivered int
	start     time.Time
	span      trace.Span // ended by the settler
	ctx       context.Context

	err      error
	attempts []resilience.Attempt // the backend calls of this delivery
	ans      answer
	stored   *jetstream.RawStreamMsg
	hold     string        // route name
	holdFor  time.Duration // with hold: until the route may serve (0: paused)
	holdErr  error         // with hold: the failure to settle by when the parking is full
}

// answer is a task's successful outcome, from a backend or the cache.
type answer struct {
	body     []byte
	backend  string
	attempts []resilience.Attempt
	cache    string // Task-Cache
}

// ErrRoutePaused: the task's route is paused by an operator and the
// worker cannot hold more tasks; it is redelivered later (transient).
var ErrRoutePaused = errors.New("route paused")

// pausedRecheck is when a paused route's task that could not be held is
// offered again.
const pausedRecheck = 5 * time.Second

// unavailableRecheck is how soon a task refused by half-open breakers
// (their trial calls in flight) looks again.
const unavailableRecheck = 100 * time.Millisecond

// process takes one delivery from parsing to the backend's answer. It
// settles nothing itself.
//
// ctx is the worker's; slot is the calling goroutine's (see runSlot).
func (w *Worker) process(ctx context.Context, slot *runSlot, d *delivery) outcome {
	w.stats.inFlight.Add(1)
	msg := d.msg
	o := outcome{start: time.Now(), delivered: 1}
	var seq uint64
	var storedAt time.Time
	if meta, ok := parseAckReply(msg.Reply); ok {
		seq, o.delivered, storedAt = meta.seq, max(meta.delivered, 1), meta.stored
	}
	// What this task is processed with, even if a reload replaces it.
	live := w.acquire()
	defer w.release(live)
	typ, _ := w.o.Topology.TaskType(msg.Subject)
	t, err := task.Parse(msg.Subject, typ, msg.Header, msg.Data, seq, task.ParseOptions{MaxPayload: w.o.MaxPayload, Reply: live.Reply})
	if err == nil {
		err = t.Firing(w.everyPrefix, storedAt)
	}
	if err == nil && w.o.OnFired != nil && o.delivered == 1 {
		if periodic, fired := t.Fired(); fired {
			w.o.OnFired(t.Type, periodic, o.start.Sub(task.Due(storedAt)))
		}
	}
	o.t = t
	o.span = trace.SpanFromContext(ctx) // a no-op span, without tracing
	if w.traced {
		ctx, o.span = tracing.StartProcess(ctx, w.o.Tracer, w.o.Propagator, tracing.ProcessInfo{
			Subject: msg.Subject, Type: t.Type, TaskID: t.ID, Consumer: bus.DefaultConsumer,
			Delivered: o.delivered, BodySize: len(t.Payload), Header: t.Header,
		})
	}
	o.ctx = ctx
	if err != nil {
		o.err = err
		return o
	}
	if w.o.MaxDeliver > 0 && o.delivered > w.o.MaxDeliver {
		// A crash loop, or a dead-letter that failed: never call the
		// backend again, only try to park the task in the DLQ.
		o.err = fmt.Errorf("%w: delivery %d of at most %d", ErrMaxDeliveries, o.delivered, w.o.MaxDeliver)
		return o
	}
	if t.Expired(o.start) {
		o.err = fmt.Errorf("%w at %s", ErrExpired, t.Deadline.Format(time.RFC3339))
		return o
	}
	// At-least-once delivery: a redelivered task whose result is already
	// stored was done before the worker could ack it.
	if o.delivered > 1 {
		if stored, err := w.results.GetLastMsgForSubject(ctx, w.o.Topology.ResultSubject(t.Type, t.ID)); err == nil {
			o.stored = stored
			return o
		}
	}
	if w.running.wasCancelled(t.Type, t.ID, o.start) {
		o.err = fmt.Errorf("%w before it started", ErrCancelled)
		return o
	}
	route, err := live.Router.Route(t.Type)
	if err != nil {
		o.err = err
		return o
	}
	// The cache answers first: a hit needs no backend, even in an outage.
	pol, cacheable := live.CachePolicies[route.Name]
	cacheable = cacheable && live.Cache != nil
	var key string
	noCache := false
	if cacheable {
		key = cache.Key(t.Type, t.Payload, t.Header, pol.KeyHeaders)
		if noCache = t.NoCache; !noCache {
			lctx, lspan := ctx, trace.Span(nil)
			if o.span.IsRecording() {
				lctx, lspan = tracing.StartInternal(ctx, w.o.Tracer, "cache lookup")
			}
			e, ok := live.Cache.Get(lctx, key, pol)
			if lspan != nil {
				lspan.SetAttributes(tracing.AttrCacheHit.Bool(ok))
				lspan.End()
			}
			if ok {
				o.ans = answer{body: e.Body, backend: task.BackendCache, cache: task.CacheHit}
				return o
			}
		}
	}

	// An outage or a pause holds the task rather than spending a delivery.
	if w.settler.parking.paused(route.Name) {
		o.hold = route.Name
		o.holdErr = &resilience.Failure{Err: fmt.Errorf("%w: %s", ErrRoutePaused, route.Name), RetryAfter: pausedRecheck}
		return o
	}
	if down, wait := route.Unavailable(); down {
		o.hold, o.holdFor = route.Name, wait
		o.holdErr = &resilience.Failure{Err: fmt.Errorf("%w: %s", resilience.ErrUnavailable, route.Name), RetryAfter: wait}
		return o
	}

	// Task-Deadline bounds the whole task; the route may bound it further.
	// Worker.Cancel cancels the task's context (cause ErrCancelled).
	// Untraced, ctx is the worker's, and the goroutine's slot serves;
	// traced, ctx carries the task's span and baggage, so it gets a
	// context of its own.
	tctx, cancelTask := slot.ctx, slot.cancel
	if w.traced {
		var cancel context.CancelCauseFunc
		tctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		cancelTask = cancel
	}
	if !t.Deadline.IsZero() {
		var cancel context.CancelFunc
		tctx, cancel = context.WithDeadline(tctx, t.Deadline)
		defer cancel()
	}
	w.running.start(t.Type, t.ID, o.start, cancelTask)
	defer w.running.stop(slot, t.Type, t.ID)
	w.settler.progress.calling(d.pid, o.start, route.Budget())
	req := &handlers.Request{TaskID: t.ID, Type: t.Type, Payload: t.Payload, Header: t.Header}
	var ans answer
	switch {
	case !cacheable:
		ans, err = w.call(tctx, route, req)
	case noCache:
		// Asked fresh: its own call, whose result refreshes the entry.
		if ans, err = w.call(tctx, route, req); err == nil {
			live.Cache.Set(key, pol, ans.body, ans.backend)
		}
	default:
		// Identical tasks in flight at once share one call.
		var own answer
		e, follower, derr := live.Cache.Do(key, pol, func() ([]byte, string, error) {
			a, err := w.call(tctx, route, req)
			own = a
			return a.body, a.backend, err
		})
		switch {
		case follower && derr == nil:
			ans = answer{body: e.Body, backend: task.BackendCache, cache: task.CacheHit}
		case follower:
			err = fmt.Errorf("identical task in flight failed: %w", derr)
		default:
			ans, err = own, derr
		}
	}
	if err != nil {
		o.attempts = resilience.AttemptsOf(err)
		switch {
		case errors.Is(context.Cause(tctx), ErrCancelled):
			o.err = fmt.Errorf("%w: %w", ErrCancelled, err)
		case ctx.Err() != nil:
			o.err = fmt.Errorf("%w: %w", ErrShutdown, err)
		case errors.Is(err, resilience.ErrUnavailable):
			// Refused by every breaker (a half-open one had its trial
			// calls out): look again shortly, still without a delivery.
			w.settler.progress.waiting(d.pid)
			o.hold, o.holdFor, o.holdErr = route.Name, max(resilience.RetryAfter(err), unavailableRecheck), err
		default:
			o.err = err
		}
		return o
	}
	o.ans, o.attempts = ans, ans.attempts
	return o
}

// call runs the route.
func (w *Worker) call(ctx context.Context, route *resilience.Route, req *handlers.Request) (answer, error) {
	a, err := route.Do(ctx, req)
	if err != nil {
		return answer{}, err
	}
	return answer{body: a.Response.Body, backend: a.Backend, attempts: a.Attempts, cache: task.CacheMiss}, nil
}
