package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/cache"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/task"
	"github.com/breakwater/breakwater/tracing"
)

// Options configure a Worker. JS, Consumer, Router and DLQ are required.
type Options struct {
	// JS publishes results and reads stored ones.
	JS jetstream.JetStream
	// Conn publishes replies to Task-Reply-To (core NATS).
	Conn *nats.Conn
	// Consumer is the shared durable pull consumer on TASKS.
	Consumer jetstream.Consumer
	// Recreate, when set, is called if the consumer (or its stream) is
	// deleted while the worker runs, to make them again; Run then goes on
	// consuming from the new consumer. Nil: Run returns the error.
	Recreate func(ctx context.Context) (jetstream.Consumer, error)
	Topology bus.Topology
	Router   *resilience.Router
	DLQ      *dlq.Writer
	// History, when set, keeps the attempts of failed deliveries so that
	// a dead-lettered task carries all of them.
	History *dlq.History
	// WorkerID names this worker in the attempt history.
	WorkerID string
	// Cache, when set, serves and stores the results of the routes in
	// CachePolicies.
	Cache         *cache.Cache
	CachePolicies map[string]cache.Policy

	// Concurrency is the number of tasks processed at once. Default 64.
	Concurrency int
	// AckWait is the consumer's ack wait; a task running longer than half
	// of it sends InProgress so that it is not redelivered. Default 30s.
	AckWait time.Duration
	// MaxDeliver is the consumer's delivery limit; the last delivery of a
	// transiently failing task is dead-lettered as exhausted. Default 5.
	MaxDeliver int
	// MaxPayload makes larger payloads poison; 0: no limit of ours.
	MaxPayload int
	// Reply decides which Task-Reply-To subjects are answered (see
	// ReplyRules); a task with a refused one is poison. Nil: only
	// task.DefaultReplySubjects, never task.NeverReply.
	Reply *task.ReplyRules
	// DrainTimeout bounds how long Run waits for in-flight tasks after
	// its context ends; the rest are handed back to the stream. Default 25s.
	DrainTimeout time.Duration
	// Tracer and Propagator trace each task (a process span continuing
	// the publisher's trace, result and DLQ publish spans); nil: no spans,
	// trace context passed through.
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
	// Observe, when set, is told how each delivery ended (metrics).
	Observe func(Settled)
	// MaxParked bounds the tasks held while their route cannot be served
	// (every breaker open, or paused); past it they are handed back with
	// a delay. Default 1000.
	MaxParked int
	// Logger for task failures and lifecycle. Default slog.Default().
	Logger *slog.Logger
}

// Settled describes how one delivery of a task ended.
type Settled struct {
	Type    string
	Outcome string     // done, dead_lettered, redelivered, duplicate
	Reason  dlq.Reason // with dead_lettered
	Took    time.Duration
}

// Outcomes of Settled.
const (
	OutcomeDone         = "done"
	OutcomeDeadLettered = "dead_lettered"
	OutcomeRedelivered  = "redelivered"
	OutcomeDuplicate    = "duplicate"
)

// Stats are counted on the task path.
type Stats struct {
	Done, Failed, DeadLettered, Redelivered, Duplicates uint64
	InFlight                                            int64
	// Parked counts the tasks held until their route can serve them.
	Parked int
}

// Worker runs the task pipeline. Create it with New and run it with Run.
type Worker struct {
	o        Options
	log      *slog.Logger
	results  jetstream.Stream
	progress *progress
	parking  *parking
	traced   bool // spans made; else trace headers are passed through

	ready                                       atomic.Bool
	done, failed, dead, redelivered, duplicates atomic.Uint64
	inFlight                                    atomic.Int64
}

