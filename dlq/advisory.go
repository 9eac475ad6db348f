package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/task"
)

// Defaults of CrashLoopOptions.
const (
	// DefaultCrashLoopConsumer is the durable consumer on ADVISORIES that
	// every worker's watcher shares, so each advisory is handled once.
	DefaultCrashLoopConsumer = "crash-loop"
	// DefaultReconcileEvery is how often the reconcile looks for stranded
	// tasks after the one at start.
	DefaultReconcileEvery = 2 * time.Minute
	// DefaultReconcileSettle is how long a reconcile lets candidates
	// settle before it acts (see Reconcile).
	DefaultReconcileSettle = 2 * time.Second
	// DefaultRetryDelay is the first delay before an advisory whose task
	// could not be moved is tried again; it doubles with each failure up
	// to a minute.
	DefaultRetryDelay = 5 * time.Second
	// DefaultHandleTimeout bounds moving one task.
	DefaultHandleTimeout = 10 * time.Second
)

const (
	maxRetryDelay  = time.Minute
	advisoryBatch  = 8
	advisoryWait   = 30 * time.Second
	fetchErrorWait = time.Second
)

// CrashLoopOptions configure a CrashLoopWatcher.
type CrashLoopOptions struct {
	// Conn is not used any more (advisories are read from the ADVISORIES
	// stream); it is accepted so that existing callers compile.
	//
	// Deprecated: leave it nil.
	Conn *nats.Conn
	// JS reaches TASKS, ADVISORIES and the consumers. Required.
	JS       jetstream.JetStream
	Topology bus.Topology
	// Consumer is the durable consumer on TASKS whose given-up tasks to
	// act on (bus.DefaultConsumer for workers). Required.
	Consumer string
	// Writer stores the DLQ copies. Required.
	Writer *Writer
	// History, when set, supplies the attempts recorded before the loop.
	History *History
	Logger  *slog.Logger
	// Durable is the consumer on ADVISORIES; default
	// DefaultCrashLoopConsumer.
	Durable string
	// ReconcileEvery is the interval between reconciles after the one at
	// start; default DefaultReconcileEvery; negative: only at start.
	ReconcileEvery time.Duration
	// ReconcileSettle: default DefaultReconcileSettle.
	ReconcileSettle time.Duration
	// RetryDelay: default DefaultRetryDelay.
	RetryDelay time.Duration
	// HandleTimeout: default DefaultHandleTimeout.
	HandleTimeout time.Duration
}

// CrashLoopWatcher moves to the DLQ, as max_deliveries, the tasks that
// reached the TASKS consumer's max_deliver without ever reporting an
// outcome (the worker died, or a backend hung it, on every delivery). The
// server then no longer delivers such a task but keeps it in TASKS, and
// says so once with a max-deliveries advisory.
//
// Two ways find them, each idempotent (the DLQ copy is deduplicated by the
// task's TASKS sequence, and a task already gone is left alone):
//   - the advisories, captured by the ADVISORIES stream whether or not a
//     worker runs, read through a durable consumer that all watchers share:
//     an advisory is acknowledged only after the task's DLQ copy is stored
//     and the task deleted; a failure is retried later (NakWithDelay), for
//     as long as it takes;
//   - Reconcile, at start and every ReconcileEvery, for any task left
//     behind without an advisory (one published before ADVISORIES existed,
//     or lost in a leader change).
type CrashLoopWatcher struct {
	o     CrashLoopOptions
	tasks jetstream.Stream
	adv   jetstream.Consumer
}

