package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
	"github.com/breakwater/breakwater/task"
	"github.com/breakwater/breakwater/tracing"
)

// settler is the one component that settles task messages: it stores
// results, acks, redelivers (Nak with a delay), dead-letters (the DLQ copy,
// then Term), answers Task-Reply-To, holds tasks whose route cannot serve
// them, and keeps every held message alive with InProgress. Decide, inside
// it, is the one place that picks a failed task's fate.
//
// settle runs on the pool goroutine that processed the task. A result's
// store is not waited for there: the server's acknowledgement completes it
// through the result publisher's callbacks (stored, storeFailed), so the
// waits of all results overlap, none holds up another, and no goroutine
// waits per task.
type settler struct {
	w        *Worker
	progress *progress
	parking  *parking
	pull     *puller // set by Run
	// pub stores results; its callbacks (stored, storeFailed) settle the
	// task whose result the server has (or has refused).
	pub *resultPublisher
	// stores counts the results awaiting the server's answer and the
	// failed stores being settled; a drain waits for it.
	stores sync.WaitGroup
	// bufs are result messages to reuse (resultBuf).
	bufs sync.Pool
}

// pendingAck is what settling a published result needs once the server
// has answered; it lives in the delivery (no allocation per result).
type pendingAck struct {
	ctx context.Context
	o   outcome
	buf *resultBuf // the result's message
}

// resultAckTimeout is how long a result may wait for the server's
// acknowledgement before its store counts as failed (the task is
// redelivered) instead of holding the task forever.
const resultAckTimeout = 30 * time.Second

func newSettler(w *Worker) (*settler, error) {
	s := &settler{w: w, parking: newParking(w.o.MaxParked)}
	s.progress = newProgress(w.o.Conn, w.o.AckWait, func(d *delivery) {
		w.log.Error("task stuck in a backend that ignores its timeout; no longer kept alive, the server will redeliver it",
			"subject", d.msg.Subject)
	}, s.failed)
	s.pub = newResultPublisher(w.o.Conn, w.o.ResultWindow, resultAckTimeout, s.stored, s.storeFailed)
	return s, nil
}

// track starts keeping d alive and counts it as held, from its arrival.
func (s *settler) track(d *delivery) {
	s.pull.take()
	s.progress.add(d)
}

// failed logs and counts a settle request that could not be sent.
func (s *settler) failed(d *delivery, op string, err error) {
	s.w.stats.settleErrors.Add(1)
	s.w.log.Warn("settle request not sent; the server will redeliver the task after the ack wait",
		"op", op, "subject", d.msg.Subject, "err", err)
}

// first reports whether the caller settles d (nobody did before).
func (s *settler) first(d *delivery) bool { return d.settled.CompareAndSwap(false, true) }

// The acknowledgement bodies of the JetStream protocol (what
// jetstream.Msg's Ack, Nak and the rest send to the reply subject).
var (
	ackAck        = []byte("+ACK")
	ackNak        = []byte("-NAK")
	ackInProgress = []byte("+WPI")
)

// respond sends an acknowledgement of d to the server.
func respond(nc *nats.Conn, d *delivery, body []byte) error {
	if d.msg.Reply == "" {
		return jetstream.ErrMsgNoReply
	}
	return nc.Publish(d.msg.Reply, body)
}

func (s *settler) ack(d *delivery) {
	if s.first(d) {
		if err := respond(s.w.o.Conn, d, ackAck); err != nil {
			s.failed(d, "ack", err)
		}
	}
}

func (s *settler) nak(d *delivery, delay time.Duration) {
	if !s.first(d) {
		return
	}
	body := ackNak
	if delay > 0 {
		body = fmt.Appendf(nil, `-NAK {"delay": %d}`, delay.Nanoseconds())
	}
	if err := respond(s.w.o.Conn, d, body); err != nil {
		s.failed(d, "nak", err)
	}
}

func (s *settler) term(d *delivery, reason dlq.Reason) {
	if s.first(d) {
		body := []byte("+TERM")
		if reason != "" {
			body = append(body, " "+string(reason)...)
		}
		if err := respond(s.w.o.Conn, d, body); err != nil {
			s.failed(d, "term", err)
		}
	}
}

// handBack returns a task not started (or abandoned by a drain) to the
// stream at once, for another worker.
func (s *settler) handBack(d *delivery) {
	s.nak(d, 0)
	s.progress.done(d.pid)
}