// New checks o and returns a Worker; it does not start anything.
func New(ctx context.Context, o Options) (*Worker, error) {
	if o.JS == nil || o.Consumer == nil || o.Router == nil || o.DLQ == nil || o.Conn == nil {
		return nil, errors.New("pipeline: JS, Conn, Consumer, Router and DLQ are required")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxDeliver == 0 {
		o.MaxDeliver = 5
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 25 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxParked <= 0 {
		o.MaxParked = 1000
	}
	traced := o.Tracer != nil
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if o.Propagator == nil {
		o.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	results, err := o.JS.Stream(ctx, o.Topology.ResultsStream())
	if err != nil {
		return nil, fmt.Errorf("pipeline: results stream: %w", err)
	}
	w := &Worker{o: o, log: o.Logger, results: results, parking: newParking(o.MaxParked), traced: traced}
	w.progress = newProgress(o.AckWait, func(m jetstream.Msg) {
		w.log.Error("task stuck in a backend that ignores its timeout; no longer kept alive, the server will redeliver it",
			"subject", m.Subject())
	})
	return w, nil
}

// Ready reports whether the worker is pulling tasks (false before Run has
// started consuming and once it is draining).
func (w *Worker) Ready() bool { return w.ready.Load() }

// Stats returns the counters so far.
func (w *Worker) Stats() Stats {
	return Stats{
		Done: w.done.Load(), Failed: w.failed.Load(), DeadLettered: w.dead.Load(),
		Redelivered: w.redelivered.Load(), Duplicates: w.duplicates.Load(),
		InFlight: w.inFlight.Load(), Parked: w.parking.len(),
	}
}

// PauseRoute stops serving the route's tasks: those that arrive are held
// (kept alive, no backend call, no delivery spent) until ResumeRoute.
func (w *Worker) PauseRoute(name string) error {
	if _, err := w.o.Router.Route(name); err != nil {
		return err
	}
	w.parking.setPaused(name, true)
	w.log.Warn("route paused", "route", name)
	return nil
}

// ResumeRoute serves the route's tasks again, the held ones first.
func (w *Worker) ResumeRoute(name string) error {
	if _, err := w.o.Router.Route(name); err != nil {
		return err
	}
	w.parking.setPaused(name, false)
	w.log.Info("route resumed", "route", name)
	return nil
}

// Run pulls and processes tasks until ctx ends, then drains: it stops
// pulling, hands buffered tasks straight back to the stream, and waits up to
// DrainTimeout for in-flight tasks; those still running then are cancelled
// and handed back too. Run returns nil after a drain, or the error that
// stopped consuming.
func (w *Worker) Run(ctx context.Context) error {
	jobs := make(chan job, w.o.Concurrency)
	stopping := make(chan struct{})

	// Tasks run under their own context so that a drain lets them finish;
	// it is cancelled only when the drain times out.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	// One goroutine keeps long tasks alive (see progress).
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		w.progress.run(workCtx)
	}()
	defer func() {
		cancelWork()
		<-progressDone
	}()

	// Workers hand stored-result futures to the settler and move on, so
	// the wait for the server's ack pipelines instead of holding a worker.
	pending := make(chan *pendingResult, max(4*w.o.Concurrency, 256))
	settled := make(chan struct{})
	go func() {
		defer close(settled)
		for p := range pending {
			w.settleResult(workCtx, p)
		}
	}()

	// One goroutine lets held tasks go when their route may serve again.
	parkerStop := make(chan struct{})
	parkerDone := make(chan struct{})
	go func() {
		defer close(parkerDone)
		w.release(jobs, parkerStop)
	}()

	var wg sync.WaitGroup
	for range w.o.Concurrency {
		wg.Go(func() {
			for j := range jobs {
				w.process(workCtx, j, pending)
			}
		})
	}

	consumeErr := make(chan error, 1)
	consume := func(c jetstream.Consumer) (jetstream.ConsumeContext, error) {
		return c.Consume(func(msg jetstream.Msg) {
			// Tracked from here, so that a task waiting for a free
			// goroutine is kept alive too.
			j := job{msg: msg, progressID: w.progress.add(msg)}
			select {
			case jobs <- j:
			case <-stopping:
				// Draining: hand the buffered task back at once.
				w.progress.done(j.progressID)
				_ = msg.Nak()
			}
		},
			jetstream.PullMaxMessages(w.o.Concurrency),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
					select {
					case consumeErr <- err:
					default:
					}
					return
				}
				w.log.Warn("consume", "err", err)
			}),
		)
	}
	cc, err := consume(w.o.Consumer)
	if err != nil {
		close(parkerStop)
		<-parkerDone
		close(jobs)
		wg.Wait()
		close(pending)
		<-settled
		return fmt.Errorf("consume: %w", err)
	}
	w.ready.Store(true)
	w.log.Info("worker consuming", "concurrency", w.o.Concurrency, "stream", w.o.Topology.TasksStream())

	var runErr error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err := <-consumeErr:
			if w.o.Recreate == nil {
				runErr = fmt.Errorf("consume: %w", err)
				break wait
			}
			w.ready.Store(false)
			cc.Stop()
			w.log.Warn("consumer deleted under the worker; recreating it", "err", err)
			next, err := w.recreate(ctx, consume)
			if err != nil {
				if ctx.Err() == nil {
					runErr = err
				}
				break wait
			}
			cc = next
			w.ready.Store(true)
		}
	}
	w.ready.Store(false)
	close(stopping)
	cc.Drain()
	<-cc.Closed()
	close(parkerStop)
	<-parkerDone
	close(jobs)

	finished := make(chan struct{})
	go func() {
		wg.Wait()
		// Tasks parked by the pool after the parker stopped.
		for _, j := range w.parking.takeAll() {
			w.progress.done(j.progressID)
			_ = j.msg.Nak()
		}
		close(pending)
		<-settled
		close(finished)
	}()
	w.log.Info("worker draining", "in_flight", w.inFlight.Load(), "timeout", w.o.DrainTimeout)
	t := time.NewTimer(w.o.DrainTimeout)
	defer t.Stop()
	select {
	case <-finished:
	case <-t.C:
		w.log.Warn("drain timeout: handing back in-flight tasks", "in_flight", w.inFlight.Load())
		cancelWork()
		<-finished
	}
	return runErr
}

