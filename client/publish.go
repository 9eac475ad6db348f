package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/schedule"
	"github.com/breakwater/breakwater/task"
	"github.com/breakwater/breakwater/tracing"
)

// PublishOption configures one publish. A bad value makes the publish fail
// with an error wrapping ErrInvalid, and nothing is sent.
type PublishOption func(*publishOptions) error

// publishOptions are what the PublishOptions set.
type publishOptions struct {
	id, msgID string
	header    nats.Header
	in        time.Duration
	at        time.Time
}

// WithID sets the task id ([A-Za-z0-9_-], at most 128 bytes), sent as
// Task-Id and, unless WithMsgID says otherwise, as Nats-Msg-Id: publishing
// the same id twice within the stream's duplicate window stores the task
// once. Default a fresh unique id.
func WithID(id string) PublishOption {
	return func(o *publishOptions) error {
		if err := ValidID(id); err != nil {
			return err
		}
		o.id = id
		return nil
	}
}

// WithMsgID sets the idempotency key (Nats-Msg-Id) apart from the task id;
// default the task id.
func WithMsgID(id string) PublishOption {
	return func(o *publishOptions) error {
		if id == "" || strings.ContainsAny(id, "\r\n") {
			return invalidf("message id %q: must be non-empty, on one line", id)
		}
		o.msgID = id
		return nil
	}
}

// WithHeader adds the header k: v to the task (repeatable). Task-Id and
// Nats-Msg-Id are refused: WithID and WithMsgID set them.
func WithHeader(k, v string) PublishOption {
	return func(o *publishOptions) error {
		if err := checkHeader(k, v); err != nil {
			return err
		}
		if o.header == nil {
			o.header = nats.Header{}
		}
		o.header.Add(k, v)
		return nil
	}
}

// WithIn runs the task d from now, never before (the server's scheduler
// publishes it then; see docs/scheduling.md).
func WithIn(d time.Duration) PublishOption {
	return func(o *publishOptions) error {
		if d <= 0 {
			return invalidf("delay %s: must be positive", d)
		}
		o.in = d
		return nil
	}
}

// WithAt runs the task at t, never before it; t must be in the future.
func WithAt(t time.Time) PublishOption {
	return func(o *publishOptions) error {
		if t.IsZero() {
			return invalidf("run time is zero")
		}
		o.at = t
		return nil
	}
}

// checkHeader validates a header the caller supplies and refuses the task
// id headers, which the id options set, so a task never carries two ids.
func checkHeader(k, v string) error {
	if err := ValidHeader(k, v); err != nil {
		return err
	}
	switch k {
	case task.HeaderID, task.HeaderMsgID:
		return invalidf("header %s is set by the publisher; use the task id", k)
	}
	return nil
}

// prepared is a task message ready to publish.
type prepared struct {
	typ, id string
	msg     *nats.Msg
	due     time.Time // zero: now
}

// prepare checks the input and builds the task message.
func (c *Client) prepare(typ string, payload []byte, opts []PublishOption) (*prepared, error) {
	if err := ValidType(typ); err != nil {
		return nil, err
	}
	var o publishOptions
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.in > 0 && !o.at.IsZero() {
		return nil, invalidf("give a delay or a time, not both")
	}
	if o.id == "" {
		o.id = nuid.Next()
	}
	if o.msgID == "" {
		o.msgID = o.id
	}
	hdr := o.header
	if hdr == nil {
		hdr = nats.Header{}
	}
	hdr.Set(task.HeaderID, o.id)
	hdr.Set(task.HeaderMsgID, o.msgID)
	p := &prepared{typ: typ, id: o.id, msg: &nats.Msg{Subject: c.o.topo.TaskSubject(typ), Header: hdr, Data: payload}}
	now := time.Now()
	switch {
	case o.in > 0:
		p.due = now.Add(o.in)
	case !o.at.IsZero():
		p.due = o.at
	}
	if !p.due.IsZero() {
		if err := schedule.DelayMsg(c.o.topo, p.msg, typ, o.id, p.due, now); err != nil {
			return nil, &invalidError{msg: err.Error()}
		}
	}
	return p, nil
}