// settle carries out the outcome of one delivery. A result's store is
// awaited by a waiter, so the pool goroutine moves on to the next task at
// once and the waits for acknowledgements overlap; the task's
// room goes to the next one meanwhile (its work is done), while it stays
// tracked and kept alive until the server has stored the result.
func (s *settler) settle(ctx context.Context, d *delivery, o outcome) {
	w := s.w
	if o.ctx != nil {
		ctx = o.ctx // the task's span, for the result and DLQ spans and logs
	}
	switch {
	case o.stored != nil:
		w.stats.duplicates.Add(1)
		w.observe(o.t.Type, OutcomeDuplicate, "", o.start)
		s.reply(ctx, o.t, o.stored.Header, o.stored.Data)
		s.ack(d)
		s.done(d, o)
		return
	case o.hold != "":
		if s.parking.hold(o.hold, d, time.Now().Add(o.holdFor)) {
			// Held: its room goes to other routes' tasks; progress keeps
			// it alive until it is released into the queue again.
			w.stats.inFlight.Add(-1)
			s.pull.free()
			endSpan(o)
			return
		}
		o.err = o.holdErr
	case o.err == nil:
		buf := s.getBuf()
		msg := w.resultMsg(ctx, buf, o.t, o.ans, time.Since(o.start))
		// The task's room goes to the next one now (its work is done)
		// and not again when it is settled; set before the publish, as
		// the acknowledgement may settle it before the publish returns.
		d.roomFreed = true
		d.store = pendingAck{ctx: ctx, o: o, buf: buf}
		s.stores.Add(1)
		err := s.pub.publish(ctx, d, msg)
		s.pull.free()
		if err == nil {
			return // stored or storeFailed settles it
		}
		s.stores.Done()
		s.putBuf(buf)
		o.err = w.resultErr(err)
	}
	s.fail(ctx, d, o)
	s.done(d, o)
}

// done ends the delivery's accounting.
func (s *settler) done(d *delivery, o outcome) {
	s.w.stats.inFlight.Add(-1)
	s.progress.done(d.pid)
	if !d.roomFreed {
		s.pull.free()
	}
	endSpan(o)
}

func endSpan(o outcome) {
	if o.span != nil {
		o.span.End()
	}
}

// stored is the result publisher's ack callback: the result is in
// RESULTS, so the task is acked and the Task-Reply-To caller answered. A
// task leaves TASKS only once its result is stored. It runs on the
// client's acknowledgement goroutine and does not block (Ack and the reply
// are buffered publishes).
func (s *settler) stored(d *delivery) {
	p := d.store
	defer s.stores.Done()
	w := s.w
	s.ack(d)
	w.stats.done.Add(1)
	w.observe(p.o.t.Type, OutcomeDone, "", p.o.start)
	s.reply(p.ctx, p.o.t, p.buf.msg.Header, p.buf.msg.Data)
	s.done(d, p.o)
	s.putBuf(p.buf)
}

// storeFailed is the result publisher's error callback (refused, timed
// out, or the connection lost): the failure is settled like any other, on
// a goroutine of its own, as a dead-letter waits for the DLQ's
// acknowledgement and the callback must not block.
func (s *settler) storeFailed(d *delivery, err error) {
	p := d.store
	go func() {
		defer s.stores.Done()
		p.o.err = s.w.resultErr(err)
		s.fail(p.ctx, d, p.o)
		s.done(d, p.o)
	}()
}

// reply answers a Task-Reply-To caller (core NATS, best effort: the result
// is stored either way).
func (s *settler) reply(ctx context.Context, t *task.Task, h nats.Header, body []byte) {
	if t == nil || t.ReplyTo == "" {
		return
	}
	if err := s.w.o.Conn.PublishMsg(&nats.Msg{Subject: t.ReplyTo, Header: h, Data: body}); err != nil {
		s.w.log.WarnContext(ctx, "reply", "task_id", t.ID, "reply_to", t.ReplyTo, "err", err)
	}
}

// fail carries out Decide's verdict for a failed delivery.
func (s *settler) fail(ctx context.Context, d *delivery, o outcome) {
	w, t, cause, delivered := s.w, o.t, o.err, o.delivered
	fate := Decide(cause, delivered, w.o.MaxDeliver)
	if !trace.SpanContextFromContext(ctx).IsValid() && t.Header != nil {
		// No span of ours (tracing off): the log lines still carry the
		// trace the task came with.
		ctx = tracing.Extract(ctx, w.o.Propagator, t.Header)
	}
	log := w.log.With("task_id", t.ID, "type", t.Type, "delivery", delivered, "fate", fate.Action.String())
	switch fate.Action {
	case Ack:
		s.ack(d)
	case Redeliver:
		w.stats.redelivered.Add(1)
		w.observe(t.Type, OutcomeRedelivered, "", o.start)
		if w.o.History != nil && len(o.attempts) > 0 && !errors.Is(cause, ErrShutdown) {
			if err := w.o.History.Append(ctx, t.Seq, w.records(o.attempts, delivered)); err != nil {
				log.Warn("attempt history not kept", "err", err)
			}
		}
		log.InfoContext(ctx, "task will be redelivered", "delay", fate.Delay.String(), "err", w.o.DLQ.Redact(cause.Error()))
		s.nak(d, fate.Delay)
	case DeadLetter:
		s.deadLetter(ctx, d, o, fate, log)
	}
}

