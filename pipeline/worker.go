package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/cache"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/task"
)

// Options configure a Worker. JS, Consumer, Router and DLQ are required.
type Options struct {
	// JS reads stored results (a redelivered task's, for dedupe).
	JS jetstream.JetStream
	// Conn publishes replies to Task-Reply-To (core NATS), and results
	// through a JetStream publisher of the worker's own (its completion
	// callbacks settle the tasks; ResultWindow bounds it).
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
	// MaxDeliver is the worker's delivery limit: the delivery of a
	// transiently failing task that reaches it is dead-lettered as
	// exhausted. Default 5. The consumer's own limit must leave
	// DeliveryHeadroom above it (ConsumerMaxDeliver), so that a
	// dead-letter that fails on that delivery is tried again.
	MaxDeliver int
	// Prefetch is how many tasks the worker holds beyond Concurrency,
	// fetched ahead so that a goroutine that frees finds the next task
	// waiting. Default Concurrency/4, at least 1. Tasks whose result
	// awaits the server's acknowledgement hold no room (their work is
	// done); the async publish window bounds those.
	Prefetch int
	// ResultWindow bounds the results published and awaiting the
	// server's acknowledgement (the result publisher's async window);
	// past it a finished task waits for room, it is not redelivered.
	// Default 4×Concurrency+256.
	ResultWindow int
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
	// OnFired, when set, is told of each task the server's scheduler
	// fired, on its first delivery: its type, whether a periodic schedule
	// fired it, and how late its processing starts (now − task.Due).
	OnFired func(typ string, periodic bool, late time.Duration)
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
	Outcome Outcome
	Reason  dlq.Reason // with dead_lettered
	Took    time.Duration
}

// Stats are counted on the task path.
type Stats struct {
	Done, Failed, DeadLettered, Redelivered, Duplicates uint64
	InFlight                                            int64
	// Parked counts the tasks held until their route can serve them.
	Parked int
	// SettleErrors counts Ack, Nak, Term and InProgress requests that
	// could not be sent (the connection was down): the server then
	// redelivers the task after the ack wait.
	SettleErrors uint64
}

// DeliveryHeadroom is how many deliveries the consumer allows beyond the
// worker's MaxDeliver: a task whose dead-letter failed on its last
// delivery (the DLQ stream unreachable, say) comes back to be
// dead-lettered again instead of being given up by the server.
const DeliveryHeadroom = 2

// ConsumerMaxDeliver is the consumer's delivery limit for a worker whose
// MaxDeliver is maxDeliver (0: the default 5).
func ConsumerMaxDeliver(maxDeliver int) int {
	if maxDeliver <= 0 {
		maxDeliver = 5
	}
	return maxDeliver + DeliveryHeadroom
}

// Worker runs the task pipeline. Create it with New and run it with Run.
//
// A task goes through three parts: the puller fetches only as many tasks
// as there is room for; process takes one from parsing to the backend's
// answer and returns an outcome; the settler carries the outcome out (the
// result's store, Ack, Nak, Term, the DLQ copy, the reply, holding it while
// its route cannot serve, and keeping it alive with InProgress). Nothing
// else acknowledges a message.
type Worker struct {
	o       Options
	log     *slog.Logger
	results jetstream.Stream
	settler *settler
	traced  bool // spans made; else trace headers are passed through
	// everyPrefix is the subject prefix of periodic schedules, whose
	// firings get an id each (task.Task.Firing).
	everyPrefix string

	ready   atomic.Bool
	stats   counters
	running running
	// live holds the routes, reply rules and cache (SetLive replaces
	// them); the same fields of o are only the first ones.
	live atomic.Pointer[generation]
}

// counters are the Stats, counted where things happen.
type counters struct {
	done, failed, dead, redelivered, duplicates, settleErrors atomic.Uint64
	inFlight                                                  atomic.Int64
}