// Publish publishes a task of type typ with the payload (opaque bytes,
// usually JSON) and returns its id once the server has stored it. With
// WithIn or WithAt the server's scheduler publishes it when it is due.
//
// A task whose id was already published within the stream's duplicate
// window is stored once: Publish then returns the id and an error wrapping
// ErrDuplicate. Bad input wraps ErrInvalid and nothing is sent. Without a
// deadline in ctx the publish is bounded by the request timeout.
func (c *Client) Publish(ctx context.Context, typ string, payload []byte, opts ...PublishOption) (string, error) {
	p, err := c.prepare(typ, payload, opts)
	if err != nil {
		return "", err
	}
	ctx, cancel := withTimeout(ctx, c.o.requestTimeout)
	defer cancel()
	dup, err := c.publish(ctx, p)
	if err != nil {
		return "", err
	}
	if dup {
		return p.id, fmt.Errorf("task %s: %w: already published within the duplicate window; not stored again", p.id, ErrDuplicate)
	}
	return p.id, nil
}

// publish sends p inside a publish span and reports whether the server
// saw it as a duplicate. A traceparent the caller gave in the headers is
// the span's parent.
func (c *Client) publish(ctx context.Context, p *prepared) (duplicate bool, err error) {
	on, tr, prop := c.tracing()
	pctx := ctx
	if on {
		pctx = tracing.Extract(ctx, prop, p.msg.Header)
	}
	pctx, span := tracing.StartPublish(pctx, tr, prop, p.msg.Subject, p.id, p.msg.Header, len(p.msg.Data))
	ack, err := c.js.PublishMsg(pctx, p.msg)
	tracing.End(span, err)
	if err != nil {
		if errors.Is(err, nats.ErrMaxPayload) {
			return false, fmt.Errorf("publish to %s: %w", p.msg.Subject, tooLarge(p.msg, c.nc.MaxPayload(), err))
		}
		return false, fmt.Errorf("publish to %s: %w", p.msg.Subject, StreamHint(err, c.o.topo.TasksStream()))
	}
	return ack.Duplicate, nil
}