// deadLetter stores the DLQ copy and, once the server has it, tells a
// Task-Reply-To caller and removes the task from TASKS. If the copy cannot
// be stored the task stays in TASKS and comes back (the consumer allows
// DeliveryHeadroom deliveries beyond MaxDeliver for this).
func (s *settler) deadLetter(ctx context.Context, d *delivery, o outcome, fate Fate, log interface {
	ErrorContext(context.Context, string, ...any)
	WarnContext(context.Context, string, ...any)
}) {
	w, t, cause, delivered := s.w, o.t, o.err, o.delivered
	w.stats.failed.Add(1)
	e := &dlq.Entry{
		ID: t.ID, Type: t.Type, Subject: t.Subject, Seq: t.Seq,
		Header: t.Header, Payload: t.Payload, Reason: fate.Reason, Err: cause,
		Attempts: attemptsSoFar(len(o.attempts), delivered, fate.Reason), Backends: backendsOf(o.attempts),
	}
	if w.o.History != nil {
		if delivered > 1 {
			earlier, err := w.o.History.Load(ctx, t.Seq)
			if err != nil {
				log.WarnContext(ctx, "attempt history not read", "err", err)
			}
			e.History = earlier
			e.Attempts = max(e.Attempts, len(earlier)+len(o.attempts))
		}
		e.History = append(e.History, w.records(o.attempts, delivered)...)
	}
	if e.Type == "" {
		e.Type = "_invalid" // a subject without a type still needs a DLQ subject
	}
	dctx, dspan := ctx, trace.Span(nil)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(tracing.AttrDLQReason.String(string(fate.Reason)))
		span.SetStatus(codes.Error, w.o.DLQ.Redact(cause.Error()))
		dctx, dspan = tracing.StartPublish(ctx, w.o.Tracer, w.o.Propagator, w.o.Topology.DLQSubject(e.Type), "", nats.Header{}, len(e.Payload))
	}
	err := w.o.DLQ.Write(dctx, e)
	if dspan != nil {
		tracing.End(dspan, err)
	}
	if err != nil {
		// Never drop a task: it stays in TASKS and comes back.
		log.ErrorContext(ctx, "dead-letter failed; task will be redelivered", "err", err)
		w.stats.redelivered.Add(1)
		s.nak(d, redeliverDelay(delivered, 0))
		return
	}
	w.stats.dead.Add(1)
	w.observe(t.Type, OutcomeDeadLettered, fate.Reason, o.start)
	log.WarnContext(ctx, "task dead-lettered", "reason", fate.Reason, "err", w.o.DLQ.Redact(cause.Error()))
	if t.ReplyTo != "" {
		h := w.o.DLQ.Header(e)
		h.Set(task.HeaderID, t.ID)
		h.Set(task.HeaderType, t.Type)
		h.Set(task.HeaderStatus, task.StatusError)
		s.reply(ctx, t, h, nil)
	}
	s.term(d, fate.Reason)
	if w.o.History != nil && delivered > 1 {
		_ = w.o.History.Delete(ctx, t.Seq)
	}
}

