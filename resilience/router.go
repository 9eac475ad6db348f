package resilience

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/adaptivelimiter"
	"github.com/failsafe-go/failsafe-go/budget"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/breakwater/breakwater/handlers"
)

// ErrNoRoute means no route serves the task's type.
var ErrNoRoute = errors.New("no route for task type")

// ErrUnavailable means a route made no backend call at all because every
// backend's breaker refused (open, or half-open with its trial calls
// taken): an outage, not a failure of the task. A Failure wrapping it also
// wraps handlers.ErrTransient.
var ErrUnavailable = errors.New("every backend of the route is unavailable")

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
	hook    AttemptHook
	down    func() (bool, time.Duration)
	// For Budget: calls per use (0: one), their backoffs, and whether
	// a call may first wait for a permit or a slot.
	tries    int
	backoffs time.Duration
	waits    bool
	// Bounds reported by Limits.
	limiter     adaptivelimiter.AdaptiveLimiter[*handlers.Response]
	fixedLimit  int
	retryBudget *retryBudget
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
	// HedgeAfter, when set, races the rest of the order against a first
	// backend that has not answered after this long.
	HedgeAfter time.Duration
}

// Attempt records one backend call.
type Attempt struct {
	Backend  string
	Start    time.Time
	Duration time.Duration
	Err      error // nil on success
	// Waited is how long the call waited for the target's rate limiter
	// and bulkhead before it went out (the first try of a use only).
	Waited time.Duration
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

// Error is the deciding error's text alone. It used to begin with "N
// attempt(s) failed", the calls of this one delivery, which became the
// task's Dlq-Error and read as a contradiction beside Dlq-Attempts (every
// call of every delivery); the calls are in Attempts and the DLQ history.
func (f *Failure) Error() string {
	if f.Err == nil {
		return "route failed"
	}
	return f.Err.Error()
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

// Do calls the route's backends in the strategy's order until one
// answers. A backend whose breaker is open is skipped without a call. A
// transient failure moves on to the next backend; a permanent one stops at
// once (the task itself is at fault, another backend would reject it too).
// With HedgeAfter, a first backend still busy after that long is raced by
// the rest of the order, and the first answer wins. ctx bounds the whole
// task, as does Deadline; each attempt is further bounded by its target's
// timeout and policies.
func (r *Route) Do(ctx context.Context, req *handlers.Request) (*Answer, error) {
	if r.Deadline > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Deadline)
		defer cancel()
	}
	var strategy Strategy = failover{}
	if r.Strategy != nil {
		strategy = r.Strategy
	}
	var order []int
	if r.Strategy == nil && len(r.Targets) == 1 {
		order = oneTarget[:] // failover over one target: no slice per call
	} else {
		order = strategy.Order(r.Targets)
	}
	log := &attemptLog{}
	log.list = log.inline[:0]
	var o outcome
	if r.HedgeAfter > 0 && len(order) > 1 {
		o = r.hedged(ctx, req, order, log)
	} else {
		o = r.run(ctx, req, order, log)
	}
	attempts := log.list // every racer has returned: no more writers
	switch {
	case o.err == nil:
		return &Answer{Response: o.resp, Backend: o.backend, Attempts: attempts}, nil
	case handlers.IsPermanent(o.err):
		return nil, &Failure{Attempts: attempts, Err: o.err}
	}
	err := o.err
	if len(attempts) == 0 && errors.Is(err, circuitbreaker.ErrOpen) && ctx.Err() == nil {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil, &Failure{Attempts: attempts, Err: err, RetryAfter: o.wait}
}

// Unavailable reports whether every backend of the route has an open
// breaker now, so that a task would be refused without a call, and the
// shortest time until one of them lets a trial call through.
func (r *Route) Unavailable() (bool, time.Duration) {
	if len(r.Targets) == 0 {
		return false, 0
	}
	var wait time.Duration
	for i := range r.Targets {
		open, remaining := r.Targets[i].Open()
		if !open {
			return false, 0
		}
		if wait == 0 || remaining < wait {
			wait = remaining
		}
	}
	return true, wait
}

// oneTarget is the order of a route with one target; never written.
var oneTarget = [1]int{0}

// outcome is what one pass over some of a route's targets came to.
type outcome struct {
	resp    *handlers.Response
	backend string
	err     error
	wait    time.Duration // shortest known time until a backend may serve
}

// run tries the targets at order in turn (failover).
func (r *Route) run(ctx context.Context, req *handlers.Request, order []int, log *attemptLog) outcome {
	var o outcome
	note := func(d time.Duration) {
		if d > 0 && (o.wait == 0 || d < o.wait) {
			o.wait = d
		}
	}
	for _, i := range order {
		t := &r.Targets[i]
		if err := ctx.Err(); err != nil {
			if o.err == nil {
				o.err = handlers.Transient(fmt.Errorf("before calling %s: %w", t.Name, err))
			}
			return o
		}
		if open, remaining := t.Open(); open {
			note(remaining)
			if o.err == nil {
				o.err = handlers.Transient(fmt.Errorf("%s: %w", t.Name, circuitbreaker.ErrOpen))
			}
			continue
		}
		resp, err := t.call(ctx, req, log, r.Validate)
		if err == nil {
			return outcome{resp: resp, backend: t.Name}
		}
		o.err = err
		if handlers.IsPermanent(err) {
			return o
		}
		note(handlers.RetryAfter(err))
		if open, remaining := t.Open(); open {
			note(remaining)
		}
	}
	if o.err == nil {
		o.err = handlers.Transient(errors.New("route has no backends"))
	}
	return o
}

// hedged runs the first target, and the rest of the order (as failover)
// once HedgeAfter passes or the first fails, whichever is sooner. The first
// answer wins and cancels the other; Do returns only when both are done.
func (r *Route) hedged(ctx context.Context, req *handlers.Request, order []int, log *attemptLog) outcome {
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan outcome, 2)
	start := func(part []int) {
		rq := *req // each racer numbers its own attempts
		go func() { results <- r.run(hctx, &rq, part, log) }()
	}
	start(order[:1])
	running, hedgedYet := 1, false
	hedge := func() {
		if !hedgedYet {
			hedgedYet = true
			running++
			start(order[1:])
		}
	}
	timer := time.NewTimer(r.HedgeAfter)
	defer timer.Stop()
	var last outcome
	for running > 0 || !hedgedYet {
		select {
		case <-timer.C:
			hedge()
		case o := <-results:
			running--
			if o.err == nil || handlers.IsPermanent(o.err) {
				cancel()
				for ; running > 0; running-- {
					<-results
				}
				return o
			}
			// Keep the shortest known wait of the two racers.
			if last.wait > 0 && (o.wait == 0 || last.wait < o.wait) {
				o.wait = last.wait
			}
			last = o
			hedge()
		}
	}
	return last
}

