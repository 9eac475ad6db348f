package resilience

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/breakwater/breakwater/handlers"
)

// ErrNoRoute means no route serves the task's type.
var ErrNoRoute = errors.New("no route for task type")

// DefaultTimeout bounds one backend attempt when a backend sets none.
const DefaultTimeout = 30 * time.Second

// Target is one backend a route can call.
type Target struct {
	Name    string
	Backend handlers.Backend
	// Timeout bounds each attempt; DefaultTimeout when zero.
	Timeout time.Duration
}

// Route serves one task type with an ordered list of backends.
type Route struct {
	Name    string
	Targets []Target
}

// Attempt records one backend call.
type Attempt struct {
	Backend  string
	Start    time.Time
	Duration time.Duration
	Err      error // nil on success
}

// Answer is a route's successful result.
type Answer struct {
	Response *handlers.Response
	Backend  string    // the backend that answered
	Attempts []Attempt // every call made, the successful one last
}

// Failure is returned by Route.Do when no backend produced an answer. It
// unwraps to the deciding error, so errors.Is(err, handlers.ErrPermanent)
// tells the caller whether trying again can help.
type Failure struct {
	Attempts []Attempt
	Err      error
}

func (f *Failure) Error() string {
	return fmt.Sprintf("%d attempt(s) failed: %v", len(f.Attempts), f.Err)
}

// Unwrap returns the deciding error.
func (f *Failure) Unwrap() error { return f.Err }

// AttemptsOf returns the attempts recorded in err (a *Failure), or nil.
func AttemptsOf(err error) []Attempt {
	var f *Failure
	if errors.As(err, &f) {
		return f.Attempts
	}
	return nil
}

// Do calls the route's backends in order until one answers. A transient
// failure moves on to the next backend; a permanent one stops at once (the
// task itself is at fault, another backend would reject it too). ctx bounds
// the whole task; each attempt is further bounded by its target's timeout.
func (r *Route) Do(ctx context.Context, req *handlers.Request) (*Answer, error) {
	attempts := make([]Attempt, 0, len(r.Targets))
	var last error
	for i := range r.Targets {
		t := &r.Targets[i]
		if err := ctx.Err(); err != nil {
			if last == nil {
				last = handlers.Transient(fmt.Errorf("before calling %s: %w", t.Name, err))
			}
			break
		}
		req.Attempt = len(attempts) + 1
		resp, a := call(ctx, t, req)
		attempts = append(attempts, a)
		if a.Err == nil {
			return &Answer{Response: resp, Backend: t.Name, Attempts: attempts}, nil
		}
		last = a.Err
		if handlers.IsPermanent(a.Err) {
			break
		}
	}
	if last == nil {
		last = handlers.Transient(errors.New("route has no backends"))
	}
	return nil, &Failure{Attempts: attempts, Err: last}
}

func call(ctx context.Context, t *Target, req *handlers.Request) (*handlers.Response, Attempt) {
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	a := Attempt{Backend: t.Name, Start: time.Now()}
	resp, err := t.Backend.Call(actx, req)
	a.Duration = time.Since(a.Start)
	if err == nil && resp == nil {
		err = handlers.Transient(errors.New("backend returned no response"))
	}
	if err != nil {
		var he *handlers.Error
		if !errors.As(err, &he) && !errors.Is(err, handlers.ErrTransient) && !errors.Is(err, handlers.ErrPermanent) {
			err = handlers.Transient(err) // unclassified failures are transient
		}
		a.Err = fmt.Errorf("%s: %w", t.Name, err)
		return nil, a
	}
	return resp, a
}

// Router maps task types to routes. It is immutable after NewRouter and
// safe for concurrent use.
type Router struct {
	routes map[string]*Route
}

// NewRouter returns a router over routes, keyed by task type.
func NewRouter(routes []*Route) *Router {
	m := make(map[string]*Route, len(routes))
	for _, r := range routes {
		m[r.Name] = r
	}
	return &Router{routes: m}
}

// Route returns the route of task type typ, or an error wrapping ErrNoRoute.
func (r *Router) Route(typ string) (*Route, error) {
	rt, ok := r.routes[typ]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrNoRoute, typ)
	}
	return rt, nil
}
