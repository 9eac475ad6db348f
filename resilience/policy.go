package resilience

import (
	"context"
	"errors"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/adaptivelimiter"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/ratelimiter"
	"github.com/failsafe-go/failsafe-go/retrypolicy"

	"github.com/breakwater/breakwater/handlers"
)

// PolicyOptions are one backend's resilience policies (the contract's
// timeout, retry, breaker, max_concurrency and rate_limit). Nil or zero
// parts are left out.
type PolicyOptions struct {
	// Timeout bounds each attempt; DefaultTimeout when zero.
	Timeout time.Duration
	Retry   *RetryOptions
	Breaker *BreakerOptions
	// MaxConcurrency bounds calls in flight to the backend (a bulkhead);
	// callers wait up to Timeout for a slot.
	MaxConcurrency int
	// Adaptive, when set, bounds the calls in flight with a limit learned
	// from the backend's latency instead of MaxConcurrency (which is then
	// ignored); callers wait up to Timeout for a slot.
	Adaptive *AdaptiveOptions
	// RateN calls per RatePer, spread evenly (a smooth rate limiter);
	// callers wait up to Timeout for a permit.
	RateN   int
	RatePer time.Duration
	// OnBreakerStateChanged observes the breaker (health events, metrics).
	OnBreakerStateChanged func(backend string, from, to BreakerState)
	// OnRetry observes each retry of a failed call (metrics).
	OnRetry func(backend string)
	// Hook, when set, wraps every backend call (tracing, health, metrics).
	Hook AttemptHook
	// Down, when set, reports whether health checks found the backend down
	// and how soon to look again; a down backend is skipped like one whose
	// breaker is open.
	Down func() (bool, time.Duration)
}

// AttemptHook observes one backend call: it is called before the call
// with the attempt's context, and returns the context to call with and a
// function to call with the finished attempt. attempt counts the task's
// calls from 1.
type AttemptHook func(ctx context.Context, backend string, attempt int) (context.Context, func(Attempt))

// RetryOptions retry transient failures with exponential backoff.
type RetryOptions struct {
	MaxAttempts         int
	Backoff, MaxBackoff time.Duration
	Jitter              float64 // 0..1
	// Budget, when above 0, bounds the target's retries to that share of
	// its uses (see retryBudget): at most Budget × uses retries over time,
	// so an outage adds at most that share of calls. A retry the budget
	// refuses is not made, and the use fails with its last error.
	Budget float64
}

// BreakerOptions open the circuit after FailureThreshold consecutive
// failures, or when FailureRate (0..1] of at least MinCalls calls in Period
// failed; after Delay it lets probes through (half-open) and closes after
// SuccessThreshold successes.
type BreakerOptions struct {
	FailureThreshold int
	FailureRate      float64
	MinCalls         int
	Period           time.Duration
	Delay            time.Duration
	SuccessThreshold int
	// HalfOpenMaxCalls bounds the trial calls let through at once while
	// half-open; 0 means SuccessThreshold of them.
	HalfOpenMaxCalls int
}

type response = *handlers.Response