// NewCrashLoopWatcher checks o, opens TASKS and creates (or updates) the
// shared consumer on ADVISORIES, which must exist (bus.EnsureStreams).
// Bad options are an error wrapping ErrInvalidOption.
func NewCrashLoopWatcher(ctx context.Context, o CrashLoopOptions) (*CrashLoopWatcher, error) {
	if o.JS == nil || o.Writer == nil || o.Consumer == "" {
		return nil, fmt.Errorf("%w: crash-loop watcher needs JS, Writer and Consumer", ErrInvalidOption)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Durable == "" {
		o.Durable = DefaultCrashLoopConsumer
	}
	if o.ReconcileEvery == 0 {
		o.ReconcileEvery = DefaultReconcileEvery
	}
	if o.ReconcileSettle <= 0 {
		o.ReconcileSettle = DefaultReconcileSettle
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = DefaultRetryDelay
	}
	if o.HandleTimeout <= 0 {
		o.HandleTimeout = DefaultHandleTimeout
	}
	s, err := o.JS.Stream(ctx, o.Topology.TasksStream())
	if err != nil {
		return nil, fmt.Errorf("dlq: tasks stream: %w", err)
	}
	c := &CrashLoopWatcher{o: o, tasks: s}
	if err := c.ensureConsumer(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *CrashLoopWatcher) ensureConsumer(ctx context.Context) error {
	cfg := jetstream.ConsumerConfig{
		Durable:       c.o.Durable,
		Description:   "Breakwater workers: max-deliveries advisories of " + c.o.Topology.TasksStream() + "/" + c.o.Consumer,
		FilterSubject: c.AdvisorySubject(),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		// A batch is handled one task after the other within AckWait.
		AckWait: advisoryBatch*c.o.HandleTimeout + 10*time.Second,
		// Never given up: a task must not stay stranded because its
		// advisory failed a few times (the DLQ was full, the server away).
		MaxDeliver:    -1,
		MaxAckPending: 256,
	}
	cons, err := c.o.JS.CreateOrUpdateConsumer(ctx, c.o.Topology.AdvisoriesStream(), cfg)
	if err != nil {
		return fmt.Errorf("dlq: consumer %s on %s: %w", cfg.Durable, c.o.Topology.AdvisoriesStream(), err)
	}
	c.adv = cons
	return nil
}

// AdvisorySubject is the server's max-deliveries advisory for the watched
// consumer.
func (c *CrashLoopWatcher) AdvisorySubject() string {
	return c.o.Topology.MaxDeliveriesAdvisorySubject(c.o.Consumer)
}

// maxDeliveriesAdvisory is the part of the server's advisory we read.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// Run handles advisories, and reconciles at start and every
// ReconcileEvery, until ctx ends; it returns nil then, after the work in
// hand is done (an advisory being handled when ctx ends is handed back and
// handled by another watcher). Errors are logged, never fatal: whatever
// failed is tried again later.
func (c *CrashLoopWatcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { c.reconcileLoop(ctx) })
	defer wg.Wait()
	for ctx.Err() == nil {
		if err := c.fetch(ctx); err != nil && ctx.Err() == nil {
			c.o.Logger.Warn("reading max-deliveries advisories", "stream", c.o.Topology.AdvisoriesStream(), "err", err)
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
				if err := c.ensureConsumer(ctx); err != nil && ctx.Err() == nil {
					c.o.Logger.Warn("re-creating the advisories consumer", "err", err)
				}
			}
			pause(ctx, fetchErrorWait)
		}
	}
	return nil
}

// fetch handles one batch of advisories.
func (c *CrashLoopWatcher) fetch(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, advisoryWait)
	defer cancel()
	batch, err := c.adv.Fetch(advisoryBatch, jetstream.FetchContext(fctx))
	if err != nil {
		return err
	}
	for m := range batch.Messages() {
		c.handleAdvisory(ctx, m)
	}
	err = batch.Error()
	if err == nil || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (c *CrashLoopWatcher) handleAdvisory(ctx context.Context, m jetstream.Msg) {
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(m.Data(), &adv); err != nil || adv.StreamSeq == 0 || adv.Stream != c.o.Topology.TasksStream() {
		c.o.Logger.Warn("unreadable max-deliveries advisory dropped", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	if _, err := c.move(ctx, adv.StreamSeq, adv.Deliveries, "advisory"); err != nil {
		if ctx.Err() != nil {
			_ = m.Nak() // shutting down: another watcher takes it now
			return
		}
		n := uint64(1)
		if md, merr := m.Metadata(); merr == nil {
			n = md.NumDelivered
		}
		delay := retryDelay(c.o.RetryDelay, n)
		c.o.Logger.Error("crash-looping task not moved to the DLQ; will retry", "seq", adv.StreamSeq, "retry_in", delay, "err", err)
		_ = m.NakWithDelay(delay)
		return
	}
	if err := m.Ack(); err != nil {
		// Redelivered after AckWait, then found settled: nothing lost.
		c.o.Logger.Warn("max-deliveries advisory not acknowledged", "seq", adv.StreamSeq, "err", err)
	}
}

func retryDelay(base time.Duration, deliveries uint64) time.Duration {
	d := base
	for i := uint64(1); i < deliveries && d < maxRetryDelay; i++ {
		d *= 2
	}
	return min(d, maxRetryDelay)
}

// Handle moves the task at seq (delivered deliveries times) to the DLQ as
// max_deliveries. A task no longer in TASKS is not an error.
func (c *CrashLoopWatcher) Handle(ctx context.Context, seq uint64, deliveries int) error {
	_, err := c.move(ctx, seq, deliveries, "advisory")
	return err
}

// move moves the task at seq and reports whether it was there to move.
func (c *CrashLoopWatcher) move(ctx context.Context, seq uint64, deliveries int, via string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.o.HandleTimeout)
	defer cancel()
	raw, err := c.tasks.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil // settled after all, or moved by another watcher
	}
	if err != nil {
		return false, fmt.Errorf("read task %d: %w", seq, err)
	}
	typ, _ := c.o.Topology.TaskType(raw.Subject)
	if typ == "" {
		typ = "_invalid"
	}
	id := raw.Header.Get(task.HeaderID)
	if id == "" {
		id = raw.Header.Get(task.HeaderMsgID)
	}
	if id == "" {
		id = fmt.Sprint(seq)
	}
	cause := fmt.Errorf("delivered %d times without an outcome: the worker crashed or hung each time", deliveries)
	if via == "reconcile" {
		cause = fmt.Errorf("found in %s after its %d deliveries without an outcome (no advisory handled): the worker crashed or hung each time",
			c.o.Topology.TasksStream(), deliveries)
	}
	e := &Entry{
		ID: id, Type: typ, Subject: raw.Subject, Seq: seq, Header: raw.Header, Payload: raw.Data,
		Reason: MaxDeliveries, Err: cause, Attempts: deliveries,
	}
	if c.o.History != nil {
		if recs, err := c.o.History.Load(ctx, seq); err == nil {
			e.History = recs
			e.Backends = backendsOf(recs)
		}
	}
	stored, err := c.o.Writer.Store(ctx, e)
	if err != nil {
		return false, err
	}
	if err := c.tasks.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, fmt.Errorf("remove task %d from %s: %w", seq, c.o.Topology.TasksStream(), err)
	}
	if c.o.History != nil {
		_ = c.o.History.Delete(ctx, seq)
	}
	c.o.Logger.Warn("crash-looping task dead-lettered", "task_id", id, "type", typ, "seq", seq,
		"reason", MaxDeliveries, "deliveries", deliveries, "via", via, "dlq_seq", stored.Seq)
	return true, nil
}

