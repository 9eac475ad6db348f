package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/schedule"
	"github.com/breakwater/breakwater/task"
)

// Defaults of the options.
const (
	// DefaultRequestTimeout bounds a request to the server (a publish
	// ack, a stream lookup) when the caller's context has no deadline.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultResultTimeout bounds the wait for a result when the caller's
	// context has no deadline: a task may legitimately take seconds.
	DefaultResultTimeout = 30 * time.Second
	// DefaultAsyncWindow is how many publishes of PublishBatch may await
	// their ack at once; past it the server's pace sets the batch's.
	DefaultAsyncWindow = 4096
)

var (
	// ErrInvalid marks bad input (a task type, id, header or time that
	// cannot make a task): nothing was sent.
	ErrInvalid = errors.New("invalid input")
	// ErrInvalidOption marks a bad Option or PublishOption value.
	ErrInvalidOption = errors.New("invalid client option")
	// ErrNoResult means no result is stored for the task, or none came
	// within the wait.
	ErrNoResult = errors.New("no result")
	// ErrDeadLettered means the task failed for good and went to the DLQ;
	// the error is a *DeadLetteredError with the reason.
	ErrDeadLettered = errors.New("task dead-lettered")
	// ErrDuplicate means a task with the same id was already published
	// within the stream's duplicate window: it is stored once, and the id
	// returned with the error is valid.
	ErrDuplicate = errors.New("duplicate task")
)

// invalidError is bad input: its message stands alone (callers print it as
// the reason) and it matches ErrInvalid.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// Client publishes tasks and reads what Breakwater stores about them.
// Create it with New; it is safe for concurrent use.
type Client struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	o     options
	sched *schedule.Client

	mu    sync.Mutex // guards admin, made at first use
	admin *dlq.Admin
}

// options are what the Options set.
type options struct {
	topo           bus.Topology
	requestTimeout time.Duration
	resultTimeout  time.Duration
	asyncWindow    int
	traced         bool
	tracer         trace.Tracer
	propagator     propagation.TextMapPropagator
	who            string
}

// Option configures a Client. A bad value makes New fail with an error
// wrapping ErrInvalidOption.
type Option func(*options) error

// WithPrefix selects the installation whose subjects and streams carry
// the prefix p (one token of [A-Za-z0-9_-]); default none.
func WithPrefix(p string) Option {
	return func(o *options) error {
		if p != "" && task.ValidID(p) != nil {
			return fmt.Errorf("%w: invalid prefix %q: allowed are A-Z a-z 0-9 _ -", ErrInvalidOption, p)
		}
		o.topo = bus.Topology{Prefix: p}
		return nil
	}
}

// WithTopology selects the installation's subjects and streams; default
// the contract's, without a prefix.
func WithTopology(t bus.Topology) Option {
	return func(o *options) error {
		o.topo = t
		return nil
	}
}

// WithRequestTimeout sets how long a request to the server may take when
// the caller's context has no deadline; default DefaultRequestTimeout.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: request timeout %s: must be positive", ErrInvalidOption, d)
		}
		o.requestTimeout = d
		return nil
	}
}

// WithResultTimeout sets how long PublishAndWait waits for a result when
// the caller's context has no deadline; default DefaultResultTimeout.
func WithResultTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: result timeout %s: must be positive", ErrInvalidOption, d)
		}
		o.resultTimeout = d
		return nil
	}
}

// WithAsyncWindow bounds the publishes of PublishBatch awaiting their ack;
// default DefaultAsyncWindow.
func WithAsyncWindow(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: async window %d: must be at least 1", ErrInvalidOption, n)
		}
		o.asyncWindow = n
		return nil
	}
}

// WithTracing makes every publish a producer span whose context the
// worker continues, and every DLQ replay a span linked to the failed
// task's trace; default no spans.
func WithTracing(tr trace.Tracer, p propagation.TextMapPropagator) Option {
	return func(o *options) error {
		if tr == nil || p == nil {
			return fmt.Errorf("%w: tracing needs a tracer and a propagator", ErrInvalidOption)
		}
		o.traced, o.tracer, o.propagator = true, tr, p
		return nil
	}
}

// WithName is written as Dlq-Worker on the DLQ copies Cancel makes;
// default "publisher".
func WithName(name string) Option {
	return func(o *options) error {
		o.who = name
		return nil
	}
}

// New returns a Client over nc, which the caller keeps and closes. It
// makes no request to the server.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil connection", ErrInvalidOption)
	}
	o := options{
		requestTimeout: DefaultRequestTimeout,
		resultTimeout:  DefaultResultTimeout,
		asyncWindow:    DefaultAsyncWindow,
		tracer:         noop.NewTracerProvider().Tracer(""),
		propagator:     propagation.NewCompositeTextMapPropagator(),
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(o.asyncWindow),
		// Every future resolves: without a timeout a lost ack would hang
		// a batch forever.
		jetstream.WithPublishAsyncTimeout(o.requestTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Client{
		nc: nc, js: js, o: o,
		sched: schedule.New(js, schedule.Options{Topology: o.topo, Who: o.who}),
	}, nil
}

// Topology is the installation the Client works with.
func (c *Client) Topology() bus.Topology { return c.o.topo }

// Conn is the connection the Client was made with.
func (c *Client) Conn() *nats.Conn { return c.nc }

// JetStream is the Client's JetStream context, for what the Client does
// not cover.
func (c *Client) JetStream() jetstream.JetStream { return c.js }

// tracing reports whether spans are made, and the tracer and propagator
// (no-op ones when not, set by New).
func (c *Client) tracing() (bool, trace.Tracer, propagation.TextMapPropagator) {
	return c.o.traced, c.o.tracer, c.o.propagator
}

// withTimeout gives ctx the deadline d unless it has one.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// StreamHint explains the usual reason behind a JetStream error about
// stream, wrapping err: no stream, so no worker has ever started on this
// server (or with another prefix), or a server without JetStream.
func StreamHint(err error, stream string) error {
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return &hintError{msg: fmt.Sprintf("stream %s not found (has a worker started on this server, with the same prefix?)", stream), err: err}
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w (no stream %s stores this subject: has a worker started on this server, with the same prefix?)", err, stream)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return fmt.Errorf("%w: the server does not run JetStream", err)
	}
	return err
}

// hintError says what an error means for a user in place of its own text,
// which it still wraps for errors.Is.
type hintError struct {
	msg string
	err error
}

func (e *hintError) Error() string { return e.msg }
func (e *hintError) Unwrap() error { return e.err }

// ValidType reports why typ cannot be a task type (it stands in subjects
// as tasks.<typ> and results.<typ>.<id>): dot-separated non-empty tokens
// without wildcards, whitespace or control characters. The error wraps
// ErrInvalid.
func ValidType(typ string) error {
	if err := task.ValidType(typ); err != nil {
		return &invalidError{msg: err.Error()}
	}
	return nil
}

// ValidHeader reports why a header cannot be sent the way the NATS wire
// format needs it: a name of visible ASCII without ':', a value without CR
// or LF (which would end the header early). The error wraps ErrInvalid.
func ValidHeader(k, v string) error {
	if k == "" {
		return invalidf("empty header name")
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return invalidf("header name %q has %q", k, c)
		}
	}
	if strings.ContainsAny(v, "\r\n") {
		return invalidf("header %s: value has a line break", k)
	}
	return nil
}

// ValidID reports why id cannot be a task id (see task.ValidID); the error
// wraps ErrInvalid.
func ValidID(id string) error {
	if err := task.ValidID(id); err != nil {
		return &invalidError{msg: err.Error()}
	}
	return nil
}
