package resilience

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/breakwater/breakwater/handlers"
)

// ErrNoRoute means no route serves the task's type.
var ErrNoRoute = errors.New("no route for task type")

// DefaultTimeout bounds one backend attempt when a backend sets none.
const DefaultTimeout = 30 * time.Second

// Target is one backend a route can call. Make it with NewTarget to get
// its policies; a literal Target calls the backend with Timeout alone.
type Target struct {
	Name    string
	Backend handlers.Backend
	// Timeout bounds each attempt; DefaultTimeout when zero.
	Timeout time.Duration

	exec    failsafe.Executor[*handlers.Response]
	breaker circuitbreaker.CircuitBreaker[*handlers.Response]
	stats   *latencyStats
}

// Route serves one task type with an ordered list of backends.
type Route struct {
	Name    string
	Targets []Target
	// Deadline bounds all of a task's attempts, retries and fallbacks on
	// one delivery; 0 means none (each attempt is still bounded).
	Deadline time.Duration
	// Strategy orders the targets for each task; nil means failover.
	Strategy Strategy
	// Validate, when set, checks every answer; an invalid one is the
	// backend's failure.
	Validate Validator
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
	// RetryAfter, when the route could not serve at all (every backend
	// open or failing transiently), is the earliest time a try may work:
	// the shortest remaining open time of the breakers, or a backend's
	// Retry-After. Zero when unknown.
	RetryAfter time.Duration
}

// RetryAfter returns the earliest useful retry carried by err: a
// Failure's RetryAfter, else a backend's Retry-After, else 0.
func RetryAfter(err error) time.Duration {
	var f *Failure
	if errors.As(err, &f) && f.RetryAfter > 0 {
		return f.RetryAfter
	}
	return handlers.RetryAfter(err)
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

// Do calls the route's backends in order until one answers. A backend
// whose breaker is open is skipped without a call. A transient failure moves
// on to the next backend; a permanent one stops at once (the task itself is
// at fault, another backend would reject it too). ctx bounds the whole task;
// each attempt is further bounded by its target's timeout and policies.
func (r *Route) Do(ctx context.Context, req *handlers.Request) (*Answer, error) {
	if r.Deadline > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Deadline)
		defer cancel()
	}
	attempts := make([]Attempt, 0, len(r.Targets))
	var last error
	var wait time.Duration // shortest known time until a backend may serve
	note := func(d time.Duration) {
		if d > 0 && (wait == 0 || d < wait) {
			wait = d
		}
	}
	order := failover{}.Order(r.Targets)
	if r.Strategy != nil {
		order = r.Strategy.Order(r.Targets)
	}
	for _, i := range order {
		t := &r.Targets[i]
		if err := ctx.Err(); err != nil {
			if last == nil {
				last = handlers.Transient(fmt.Errorf("before calling %s: %w", t.Name, err))
			}
			break
		}
		if open, remaining := t.Open(); open {
			note(remaining)
			if last == nil {
				last = handlers.Transient(fmt.Errorf("%s: %w", t.Name, circuitbreaker.ErrOpen))
			}
			continue
		}
		resp, err := t.call(ctx, req, &attempts, r.Validate)
		if err == nil {
			return &Answer{Response: resp, Backend: t.Name, Attempts: attempts}, nil
		}
		last = err
		if handlers.IsPermanent(err) {
			return nil, &Failure{Attempts: attempts, Err: last}
		}
		note(handlers.RetryAfter(err))
		if open, remaining := t.Open(); open {
			note(remaining)
		}
	}
	if last == nil {
		last = handlers.Transient(errors.New("route has no backends"))
	}
	return nil, &Failure{Attempts: attempts, Err: last, RetryAfter: wait}
}

// call runs one target's policies around the backend, recording every
// backend call it makes in attempts.
func (t *Target) call(ctx context.Context, req *handlers.Request, attempts *[]Attempt, v Validator) (*handlers.Response, error) {
	attempt := func(actx context.Context) (*handlers.Response, error) {
		req.Attempt = len(*attempts) + 1
		a := Attempt{Backend: t.Name, Start: time.Now()}
		resp, err := t.Backend.Call(actx, req)
		a.Duration = time.Since(a.Start)
		if err == nil && resp == nil {
			err = handlers.Transient(errors.New("backend returned no response"))
		}
		if err == nil && v != nil {
			if verr := v.Validate(resp.Body); verr != nil {
				err = invalid(verr)
			}
		}
		if t.stats != nil {
			t.stats.observe(a.Duration, err != nil && !handlers.IsPermanent(err))
		}
		if err != nil {
			err = classify(err)
		}
		a.Err = err
		*attempts = append(*attempts, a)
		return resp, err
	}
	var resp *handlers.Response
	var err error
	if t.exec == nil {
		timeout := t.Timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		resp, err = attempt(actx)
		cancel()
	} else {
		resp, err = t.exec.WithContext(ctx).GetWithExecution(func(e failsafe.Execution[*handlers.Response]) (*handlers.Response, error) {
			return attempt(e.Context())
		})
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.Name, classify(classifyPolicyErr(err)))
	}
	return resp, nil
}

// classify makes unclassified failures transient.
func classify(err error) error {
	var he *handlers.Error
	if errors.As(err, &he) || errors.Is(err, handlers.ErrTransient) || errors.Is(err, handlers.ErrPermanent) {
		return err
	}
	return handlers.Transient(err)
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