// attemptLog collects the attempts of a task; hedged racers share it.
type attemptLog struct {
	mu   sync.Mutex
	list []Attempt
	// inline backs list for the first attempts: most tasks make one, and
	// the log is allocated anyway.
	inline [2]Attempt
}

func (l *attemptLog) add(a Attempt) {
	l.mu.Lock()
	l.list = append(l.list, a)
	l.mu.Unlock()
}

func (l *attemptLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.list)
}

// budget is the longest one use of the target can take when the backend
// honours its context: every try, its wait for a permit, and the backoffs
// (Retry-After beyond them is not counted).
func (t *Target) budget() time.Duration {
	per := t.timeout()
	if t.waits {
		per *= 2
	}
	return time.Duration(max(t.tries, 1))*per + t.backoffs
}

// Budget is the longest a task can take on this route when every backend
// honours its context: Deadline when set, else every target's budget in
// turn. A task running much longer is stuck in a backend that ignores
// cancellation.
func (r *Route) Budget() time.Duration {
	if r.Deadline > 0 {
		return r.Deadline
	}
	var total time.Duration
	for i := range r.Targets {
		total += r.Targets[i].budget()
	}
	return total
}

// timeout bounds one attempt: Timeout, or DefaultTimeout when unset.
func (t *Target) timeout() time.Duration {
	if t.Timeout > 0 {
		return t.Timeout
	}
	return DefaultTimeout
}

// call runs one target's policies around the backend, recording every
// backend call it makes in attempts.
func (t *Target) call(ctx context.Context, req *handlers.Request, log *attemptLog, v Validator) (*handlers.Response, error) {
	c := callState{t: t, req: req, log: log, v: v, timeout: t.timeout(), start: time.Now()}
	var resp *handlers.Response
	var err error
	if t.exec == nil {
		// No policies: the one try runs here, without a closure for an
		// executor (an allocation per task on the busiest path).
		resp, err = c.attempt(ctx)
	} else {
		resp, err = t.exec.WithContext(ctx).GetWithExecution(func(e failsafe.Execution[*handlers.Response]) (*handlers.Response, error) {
			return c.attempt(e.Context())
		})
	}
	if err != nil {
		if errors.Is(err, budget.ErrExceeded) && c.last != nil {
			// The retry not made says less than the try that failed.
			err = fmt.Errorf("%w (not retried: retry budget spent)", c.last)
		}
		return nil, fmt.Errorf("%s: %w", t.Name, classify(classifyPolicyErr(err)))
	}
	return resp, nil
}

// callState is one use of a target: its tries share it.
type callState struct {
	t       *Target
	req     *handlers.Request
	log     *attemptLog
	v       Validator
	timeout time.Duration
	start   time.Time // of the use, for the first try's wait
	tries   int
	last    error // the last try's error
}

// attempt is one try: one backend call under the attempt timeout.
func (c *callState) attempt(ctx context.Context) (*handlers.Response, error) {
	t, req := c.t, c.req
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req.Attempt = c.log.len() + 1
	var end func(Attempt)
	if t.hook != nil {
		actx, end = t.hook(actx, t.Name, req.Attempt)
	}
	a := Attempt{Backend: t.Name, Start: time.Now()}
	if c.tries++; c.tries == 1 {
		a.Waited = a.Start.Sub(c.start)
	}
	resp, err := t.Backend.Call(actx, req)
	a.Duration = time.Since(a.Start)
	if err == nil && resp == nil {
		err = handlers.Transient(errors.New("backend returned no response"))
	}
	if err == nil && c.v != nil {
		if verr := c.v.Validate(resp.Body); verr != nil {
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
	c.last = err
	c.log.add(a)
	if end != nil {
		end(a)
	}
	return resp, err
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
