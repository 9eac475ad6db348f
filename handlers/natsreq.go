package handlers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/breakwater/breakwater/task"
)

// Reply headers of a NATS service error, as set by nats.go micro's
// Request.Error(code, description, data).
const (
	// HeaderServiceError carries the error's description.
	HeaderServiceError = "Nats-Service-Error"
	// HeaderServiceErrorCode carries the error's code, by convention an
	// HTTP-like status ("400", "503").
	HeaderServiceErrorCode = "Nats-Service-Error-Code"
)

// natsErrorExcerpt bounds how much of a service error's description goes
// into the error message.
const natsErrorExcerpt = 512

// NATSOptions configures a NATS request-reply backend. Conn and Subject are
// required.
type NATSOptions struct {
	// Name identifies the backend in errors (Error.Backend).
	Name string
	// Conn is the connection requests are made on. The backend does not own
	// it: the caller closes it after the last call.
	Conn *nats.Conn
	// Subject is the literal subject (no wildcards) a service, typically a
	// nats.go micro endpoint, listens on.
	Subject string
	// Propagator, when set, writes the call context's trace (the attempt's
	// span) into the request headers, replacing the task's traceparent.
	Propagator propagation.TextMapPropagator
	// ForwardHeaders names the task headers passed on to the service
	// besides the trace context and Content-Type; optional, default none.
	// See HTTPOptions.ForwardHeaders: the rules are the same.
	ForwardHeaders []string
}

// NATS is a Backend that sends the task as a core NATS request and waits for
// one reply. It is safe for concurrent use.
//
// The request carries the payload, Task-Id, Task-Type and Task-Attempt
// (from the Request, never from the task's headers), the task's trace
// context (traceparent, tracestate, baggage; replaced by the call's own
// when a Propagator is set) and Content-Type, and the task headers matching
// ForwardHeaders, keys as the task wrote them. No other task header reaches
// the service.
// The call waits as long as ctx allows: give it a deadline (there is no
// default timeout).
//
// A reply with Nats-Service-Error-Code is a failure (*Error with Status =
// code and the Retry-After reply header as RetryAfter): 4xx codes but 408
// and 429 are permanent; 5xx, 408, 429 and a missing, unparsable or other
// code are transient. No responders, a timeout, a cancelled context or a
// closed connection are transient; a payload over the server's max_payload
// is permanent.
type NATS struct {
	name    string
	conn    *nats.Conn
	subject string
	prop    propagation.TextMapPropagator
	fwd     forwarder
}

var _ Backend = (*NATS)(nil)

// NewNATS returns a NATS request-reply backend. Errors wrap ErrInvalidOption.
func NewNATS(o NATSOptions) (*NATS, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("nats backend %q: %w: %s", o.Name, ErrInvalidOption, fmt.Sprintf(format, a...))
	}
	if o.Conn == nil {
		return nil, bad("no connection")
	}
	if !task.ValidSubject(o.Subject) {
		return nil, bad("subject %q is not a literal subject", o.Subject)
	}
	fwd, err := newForwarder(o.ForwardHeaders)
	if err != nil {
		return nil, fmt.Errorf("nats backend %q: %w: forward_headers: %w", o.Name, ErrInvalidOption, err)
	}
	return &NATS{name: o.Name, conn: o.Conn, subject: o.Subject, prop: o.Propagator, fwd: fwd}, nil
}

// Call sends req as a request on the subject; see NATS for error classes.
func (n *NATS) Call(ctx context.Context, req *Request) (*Response, error) {
	msg := &nats.Msg{Subject: n.subject, Data: req.Payload, Header: make(nats.Header, 8)}
	for k, v := range req.Header {
		if n.fwd.allowed(k) {
			msg.Header[k] = v
		}
	}
	if req.TaskID != "" {
		msg.Header[HeaderTaskID] = []string{req.TaskID}
	}
	if req.Type != "" {
		msg.Header[HeaderTaskType] = []string{req.Type}
	}
	msg.Header[HeaderTaskAttempt] = []string{strconv.Itoa(req.Attempt)}
	if n.prop != nil {
		// W3C keys stay lowercase, as other NATS clients read them.
		carrier := propagation.MapCarrier{}
		n.prop.Inject(ctx, carrier)
		for k, v := range carrier {
			msg.Header[k] = []string{v}
		}
	}

	reply, err := n.conn.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return nil, n.requestError(ctx, err)
	}
	if st := reply.Header.Get("Status"); st == "503" && len(reply.Data) == 0 {
		// Also caught by nats.go; kept for replies relayed by other clients.
		return nil, &Error{Class: ErrTransient, Backend: n.name, Err: fmt.Errorf("request %s: %w", n.subject, nats.ErrNoResponders)}
	}
	if isServiceError(reply.Header) {
		return nil, n.serviceError(reply)
	}
	return &Response{Body: reply.Data, Header: reply.Header}, nil
}

func (n *NATS) requestError(ctx context.Context, err error) error {
	class := ErrTransient
	if errors.Is(err, nats.ErrMaxPayload) {
		class = ErrPermanent // the same payload will never fit
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	return &Error{Class: class, Backend: n.name, Err: fmt.Errorf("request %s: %w", n.subject, err)}
}

func isServiceError(h nats.Header) bool {
	if h == nil {
		return false
	}
	_, code := h[HeaderServiceErrorCode]
	_, desc := h[HeaderServiceError]
	return code || desc
}

func (n *NATS) serviceError(reply *nats.Msg) error {
	raw := reply.Header.Get(HeaderServiceErrorCode)
	code, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil || code < 0 {
		code = 0
	}
	class := ErrTransient
	if code >= 400 && code < 500 && code != 408 && code != 429 {
		class = ErrPermanent
	}
	e := &Error{Class: class, Backend: n.name, Status: code}
	if class == ErrTransient {
		e.RetryAfter = parseRetryAfter(reply.Header.Get(HeaderRetryAfter), time.Now())
	}
	msg := "service error"
	if code == 0 && raw != "" {
		msg += " (code " + strconv.Quote(cleanText([]byte(raw), 32)) + ")"
	}
	if d := cleanText([]byte(reply.Header.Get(HeaderServiceError)), natsErrorExcerpt); d != "" {
		msg += ": " + d
	}
	e.Err = errors.New(msg)
	return e
}