// release feeds held tasks back to the pool when their time comes, until
// stop; then it hands every task still held back to the stream.
func (w *Worker) release(jobs chan<- job, stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	handBack := func(j job) {
		w.progress.done(j.progressID)
		_ = j.msg.Nak()
	}
	for {
		due, next := w.parking.due(time.Now())
		for i, j := range due {
			select {
			case jobs <- j:
			case <-stop:
				for _, j := range due[i:] {
					handBack(j)
				}
				for _, j := range w.parking.takeAll() {
					handBack(j)
				}
				return
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-stop:
			for _, j := range w.parking.takeAll() {
				handBack(j)
			}
			return
		case <-w.parking.wake:
		case <-timer.C:
		}
	}
}

// park holds j until its route may serve it again; false when the parking
// is full and the caller must settle the task itself.
func (w *Worker) park(route string, j job, wait time.Duration) bool {
	if !w.parking.hold(route, j, time.Now().Add(wait)) {
		return false
	}
	w.inFlight.Add(-1)
	return true
}

// recreate makes the consumer again and consumes from it, retrying with
// backoff until it works or ctx ends.
func (w *Worker) recreate(ctx context.Context, consume func(jetstream.Consumer) (jetstream.ConsumeContext, error)) (jetstream.ConsumeContext, error) {
	delay := 100 * time.Millisecond
	for {
		c, err := w.o.Recreate(ctx)
		if err == nil {
			var cc jetstream.ConsumeContext
			if cc, err = consume(c); err == nil {
				w.log.Info("consumer recreated; consuming again")
				return cc, nil
			}
		}
		w.log.Warn("recreate consumer", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("recreate consumer: %w", ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// process handles one delivery of a task, start to settle.
func (w *Worker) process(ctx context.Context, j job, pending chan<- *pendingResult) {
	msg, pid := j.msg, j.progressID
	w.inFlight.Add(1)
	handedOff := false
	defer func() {
		if !handedOff {
			w.progress.done(pid)
			w.inFlight.Add(-1)
		}
	}()
	start := time.Now()

	var seq uint64
	delivered := 1
	if meta, err := msg.Metadata(); err == nil {
		seq, delivered = meta.Sequence.Stream, int(meta.NumDelivered)
	}
	typ, _ := w.o.Topology.TaskType(msg.Subject())
	t, err := task.Parse(msg.Subject(), typ, msg.Headers(), msg.Data(), seq, task.ParseOptions{MaxPayload: w.o.MaxPayload, Reply: w.o.Reply})
	span := trace.SpanFromContext(ctx) // a no-op span, without tracing
	if w.traced {
		ctx, span = tracing.StartProcess(ctx, w.o.Tracer, w.o.Propagator, tracing.ProcessInfo{
			Subject: msg.Subject(), Type: t.Type, TaskID: t.ID, Consumer: bus.DefaultConsumer,
			Delivered: delivered, BodySize: len(t.Payload), Header: t.Header,
		})
	}
	spanKept := false // by the settler, with the task
	defer func() {
		if !spanKept {
			span.End()
		}
	}()
	if err != nil {
		w.settle(ctx, start, msg, t, delivered, nil, err)
		return
	}
	if t.Expired(start) {
		w.settle(ctx, start, msg, t, delivered, nil, fmt.Errorf("%w at %s", ErrExpired, t.Deadline.Format(time.RFC3339)))
		return
	}
	// At-least-once delivery: a redelivered task whose result is already
	// stored was done before the worker could ack it.
	if delivered > 1 {
		if stored, err := w.results.GetLastMsgForSubject(ctx, w.o.Topology.ResultSubject(t.Type, t.ID)); err == nil {
			w.duplicates.Add(1)
			w.observe(t.Type, OutcomeDuplicate, "", time.Since(start))
			if t.ReplyTo != "" {
				_ = w.o.Conn.PublishMsg(&nats.Msg{Subject: t.ReplyTo, Header: stored.Header, Data: stored.Data})
			}
			_ = msg.Ack()
			return
		}
	}
	route, err := w.o.Router.Route(t.Type)
	if err != nil {
		w.settle(ctx, start, msg, t, delivered, nil, err)
		return
	}
	// The cache answers first: a hit needs no backend, even in an outage.
	pol, cacheable := w.o.CachePolicies[route.Name]
	cacheable = cacheable && w.o.Cache != nil
	var key string
	noCache := false
	if cacheable {
		key = cache.Key(t.Type, t.Payload, t.Header, pol.KeyHeaders)
		if noCache = cache.NoCache(t.Header); !noCache {
			lctx, lspan := ctx, trace.Span(nil)
			if span.IsRecording() {
				lctx, lspan = tracing.StartInternal(ctx, w.o.Tracer, "cache lookup")
			}
			e, ok := w.o.Cache.Get(lctx, key, pol)
			if lspan != nil {
				lspan.SetAttributes(tracing.AttrCacheHit.Bool(ok))
				lspan.End()
			}
			if ok {
				handedOff = w.store(ctx, j, t, delivered, answer{body: e.Body, backend: task.BackendCache, cache: task.CacheHit}, start, span, pending)
				spanKept = handedOff
				return
			}
		}
	}

	// An outage or a pause holds the task rather than spending a delivery.
	if w.parking.paused(route.Name) {
		if handedOff = w.park(route.Name, j, 0); handedOff {
			return
		}
	} else if down, wait := route.Unavailable(); down {
		if handedOff = w.park(route.Name, j, wait); handedOff {
			return
		}
	}

	// Task-Deadline bounds the whole task; the route may bound it further.
	tctx := ctx
	if !t.Deadline.IsZero() {
		var cancel context.CancelFunc
		tctx, cancel = context.WithDeadline(ctx, t.Deadline)
		defer cancel()
	}
	w.progress.calling(pid, route.Budget())
	req := &handlers.Request{TaskID: t.ID, Type: t.Type, Payload: t.Payload, Header: t.Header}
	var ans answer
	switch {
	case !cacheable:
		ans, err = w.call(tctx, route, req)
	case noCache:
		// Asked fresh: its own call, whose result refreshes the entry.
		if ans, err = w.call(tctx, route, req); err == nil {
			w.o.Cache.Set(key, pol, ans.body, ans.backend)
		}
	default:
		// Identical tasks in flight at once share one call.
		var own answer
		e, follower, derr := w.o.Cache.Do(key, pol, func() ([]byte, string, error) {
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
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ErrShutdown, err)
		} else if errors.Is(err, resilience.ErrUnavailable) {
			// Refused by every breaker (a half-open one had its trial
			// calls out): look again shortly, still without a delivery.
			w.progress.waiting(pid)
			if handedOff = w.park(route.Name, j, max(resilience.RetryAfter(err), unavailableRecheck)); handedOff {
				return
			}
		}
		w.settle(ctx, start, msg, t, delivered, resilience.AttemptsOf(err), err)
		return
	}
	handedOff = w.store(ctx, j, t, delivered, ans, start, span, pending)
	spanKept = handedOff
}

// answer is a task's successful outcome, from a backend or the cache.
type answer struct {
	body     []byte
	backend  string
	attempts []resilience.Attempt
	cache    string // Task-Cache
}

// call runs the route.
func (w *Worker) call(ctx context.Context, route *resilience.Route, req *handlers.Request) (answer, error) {
	a, err := route.Do(ctx, req)
	if err != nil {
		return answer{}, err
	}
	return answer{body: a.Response.Body, backend: a.Backend, attempts: a.Attempts, cache: task.CacheMiss}, nil
}

// store starts storing the result and hands the task to the settler; it
// reports whether it did (false: the task was settled as failed here).
func (w *Worker) store(ctx context.Context, j job, t *task.Task, delivered int, ans answer, start time.Time, span trace.Span, pending chan<- *pendingResult) bool {
	p, err := w.publishResult(ctx, t, ans, time.Since(start))
	if err != nil {
		w.settle(ctx, start, j.msg, t, delivered, ans.attempts, err)
		return false
	}
	p.msg, p.delivered, p.progressID, p.span, p.start = j.msg, delivered, j.progressID, span, start
	pending <- p
	return true
}

// unavailableRecheck is how soon a task refused by half-open breakers
// (their trial calls in flight) looks again.
const unavailableRecheck = 100 * time.Millisecond

// job is a delivered task on its way to a pool goroutine.
type job struct {
	msg        jetstream.Msg
	progressID uint64
}

// pendingResult is a task whose result is published but not yet
// acknowledged by the server.
type pendingResult struct {
	msg        jetstream.Msg
	t          *task.Task
	delivered  int
	fut        jetstream.PubAckFuture
	result     *nats.Msg
	attempts   []resilience.Attempt
	progressID uint64
	span       trace.Span
	start      time.Time
}

// settleResult waits for the result's publish ack, then acks the task and
// answers Task-Reply-To: the task leaves TASKS only once its result is
// stored. A failed store is settled like a transient failure.
func (w *Worker) settleResult(ctx context.Context, p *pendingResult) {
	defer w.inFlight.Add(-1)
	defer w.progress.done(p.progressID)
	defer p.span.End()
	ctx = trace.ContextWithSpan(ctx, p.span)
	select {
	case <-p.fut.Ok():
	case err := <-p.fut.Err():
		w.settle(ctx, p.start, p.msg, p.t, p.delivered, p.attempts, w.resultErr(err))
		return
	case <-ctx.Done():
		w.settle(ctx, p.start, p.msg, p.t, p.delivered, p.attempts, fmt.Errorf("%w: result not acknowledged", ErrShutdown))
		return
	}
	_ = p.msg.Ack()
	w.done.Add(1)
	w.observe(p.t.Type, OutcomeDone, "", time.Since(p.start))
	if p.t.ReplyTo != "" {
		reply := &nats.Msg{Subject: p.t.ReplyTo, Header: p.result.Header, Data: p.result.Data}
		if err := w.o.Conn.PublishMsg(reply); err != nil {
			w.log.Warn("reply", "task_id", p.t.ID, "reply_to", p.t.ReplyTo, "err", err)
		}
	}
}

// publishResult starts storing the result in RESULTS; the returned
// pendingResult carries the publish future for settleResult.
func (w *Worker) publishResult(ctx context.Context, t *task.Task, ans answer, took time.Duration) (*pendingResult, error) {
	// Direct assignment: the names are canonical already, and Set would
	// canonicalise each one again on the hot path.
	h := nats.Header{
		task.HeaderID:       {t.ID},
		task.HeaderType:     {t.Type},
		task.HeaderStatus:   {task.StatusOK},
		task.HeaderBackend:  {ans.backend},
		task.HeaderAttempts: {strconv.Itoa(len(ans.attempts))},
		task.HeaderCache:    {ans.cache},
		task.HeaderDuration: {took.String()},
	}
	subject := w.o.Topology.ResultSubject(t.Type, t.ID)
	if trace.SpanFromContext(ctx).IsRecording() {
		// The result's own publish span; its context goes with the result.
		_, span := tracing.StartPublish(ctx, w.o.Tracer, w.o.Propagator, subject, "", h, len(ans.body))
		span.End()
	} else {
		// No span of ours: the task's trace context is passed on as it came.
		for _, k := range []string{"traceparent", "tracestate", "baggage"} {
			if v, ok := t.Header[k]; ok {
				h[k] = v
			}
		}
	}
	msg := &nats.Msg{Subject: subject, Header: h, Data: ans.body}
	// No Nats-Msg-Id: RESULTS keeps one message per subject, so a second
	// store of the same result (a redelivery racing a slow ack) replaces
	// the first instead of adding one, without the dedupe table's cost.
	fut, err := w.o.JS.PublishMsgAsync(msg)
	if err != nil {
		return nil, w.resultErr(err)
	}
	return &pendingResult{t: t, fut: fut, result: msg, attempts: ans.attempts}, nil
}

func (w *Worker) resultErr(err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		return fmt.Errorf("%w: store result: %w", ErrInvalidResult, err)
	}
	return handlers.Transient(fmt.Errorf("store result: %w", err))
}

// settle carries out Decide's verdict for a failed delivery.
func (w *Worker) settle(ctx context.Context, start time.Time, msg jetstream.Msg, t *task.Task, delivered int, attempts []resilience.Attempt, cause error) {
	fate := Decide(cause, delivered, w.o.MaxDeliver)
	if !trace.SpanContextFromContext(ctx).IsValid() && t.Header != nil {
		// No span of ours (tracing off): the log lines still carry the
		// trace the task came with.
		ctx = tracing.Extract(ctx, w.o.Propagator, t.Header)
	}
	log := w.log.With("task_id", t.ID, "type", t.Type, "delivery", delivered, "fate", fate.Action.String())
	switch fate.Action {
	case Ack:
		_ = msg.Ack()
	case Redeliver:
		w.redelivered.Add(1)
		w.observe(t.Type, OutcomeRedelivered, "", time.Since(start))
		if w.o.History != nil && len(attempts) > 0 && !errors.Is(cause, ErrShutdown) {
			if err := w.o.History.Append(ctx, t.Seq, w.records(attempts, delivered)); err != nil {
				log.Warn("attempt history not kept", "err", err)
			}
		}
		log.InfoContext(ctx, "task will be redelivered", "delay", fate.Delay, "err", dlq.Redact(cause.Error()))
		if fate.Delay > 0 {
			_ = msg.NakWithDelay(fate.Delay)
		} else {
			_ = msg.Nak()
		}
	case DeadLetter:
		w.failed.Add(1)
		e := &dlq.Entry{
			ID: t.ID, Type: t.Type, Subject: t.Subject, Seq: t.Seq,
			Header: t.Header, Payload: t.Payload, Reason: fate.Reason, Err: cause,
			Attempts: attemptsSoFar(len(attempts), delivered, fate.Reason), Backends: backendsOf(attempts),
		}
		if w.o.History != nil {
			if delivered > 1 {
				earlier, err := w.o.History.Load(ctx, t.Seq)
				if err != nil {
					log.Warn("attempt history not read", "err", err)
				}
				e.History = earlier
				e.Attempts = max(e.Attempts, len(earlier)+len(attempts))
			}
			e.History = append(e.History, w.records(attempts, delivered)...)
		}
		if e.Type == "" {
			e.Type = "_invalid" // a subject without a type still needs a DLQ subject
		}
		dctx, dspan := ctx, trace.Span(nil)
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.SetAttributes(tracing.AttrDLQReason.String(string(fate.Reason)))
			span.SetStatus(codes.Error, dlq.Redact(cause.Error()))
			dctx, dspan = tracing.StartPublish(ctx, w.o.Tracer, w.o.Propagator, w.o.Topology.DLQSubject(e.Type), "", nats.Header{}, len(e.Payload))
		}
		err := w.o.DLQ.Write(dctx, e)
		if dspan != nil {
			tracing.End(dspan, err)
		}
		if err != nil {
			// Never drop a task: it stays in TASKS and comes back.
			log.ErrorContext(ctx, "dead-letter failed; task will be redelivered", "err", err)
			w.redelivered.Add(1)
			_ = msg.NakWithDelay(redeliverDelay(delivered, 0))
			return
		}
		w.dead.Add(1)
		w.observe(t.Type, OutcomeDeadLettered, fate.Reason, time.Since(start))
		log.WarnContext(ctx, "task dead-lettered", "reason", fate.Reason, "err", dlq.Redact(cause.Error()))
		if t.ReplyTo != "" {
			h := w.o.DLQ.Header(e)
			h.Set(task.HeaderID, t.ID)
			h.Set(task.HeaderType, t.Type)
			h.Set(task.HeaderStatus, task.StatusError)
			_ = w.o.Conn.PublishMsg(&nats.Msg{Subject: t.ReplyTo, Header: h})
		}
		_ = msg.TermWithReason(string(fate.Reason))
		if w.o.History != nil && delivered > 1 {
			_ = w.o.History.Delete(ctx, t.Seq)
		}
	}
}

func (w *Worker) observe(typ, outcome string, reason dlq.Reason, took time.Duration) {
	if w.o.Observe != nil {
		w.o.Observe(Settled{Type: typ, Outcome: outcome, Reason: reason, Took: took})
	}
}

// records turns one delivery's attempts into history records.
func (w *Worker) records(attempts []resilience.Attempt, delivery int) []dlq.Record {
	out := make([]dlq.Record, len(attempts))
	for i, a := range attempts {
		class := "ok"
		switch {
		case a.Err == nil:
		case errors.Is(a.Err, resilience.ErrInvalidResult):
			class = "invalid"
		case handlers.IsPermanent(a.Err):
			class = "permanent"
		default:
			class = "transient"
		}
		out[i] = dlq.NewRecord(delivery, a.Backend, class, handlers.StatusOf(a.Err), a.Duration, a.Start, w.o.WorkerID, a.Err)
	}
	return out
}

// attemptsSoFar counts the backend calls of a task: those of this delivery
// and, for a task exhausted over several deliveries, at least one per
// earlier delivery (each was redelivered after a failed call). The exact
// per-attempt history arrives with the DLQ history.
func attemptsSoFar(calls, delivered int, reason dlq.Reason) int {
	if reason == dlq.Exhausted && delivered > 1 {
		return calls + delivered - 1
	}
	return calls
}

func backendsOf(attempts []resilience.Attempt) []string {
	var out []string
	seen := map[string]bool{}
	for _, a := range attempts {
		if !seen[a.Backend] {
			seen[a.Backend] = true
			out = append(out, a.Backend)
		}
	}
	return out
}