// release feeds held tasks back to the pool when their time comes, until
// stop; then it hands every task still held back to the stream.
func (s *settler) release(queue chan<- *delivery, stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, next := s.parking.due(time.Now())
		for i, d := range due {
			s.pull.take() // back in the pipeline: it holds room again
			select {
			case queue <- d:
			case <-stop:
				s.pull.free()
				for _, d := range due[i:] {
					s.handBack(d)
				}
				for _, d := range s.parking.takeAll() {
					s.handBack(d)
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
			for _, d := range s.parking.takeAll() {
				s.handBack(d)
			}
			return
		case <-s.parking.wake:
		case <-timer.C:
		}
	}
}

// resultMsg is the result message of the contract for t's answer.
// It is built in buf, whose message it returns.
func (w *Worker) resultMsg(ctx context.Context, buf *resultBuf, t *task.Task, ans answer, took time.Duration) *nats.Msg {
	// Direct assignment: the names are canonical already, and Set would
	// canonicalise each one again on the hot path. The values share one
	// backing array, the buf's.
	buf.v = [...]string{t.ID, t.Type, task.StatusOK, ans.backend, strconv.Itoa(len(ans.attempts)), ans.cache, took.String()}
	v := &buf.v
	recording := trace.SpanFromContext(ctx).IsRecording()
	h := buf.msg.Header
	if h == nil {
		// Sized exactly: a map hinted for up to 8 entries is one group
		// (2 allocations), beyond that 4 and twice the bytes.
		n := len(v)
		if recording {
			n += len(traceHeaders)
		} else {
			for _, k := range traceHeaders {
				if _, ok := t.Header[k]; ok {
					n++
				}
			}
		}
		h = make(nats.Header, n)
	}
	h[task.HeaderID] = v[0:1:1]
	h[task.HeaderType] = v[1:2:2]
	h[task.HeaderStatus] = v[2:3:3]
	h[task.HeaderBackend] = v[3:4:4]
	h[task.HeaderAttempts] = v[4:5:5]
	h[task.HeaderCache] = v[5:6:6]
	h[task.HeaderDuration] = v[6:7:7]
	subject := w.o.Topology.ResultSubject(t.Type, t.ID)
	if recording {
		// The result's own publish span; its context goes with the result.
		_, span := tracing.StartPublish(ctx, w.o.Tracer, w.o.Propagator, subject, "", h, len(ans.body))
		span.End()
	} else {
		// No span of ours: the task's trace context is passed on as it came.
		for _, k := range traceHeaders {
			if v, ok := t.Header[k]; ok {
				h[k] = v
			}
		}
	}
	// No Nats-Msg-Id: RESULTS keeps one message per subject, so a second
	// store of the same result (a redelivery racing a slow ack) replaces
	// the first instead of adding one, without the dedupe table's cost.
	buf.msg = nats.Msg{Subject: subject, Header: h, Data: ans.body}
	return &buf.msg
}

// resultBuf is a result message and its header values, reused from one
// task to the next once the server has acknowledged the result (the
// client is done with the message then, and the Task-Reply-To answer,
// written synchronously, too): a result costs no message, header map or
// value array of its own.
type resultBuf struct {
	msg nats.Msg
	v   [7]string
}

func (s *settler) getBuf() *resultBuf {
	if b, ok := s.bufs.Get().(*resultBuf); ok {
		return b
	}
	return &resultBuf{}
}

// putBuf gives b back for another result; nothing may use its message
// afterwards.
func (s *settler) putBuf(b *resultBuf) {
	clear(b.msg.Header)
	b.msg = nats.Msg{Header: b.msg.Header}
	b.v = [7]string{}
	s.bufs.Put(b)
}

// traceHeaders are the W3C trace context and baggage headers, passed from
// a task to its result as they came when the worker makes no spans.
var traceHeaders = [...]string{"traceparent", "tracestate", "baggage"}

// resultErr classifies a failed result store: a result too large for the
// server can never be stored (invalid_result), anything else is transient.
func (w *Worker) resultErr(err error) error {
	if errors.Is(err, nats.ErrMaxPayload) || isMaxPayload(err) {
		return fmt.Errorf("%w: store result: %w", ErrInvalidResult, err)
	}
	return handlers.Transient(fmt.Errorf("store result: %w", err))
}

// errCodeMessageTooLarge is the server's JSStreamMessageExceedsMaximumErr:
// the message is over the stream's max_msg_size.
const errCodeMessageTooLarge jetstream.ErrorCode = 10054

// isMaxPayload reports the server's refusal of a message too large for the
// stream (the client itself refuses one over the server's max_payload
// with nats.ErrMaxPayload).
func isMaxPayload(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeMessageTooLarge
}

// observe tells Options.Observe how a delivery that started at start
// ended (the clock is read only when someone is told).
func (w *Worker) observe(typ string, outcome Outcome, reason dlq.Reason, start time.Time) {
	if w.o.Observe != nil {
		w.o.Observe(Settled{Type: typ, Outcome: outcome, Reason: reason, Took: time.Since(start)})
	}
}

// records turns one delivery's attempts into history records.
func (w *Worker) records(attempts []resilience.Attempt, delivery int) []dlq.Record {
	return dlq.Records(attempts, delivery, w.o.WorkerID)
}

// attemptsSoFar counts the backend calls of a task: those of this delivery
// and, for a task exhausted over several deliveries, at least one per
// earlier delivery (each was redelivered after a failed call). The exact
// per-attempt history arrives with the DLQ history.
func attemptsSoFar(calls, delivered int, reason dlq.Reason) int {
	switch {
	case reason == dlq.Exhausted && delivered > 1:
		return calls + delivered - 1
	case reason == dlq.MaxDeliveries:
		return delivered - 1 // each earlier delivery ended without an outcome
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