// PublishAndWait publishes a task like Publish and waits for its result.
// A task that failed for good returns a *DeadLetteredError (errors.Is
// ErrDeadLettered) with the DLQ reason and error.
//
// It subscribes to its own reply subject before publishing (Task-Reply-To,
// so it may not be given as a header), and when the publish was a
// duplicate of an earlier one, whose reply went elsewhere, it polls the
// RESULTS stream instead. When nothing comes in time the error wraps
// ErrNoResult and ctx's error (and ErrDuplicate after a duplicate).
// Without a deadline in ctx the whole call is bounded by the result
// timeout, plus the delay of a delayed task.
func (c *Client) PublishAndWait(ctx context.Context, typ string, payload []byte, opts ...PublishOption) (*Result, error) {
	p, err := c.prepare(typ, payload, opts)
	if err != nil {
		return nil, err
	}
	if p.msg.Header.Get(task.HeaderReplyTo) != "" {
		return nil, invalidf("waiting sets %s itself; drop the header", task.HeaderReplyTo)
	}
	timeout := c.o.resultTimeout
	if !p.due.IsZero() {
		timeout += max(time.Until(p.due), 0)
	}
	ctx, cancel := withTimeout(ctx, timeout)
	defer cancel()

	// Subscribe before publishing: the reply can only come after the task
	// is stored, and the server handles our SUB before our PUB.
	inbox := c.nc.NewInbox()
	replies := make(chan *nats.Msg, 8)
	sub, err := c.nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return nil, fmt.Errorf("subscribe to reply inbox: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // nothing to do about it; the inbox is ours alone
	p.msg.Header.Set(task.HeaderReplyTo, inbox)

	dup, err := c.publish(ctx, p)
	if err != nil {
		return nil, err
	}
	return c.await(ctx, p.typ, p.id, replies, dup)
}

// await waits for the reply to a published task. After a duplicate the
// first publish carried another reply subject, so the result can only be
// found in RESULTS: it is polled there too (the original may still be
// running, hence polling, not one look).
func (c *Client) await(ctx context.Context, typ, id string, replies <-chan *nats.Msg, duplicate bool) (*Result, error) {
	var (
		results jetstream.Stream
		poll    <-chan time.Time
		every   = 100 * time.Millisecond
	)
	if duplicate {
		poll = time.After(0)
	}
	for {
		select {
		case m := <-replies:
			return replyResult(typ, id, m)
		case <-poll:
			r, err := c.lastResult(ctx, &results, typ, id)
			switch {
			case err == nil:
				return r, nil
			case !errors.Is(err, ErrNoResult) && ctx.Err() == nil:
				return nil, err
			}
			every = min(2*every, 2*time.Second)
			poll = time.After(every)
		case <-ctx.Done():
			if duplicate {
				return nil, fmt.Errorf("%w for task %s (%w): %w", ErrNoResult, id, ErrDuplicate, ctx.Err())
			}
			return nil, fmt.Errorf("%w for task %s: %w", ErrNoResult, id, ctx.Err())
		}
	}
}

// replyResult reads a reply: the result of an ok task, else the failure.
func replyResult(typ, id string, m *nats.Msg) (*Result, error) {
	status := m.Header.Get(task.HeaderStatus)
	if status == task.StatusOK {
		return &Result{Subject: m.Subject, Type: typ, ID: id, Status: status, Header: m.Header, Body: m.Data}, nil
	}
	return nil, &DeadLetteredError{
		Type: typ, ID: id, Status: status,
		Reason:  dlq.Reason(m.Header.Get(task.HeaderDLQReason)),
		Message: m.Header.Get(task.HeaderDLQError),
		Header:  m.Header,
	}
}

// DeadLetteredError is a task that failed for good: the reply its worker
// sent instead of a result. It matches ErrDeadLettered.
type DeadLetteredError struct {
	Type, ID string
	// Reason is the Dlq-Reason (exhausted, rejected, ...), Message the
	// Dlq-Error (the last error, with secrets removed).
	Reason  dlq.Reason
	Message string
	// Status is the reply's Task-Status ("error"; empty when the reply
	// had none).
	Status string
	// Header is the whole reply header (the DLQ headers).
	Header nats.Header
}

// Error says which task failed and why.
func (e *DeadLetteredError) Error() string {
	reason, msg := string(e.Reason), e.Message
	var why string
	switch {
	case reason != "" && msg != "":
		why = reason + ": " + msg
	case reason != "" || msg != "":
		why = reason + msg
	case e.Status != "":
		why = "status " + e.Status
	default:
		why = "reply without " + task.HeaderStatus
	}
	return fmt.Sprintf("task %s failed: %s", e.ID, why)
}

// Is matches ErrDeadLettered.
func (e *DeadLetteredError) Is(target error) bool { return target == ErrDeadLettered }

// tooLarge says why the server refused msg for its size (err, wrapping
// nats.ErrMaxPayload): its limit, which the bare error leaves out and which
// differs between servers, and the task's size.
func tooLarge(msg *nats.Msg, limit int64, err error) error {
	hdr := HeaderSize(msg.Header)
	size := len(msg.Data) + hdr
	return fmt.Errorf("task of %s (%d bytes: payload %d, headers %d) is over the server's max_payload of %s (%d bytes); "+
		"a default nats-server allows 1 MiB, worker --embedded 8 MiB, set by max_payload in the server's config: %w",
		sizeText(int64(size)), size, len(msg.Data), hdr, sizeText(limit), limit, err)
}

// HeaderSize is the size of h on the wire: "NATS/1.0\r\n", a "K: V\r\n"
// line per value and a closing "\r\n", what the client counts against
// the server's limit with the payload.
func HeaderSize(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// sizeText is n bytes for people: "2.0 MiB", "512.0 KiB", "300 bytes".
func sizeText(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