func (c *CrashLoopWatcher) reconcileLoop(ctx context.Context) {
	for {
		if n, err := c.Reconcile(ctx); err != nil && ctx.Err() == nil {
			c.o.Logger.Warn("reconcile of stranded tasks failed; will retry", "err", err)
		} else if n > 0 {
			c.o.Logger.Warn("reconcile moved stranded tasks to the DLQ", "tasks", n)
		}
		if c.o.ReconcileEvery < 0 || !pause(ctx, c.o.ReconcileEvery) {
			return
		}
	}
}

// Reconcile moves to the DLQ, as max_deliveries, every task the TASKS
// consumer gave up on that is still in TASKS, and returns how many it
// moved. Such a task was delivered (its sequence is at or below the
// consumer's Delivered.Stream), is still in the stream, and is no longer
// ack-pending. The server tells neither which messages are pending nor
// moves the ack floor past a given-up one (it stays below it for good), so
// Reconcile acts only while the consumer has nothing ack-pending: then
// every delivered message still in TASKS was given up. It waits
// ReconcileSettle before acting, so that a message acknowledged just
// before (removed from the work queue a moment after the ack) is gone.
// When the consumer is busy it does nothing and the next run tries again:
// the advisories are the fast path, this is the safety net.
func (c *CrashLoopWatcher) Reconcile(ctx context.Context) (int, error) {
	cons, err := c.o.JS.Consumer(ctx, c.o.Topology.TasksStream(), c.o.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, nil // no worker has started consuming yet
	}
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", c.o.Consumer, err)
	}
	info := cons.CachedInfo()
	// Only a consumer that delivers the whole stream has delivered every
	// matching message up to Delivered.Stream (one started later never
	// delivers those before its start).
	if info.Config.MaxDeliver <= 0 || info.Config.DeliverPolicy != jetstream.DeliverAllPolicy ||
		info.NumAckPending > 0 || info.Delivered.Stream == 0 {
		return 0, nil
	}
	seqs, err := c.delivered(ctx, filters(info.Config), info.Delivered.Stream)
	if err != nil || len(seqs) == 0 {
		return 0, err
	}
	if !pause(ctx, c.o.ReconcileSettle) {
		return 0, ctx.Err()
	}
	again, err := c.o.JS.Consumer(ctx, c.o.Topology.TasksStream(), c.o.Consumer)
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", c.o.Consumer, err)
	}
	if !again.CachedInfo().Created.Equal(info.Created) {
		return 0, nil // re-created meanwhile: its deliveries start over
	}
	moved := 0
	for _, seq := range seqs {
		ok, err := c.move(ctx, seq, info.Config.MaxDeliver, "reconcile")
		if err != nil {
			return moved, fmt.Errorf("task %d: %w", seq, err)
		}
		if ok {
			moved++
		}
	}
	return moved, nil
}

// delivered lists the sequences of the messages in TASKS that match one of
// filters, at or below upTo.
func (c *CrashLoopWatcher) delivered(ctx context.Context, filters []string, upTo uint64) ([]uint64, error) {
	var seqs []uint64
	for _, f := range filters {
		for next := uint64(1); next <= upTo; {
			m, err := c.tasks.GetMsg(ctx, next, jetstream.WithGetMsgSubject(f))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("scan %s: %w", c.o.Topology.TasksStream(), err)
			}
			if m.Sequence > upTo {
				break
			}
			seqs = append(seqs, m.Sequence)
			next = m.Sequence + 1
		}
	}
	slices.Sort(seqs)
	return slices.Compact(seqs), nil
}

func filters(cfg jetstream.ConsumerConfig) []string {
	switch {
	case len(cfg.FilterSubjects) > 0:
		return cfg.FilterSubjects
	case cfg.FilterSubject != "":
		return []string{cfg.FilterSubject}
	default:
		return []string{">"}
	}
}

// pause waits d or until ctx ends; it reports whether d passed.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func backendsOf(recs []Record) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range recs {
		if !seen[r.Backend] {
			seen[r.Backend] = true
			out = append(out, r.Backend)
		}
	}
	return out
}