// delivery is one delivered task message, tracked from its arrival until
// it is settled.
type delivery struct {
	msg *nats.Msg // a JetStream delivery: its reply subject takes the acks
	pid uint64    // progress id
	// settled is set by whoever settles the message first: the settler,
	// or a drain that timed out and handed it back. Later settles of the
	// same delivery do nothing.
	settled atomic.Bool
	// roomFreed: its room in the puller was given back before it was
	// settled (its result awaiting the server's acknowledgement).
	roomFreed bool
	// store is set while its result awaits the server's acknowledgement.
	store pendingAck
}

// ErrInvalidOption: Options (or a Live given to SetLive) lack what the
// worker needs.
var ErrInvalidOption = errors.New("pipeline: invalid option")

// New checks o and returns a Worker; it does not start anything.
func New(ctx context.Context, o Options) (*Worker, error) {
	if o.JS == nil || o.Consumer == nil || o.Router == nil || o.DLQ == nil || o.Conn == nil {
		return nil, fmt.Errorf("%w: JS, Conn, Consumer, Router and DLQ are required", ErrInvalidOption)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Prefetch <= 0 {
		o.Prefetch = max(1, o.Concurrency/4)
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.ResultWindow <= 0 {
		o.ResultWindow = 4*o.Concurrency + 256
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
	w := &Worker{o: o, log: o.Logger, results: results, traced: traced,
		everyPrefix: strings.TrimSuffix(o.Topology.TaskSubject("x"), "tasks.x") + "schedules.every."}
	if w.settler, err = newSettler(w); err != nil {
		return nil, err
	}
	w.live.Store(&generation{Live: Live{Router: o.Router, Reply: o.Reply, Cache: o.Cache, CachePolicies: o.CachePolicies}})
	return w, nil
}

// Ready reports whether the worker is pulling tasks (false before Run has
// started consuming and once it is draining).
func (w *Worker) Ready() bool { return w.ready.Load() }

// Stats returns the counters so far.
func (w *Worker) Stats() Stats {
	c := &w.stats
	return Stats{
		Done: c.done.Load(), Failed: c.failed.Load(), DeadLettered: c.dead.Load(),
		Redelivered: c.redelivered.Load(), Duplicates: c.duplicates.Load(),
		InFlight: c.inFlight.Load(), Parked: w.settler.parking.len(), SettleErrors: c.settleErrors.Load(),
	}
}

// PausedRoutes lists the routes paused on this worker, sorted.
func (w *Worker) PausedRoutes() []string { return w.settler.parking.pausedRoutes() }

// PauseRoute stops serving the route's tasks: those that arrive are held
// (kept alive, no backend call, no delivery spent) until ResumeRoute.
func (w *Worker) PauseRoute(name string) error {
	if _, err := w.live.Load().Router.Route(name); err != nil {
		return err
	}
	w.settler.parking.setPaused(name, true)
	w.log.Warn("route paused", "route", name)
	return nil
}

// ResumeRoute serves the route's tasks again, the held ones first.
func (w *Worker) ResumeRoute(name string) error {
	if _, err := w.live.Load().Router.Route(name); err != nil {
		return err
	}
	w.settler.parking.setPaused(name, false)
	w.log.Info("route resumed", "route", name)
	return nil
}

// fetchExpiry bounds each pull request: how long an idle fetch waits for
// tasks, and so how long a drain waits for the open fetches to return
// (tasks they bring then are handed back at once).
const fetchExpiry = 2 * time.Second

// drainGrace is how long a drain that timed out waits for cancelled tasks
// to return before it hands back those still running (a backend that
// ignores its context) and returns without them.
const drainGrace = 2 * time.Second

// Run pulls and processes tasks until ctx ends, then drains: it stops
// pulling (open fetches return within 2 s; what they bring is handed back),
// hands held tasks back to the stream, and waits up to DrainTimeout for
// in-flight tasks. Those still running then are cancelled; any still
// running 2 s later (a backend that ignores its context) are handed back
// and left behind: Run returns without waiting for them, and what they do
// afterwards settles nothing. Run returns nil after a drain, or the error
// that stopped consuming.
func (w *Worker) Run(ctx context.Context) error {
	s := w.settler
	queue := make(chan *delivery, w.o.Concurrency+w.o.Prefetch+w.o.MaxParked)
	var stopping atomic.Bool

	// Tasks run under their own context so that a drain lets them finish;
	// it is cancelled only when the drain times out.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	pull := newPuller(w.o.Concurrency+w.o.Prefetch, fetchExpiry, w.log, w.o.Conn, apiPrefixOf(w.o.JS), func(m *nats.Msg) {
		d := &delivery{msg: m}
		if stopping.Load() {
			// Draining: hand the fetched task back at once.
			s.handBack(d)
			return
		}
		s.track(d)
		queue <- d // never blocks: the queue has room for all the puller asks for
	})
	s.pull = pull

	var bg sync.WaitGroup
	bgCtx, stopBackground := context.WithCancel(workCtx)
	// The result publisher outlives a drain's cancel of the tasks: the
	// answers to results already published still settle them.
	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		stopBackground()
		stopPub()
		bg.Wait()
	}()
	if err := s.pub.start(); err != nil {
		return err
	}
	bg.Go(func() { s.pub.run(pubCtx) })
	// The settler keeps long tasks alive and lets held tasks go.
	bg.Go(func() { s.progress.run(bgCtx) })
	parkerDone := make(chan struct{})
	parkerStop := make(chan struct{})
	go func() {
		defer close(parkerDone)
		s.release(queue, parkerStop)
	}()

	var pool sync.WaitGroup
	for range w.o.Concurrency {
		pool.Go(func() {
			slot := newRunSlot(workCtx)
			defer slot.cancel(nil)
			for d := range queue {
				s.settle(workCtx, d, w.process(workCtx, slot, d))
			}
		})
	}

	w.ready.Store(true)
	w.log.Info("worker consuming", "concurrency", w.o.Concurrency, "prefetch", w.o.Prefetch, "stream", w.o.Topology.TasksStream())
	runErr := w.consume(ctx, pull)
	w.ready.Store(false)
	stopping.Store(true)

	close(parkerStop)
	<-parkerDone
	close(queue)
	finished := make(chan struct{})
	go func() {
		pool.Wait()
		s.stores.Wait() // results awaiting the server's acknowledgement
		// Tasks the pool parked after the parker stopped.
		for _, d := range s.parking.takeAll() {
			s.handBack(d)
		}
		close(finished)
	}()
	w.log.Info("worker draining", "in_flight", w.stats.inFlight.Load(), "timeout", w.o.DrainTimeout.String())
	t := time.NewTimer(w.o.DrainTimeout)
	defer t.Stop()
	select {
	case <-finished:
		return runErr
	case <-t.C:
	}
	w.log.Warn("drain timeout: cancelling in-flight tasks", "in_flight", w.stats.inFlight.Load())
	cancelWork()
	t.Reset(drainGrace)
	select {
	case <-finished:
	case <-t.C:
		left := s.progress.takeAll()
		for _, d := range left {
			s.handBack(d)
		}
		w.log.Error("drain: tasks still running in backends that ignore cancellation were handed back",
			"tasks", len(left))
	}
	return runErr
}

// consume runs the puller until ctx ends, making the consumer again when
// it is deleted under the worker (if Options.Recreate allows).
func (w *Worker) consume(ctx context.Context, pull *puller) error {
	c := w.o.Consumer
	for {
		err := pull.run(ctx, c)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if w.o.Recreate == nil {
			return fmt.Errorf("consume: %w", err)
		}
		w.ready.Store(false)
		w.log.Warn("consumer deleted under the worker; recreating it", "err", err)
		if c, err = w.recreate(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		w.ready.Store(true)
	}
}

// recreate makes the consumer again, retrying with backoff until it works
// or ctx ends.
func (w *Worker) recreate(ctx context.Context) (jetstream.Consumer, error) {
	delay := 100 * time.Millisecond
	for {
		c, err := w.o.Recreate(ctx)
		if err == nil {
			w.log.Info("consumer recreated; consuming again")
			return c, nil
		}
		w.log.Warn("recreate consumer", "err", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("recreate consumer: %w", ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}
