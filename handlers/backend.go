package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Backend does the work of a task. Call must honour ctx (its deadline is the
// attempt's timeout) and must be safe for concurrent use.
//
// A nil error means success and Response.Body is the result. A failure
// should be an *Error (or wrap ErrTransient or ErrPermanent); any other
// error is treated as transient.
type Backend interface {
	Call(ctx context.Context, req *Request) (*Response, error)
}

// BackendFunc adapts a function to Backend.
type BackendFunc func(ctx context.Context, req *Request) (*Response, error)

// Call calls f.
func (f BackendFunc) Call(ctx context.Context, req *Request) (*Response, error) { return f(ctx, req) }

// Request is one call of a backend for a task.
type Request struct {
	TaskID  string
	Type    string
	Payload []byte
	// Header holds the task's headers (and trace context) to pass on.
	// Backends must not modify it.
	Header nats.Header
	// Attempt counts backend calls for this task delivery, from 1.
	Attempt int
}

// Response is a backend's successful answer.
type Response struct {
	Body []byte
	// Header holds metadata the backend returned (HTTP response headers,
	// NATS reply headers); informational only.
	Header nats.Header
}

// Error classes. Test with errors.Is.
var (
	// ErrTransient: the backend could not serve now (timeout, refused
	// connection, 429, 5xx, service unavailable); another try later or on
	// another backend may succeed.
	ErrTransient = errors.New("transient backend failure")
	// ErrPermanent: the backend rejected the task itself (4xx, a service
	// error about the request); trying again cannot help.
	ErrPermanent = errors.New("permanent backend failure")
)

// Error is a classified backend failure.
type Error struct {
	Class      error         // ErrTransient or ErrPermanent
	Backend    string        // name of the backend, when known
	Status     int           // HTTP status or service error code; 0 if none
	RetryAfter time.Duration // backend's hint before the next try; 0 if none
	Err        error         // the underlying cause
}

func (e *Error) Error() string {
	s := ""
	if e.Backend != "" {
		s = e.Backend + ": "
	}
	if e.Status != 0 {
		s += fmt.Sprintf("status %d: ", e.Status)
	}
	if e.Err != nil {
		return s + e.Err.Error()
	}
	return s + e.Class.Error()
}

// Unwrap exposes both the class and the cause to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Class}
	}
	return []error{e.Class, e.Err}
}

// Transient returns a transient *Error wrapping err.
func Transient(err error) *Error { return &Error{Class: ErrTransient, Err: err} }

// Permanent returns a permanent *Error wrapping err.
func Permanent(err error) *Error { return &Error{Class: ErrPermanent, Err: err} }

// IsPermanent reports whether err is a permanent failure. Everything else
// that is not nil, including unclassified errors, is transient.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// RetryAfter returns the backend's Retry-After hint carried by err, or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// StatusOf returns the HTTP status or service error code carried by err, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}