// NewTarget builds a route target with its policies, composed once at
// start, outermost first:
//
//	retry(breaker(rate limiter(bulkhead or adaptive limiter(timeout(call)))))
//
// (the timeout being the attempt's context deadline)
//
// so every retry is a new breaker decision and a new permit, and the
// timeout bounds the call alone. Only transient failures are retried and
// count against the breaker; a permanent failure (the task's fault) does
// neither. The breaker being open aborts the retries at once.
func NewTarget(name string, b handlers.Backend, o PolicyOptions) Target {
	t := Target{Name: name, Backend: b, Timeout: o.Timeout, stats: &latencyStats{}, hook: o.Hook, down: o.Down}
	var policies []failsafe.Policy[response]
	if r := o.Retry; r != nil && r.MaxAttempts > 1 {
		rb := retrypolicy.NewBuilder[response]().
			HandleIf(func(_ response, err error) bool { return isTransient(err) }).
			AbortOnErrors(circuitbreaker.ErrOpen).
			WithMaxAttempts(r.MaxAttempts).
			ReturnLastFailure().
			// A backend's Retry-After wins over the computed backoff.
			WithDelayFunc(func(exec failsafe.ExecutionAttempt[response]) time.Duration {
				if d := handlers.RetryAfter(exec.LastError()); d > 0 {
					return d
				}
				return -1
			})
		if r.Backoff > 0 {
			rb = rb.WithBackoff(r.Backoff, max(r.MaxBackoff, r.Backoff))
		}
		if r.Jitter > 0 {
			rb = rb.WithJitterFactor(r.Jitter)
		}
		if f := o.OnRetry; f != nil {
			rb = rb.OnRetry(func(failsafe.ExecutionEvent[response]) { f(name) })
		}
		if r.Budget > 0 {
			t.retryBudget = newRetryBudget(r.Budget)
			rb = rb.WithBudget(t.retryBudget)
		}
		policies = append(policies, rb.Build())
		t.tries, t.backoffs = r.MaxAttempts, time.Duration(r.MaxAttempts-1)*max(r.MaxBackoff, r.Backoff)
	}
	if br := o.Breaker; br != nil {
		cb := circuitbreaker.NewBuilder[response]().
			HandleIf(func(_ response, err error) bool { return isTransient(err) })
		if br.FailureRate > 0 {
			cb = cb.WithFailureRateThreshold(br.FailureRate, uint(max(br.MinCalls, 1)), br.Period)
		} else {
			cb = cb.WithFailureThreshold(uint(max(br.FailureThreshold, 1)))
		}
		// failsafe lets as many calls through half-open as the success
		// threshold's capacity: half_open_max_calls widens it.
		succ := uint(max(br.SuccessThreshold, 1))
		cb = cb.WithDelay(br.Delay).WithSuccessThresholdRatio(succ, max(succ, uint(br.HalfOpenMaxCalls)))
		if f := o.OnBreakerStateChanged; f != nil {
			cb = cb.OnStateChanged(func(e circuitbreaker.StateChangedEvent) { f(name, breakerState(e.OldState), breakerState(e.NewState)) })
		}
		t.breaker = cb.Build()
		policies = append(policies, t.breaker)
	}
	if o.RateN > 0 || o.MaxConcurrency > 0 || o.Adaptive != nil {
		t.waits = true // a permit or slot wait, each bounded by the timeout
	}
	if o.RateN > 0 && o.RatePer/time.Duration(o.RateN) > 0 { // faster than 1/ns is no limit
		policies = append(policies, ratelimiter.NewSmoothBuilder[response](uint(o.RateN), o.RatePer).
			WithMaxWaitTime(t.timeout()).Build())
	}
	switch {
	case o.Adaptive != nil:
		// The limiter measures the call alone: below the rate limiter, so a
		// permit's wait is not taken for the backend's latency.
		t.limiter = newAdaptiveLimiter(name, o.Adaptive, t.timeout())
		policies = append(policies, t.limiter)
	case o.MaxConcurrency > 0:
		t.fixedLimit = o.MaxConcurrency
		policies = append(policies, bulkhead.NewBuilder[response](uint(o.MaxConcurrency)).
			WithMaxWaitTime(t.timeout()).Build())
	}
	// The attempt timeout is a context deadline set in Target.call rather
	// than failsafe's timeout policy: the same effect for a backend that
	// honours its context, at a fraction of the cost per call.
	if len(policies) > 0 {
		t.exec = failsafe.With(policies...)
	}
	return t
}

// isTransient reports whether err is worth another try.
func isTransient(err error) bool {
	return err != nil && !handlers.IsPermanent(err)
}

// Open reports whether the target's breaker refuses calls now, and for how
// much longer.
func (t *Target) Open() (bool, time.Duration) {
	if t.down != nil {
		if down, retryIn := t.down(); down {
			return true, retryIn
		}
	}
	if t.breaker == nil || !t.breaker.IsOpen() {
		return false, 0
	}
	// Past its delay an open breaker goes half-open on the next call, so
	// it is not skipped: that call is the probe.
	remaining := t.breaker.RemainingDelay()
	return remaining > 0, remaining
}

// Breaker exposes the target's circuit breaker, or nil when it has none
// (health reporting, admin commands). Two calls on targets sharing a
// breaker (kept across a reload) return equal values.
func (t *Target) Breaker() Breaker {
	if t.breaker == nil {
		return nil
	}
	return breaker{t.breaker}
}

// BreakerState is a circuit breaker's state, spelled as health events and
// metrics spell it (health.BreakerState has the same values).
type BreakerState string

// Breaker states.
const (
	BreakerClosed   BreakerState = "closed"
	BreakerOpen     BreakerState = "open"
	BreakerHalfOpen BreakerState = "half-open"
)

// String returns the state as the events spell it.
func (s BreakerState) String() string { return string(s) }

// Breaker is a target's circuit breaker as the admin plane and health
// reporting use it: the breaker library stays behind it. Safe for
// concurrent use.
type Breaker interface {
	// State is the breaker's state now.
	State() BreakerState
	// Open trips the breaker: it refuses calls for its configured delay,
	// then lets probes through.
	Open()
	// Close resets the breaker: calls go through at once.
	Close()
}

// breaker adapts failsafe-go's breaker to Breaker. It is a comparable
// value, so that equal breakers compare equal through the interface.
type breaker struct {
	cb circuitbreaker.CircuitBreaker[response]
}

func (b breaker) State() BreakerState { return breakerState(b.cb.State()) }
func (b breaker) Open()               { b.cb.Open() }
func (b breaker) Close()              { b.cb.Close() }

// breakerState names failsafe-go's breaker states.
func breakerState(s circuitbreaker.State) BreakerState {
	switch s {
	case circuitbreaker.OpenState:
		return BreakerOpen
	case circuitbreaker.HalfOpenState:
		return BreakerHalfOpen
	default:
		return BreakerClosed
	}
}

// classifyPolicyErr turns the policies' own refusals into transient
// backend errors, so that the route moves on and the task's fate is decided
// by class alone.
func classifyPolicyErr(err error) error {
	switch {
	case errors.Is(err, circuitbreaker.ErrOpen),
		errors.Is(err, bulkhead.ErrFull),
		errors.Is(err, adaptivelimiter.ErrExceeded),
		errors.Is(err, ratelimiter.ErrExceeded):
		return handlers.Transient(err)
	}
	return err
}
