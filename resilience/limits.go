package resilience

import (
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/adaptivelimiter"
	"github.com/failsafe-go/failsafe-go/budget"
)

// Defaults of AdaptiveOptions. The bounds and the calls per window are
// failsafe-go's; the window and the baseline are ours, chosen so that the
// limit follows a backend whose capacity drops (see AdaptiveOptions and
// docs/config.md). 20 calls a window moved the limit no faster in
// TestAdaptiveLimitTracksCapacityDrop (while it falls, a window lasts
// twice the fastest call anyway) and made the limit move within a worker's
// first 20 calls.
const (
	DefaultAdaptiveMin         = 1
	DefaultAdaptiveMax         = 200
	DefaultAdaptiveInitial     = 20
	DefaultAdaptiveWindow      = 100 * time.Millisecond
	DefaultAdaptiveWindowCalls = 50
	DefaultAdaptiveBaseline    = 1000
	// DefaultRetryBudgetRemembers caps a retry budget's earnings at what
	// that many uses earn.
	DefaultRetryBudgetRemembers = 100
)

// adaptiveCorrelation turns off the secondary signals of failsafe-go's
// limiter. Besides its queue estimate, it lowers the limit whenever the
// limiter is full and, over the last correlation-window windows, latency
// rose and fell with the limit while throughput stayed flat. But a limit
// that is falling makes latency fall with it, so once the limit had come
// down to the backend's capacity these signals kept lowering it, to the
// minimum, where throughput collapsed and the limit climbed again: a
// sawtooth between 1 and about 10 that lost up to 70 % of the backend's
// throughput in the worst second (over HTTP, with correlation windows of
// 10 and 50; TestAdaptiveLimitFallsWhenBackendQueues fails with them).
// failsafe-go v0.9.8 ignores the correlations until its window holds 10
// samples (internal/util.CorrelationWindow's warmup), so a window of 5
// never reports one; the limit then follows the queue estimate alone and
// settles.
const adaptiveCorrelation = 5

// AdaptiveOptions make a target's concurrency limit adaptive
// (failsafe-go's adaptivelimiter): the limit falls when the backend's
// latency rises above its baseline (calls queue inside it) and rises while
// latency holds, between Min and Max. Calls over the limit wait for a slot
// up to the attempt's timeout, in the worker rather than in the backend.
//
// How it moves: every window, the 90th percentile of the window's call
// latencies (smoothed over the last windows) is compared with the baseline,
// a slow average of the same; queue = limit × (1 − baseline/recent)
// estimates the calls waiting inside the backend. The limit drops by one
// while that estimate is above 6, holds between 3 and 6, and rises by one
// below 3 (they grow with the limit's digits: from 100, steps of 2 and
// thresholds 6 and 12), never above 5 × the calls in flight. So under
// overload it settles with 3 to 6 calls queued in the backend: a backend
// that now serves 4 at once gets a limit near 10, and about 2.5 × its
// service time as latency. One step per window, and a window lasts at
// least twice the fastest call in it: in TestAdaptiveLimitTracksCapacityDrop
// a limit of about 40 over a backend whose capacity fell from 32 to 4
// (20 ms calls) was down to 9-11 within about 10 s.
type AdaptiveOptions struct {
	// Min, Max and Initial bound the limit; DefaultAdaptiveMin,
	// DefaultAdaptiveMax and DefaultAdaptiveInitial when zero. Initial is
	// kept within Min and Max.
	Min, Max, Initial int
	// Window is the shortest time latency is sampled over before the limit
	// moves (at least twice the fastest call of the window, so a slow
	// backend gets longer windows), and WindowCalls the fewest calls;
	// DefaultAdaptiveWindow and DefaultAdaptiveWindowCalls when zero. A
	// window with too few calls is extended up to 30 s. Shorter windows
	// adapt faster and are noisier.
	Window      time.Duration
	WindowCalls int
	// Baseline is how many windows the baseline latency remembers (an
	// exponential average of that age); DefaultAdaptiveBaseline when zero.
	// It must outlast the fall of the limit: with failsafe-go's default,
	// 10, an overloaded backend's latency became the baseline within about
	// ten windows, while the limit had fallen a few steps, and it climbed
	// back (to 200 within 40 s of overload in
	// TestAdaptiveLimitThroughLongOverload). With the default, a backend
	// that stays overloaded (or becomes slower for every call, not from
	// load) is accepted as the new normal over minutes: in that test the
	// limit crept from 9 to 13 over two minutes at capacity 4.
	Baseline int
	// OnLimitChanged observes the limit (logs); nil for none.
	OnLimitChanged func(backend string, from, to int)
}

// newAdaptiveLimiter builds the limiter of o; calls wait up to maxWait for
// a slot.
func newAdaptiveLimiter(name string, o *AdaptiveOptions, maxWait time.Duration) adaptivelimiter.AdaptiveLimiter[response] {
	lo, hi, init := o.Min, o.Max, o.Initial
	if lo <= 0 {
		lo = DefaultAdaptiveMin
	}
	if hi <= 0 {
		hi = max(DefaultAdaptiveMax, lo)
	}
	hi = max(hi, lo)
	if init <= 0 {
		init = DefaultAdaptiveInitial
	}
	init = min(max(init, lo), hi)
	window, calls, baseline := o.Window, o.WindowCalls, o.Baseline
	if window <= 0 {
		window = DefaultAdaptiveWindow
	}
	if calls <= 0 {
		calls = DefaultAdaptiveWindowCalls
	}
	if baseline <= 0 {
		baseline = DefaultAdaptiveBaseline
	}
	b := adaptivelimiter.NewBuilder[response]().
		WithLimits(uint(lo), uint(hi), uint(init)).
		WithRecentWindow(window, max(window, 30*time.Second), uint(calls)).
		WithBaselineWindow(uint(baseline)).
		WithCorrelationWindow(adaptiveCorrelation).
		WithMaxWaitTime(maxWait)
	if f := o.OnLimitChanged; f != nil {
		b = b.OnLimitChanged(func(e adaptivelimiter.LimitChangedEvent) { f(name, int(e.OldLimit), int(e.NewLimit)) })
	}
	return b.Build()
}

// fsBudget is the part of failsafe-go's budget that retryBudget builds on:
// the methods its retry policy calls (they are exported on an unexported
// type, so they are reached through this interface).
type fsBudget interface {
	budget.Budget
	RecordExecution()
	ReleaseExecution()
	TryAcquirePermit() bool
	ReleasePermit()
	OnBudgetExceeded(budget.ExecutionType, failsafe.ExecutionInfo)
}

// retryBudget bounds a target's retries to a share of its calls: every use
// of the target (its first try) earns ratio of a retry, every retry spends
// one, and a retry with less than one earned is not made
// (budget.ErrExceeded aborts the retry policy). The earnings are capped at
// what DefaultRetryBudgetRemembers uses earn, so that a long calm does not
// fund a storm. On top, failsafe-go's own budget keeps the retries in
// flight under ratio of the uses in flight (above 3 of them).
//
// failsafe-go's budget alone bounds retries in flight, not retries made:
// a backend that fails fast has few retries in flight at any moment and
// every task would still be retried max_attempts times during an outage.
//
// It is safe for concurrent use.
type retryBudget struct {
	fsBudget // may be nil when failsafe-go's type changes shape
	ratio    float64
	cap      float64

	mu      sync.Mutex
	balance float64
}

var _ fsBudget = (*retryBudget)(nil)

func newRetryBudget(ratio float64) *retryBudget {
	b := &retryBudget{ratio: ratio, cap: max(1, ratio*DefaultRetryBudgetRemembers)}
	if inner, ok := budget.NewBuilder().WithMaxRate(ratio).Build().(fsBudget); ok {
		b.fsBudget = inner
	}
	return b
}

// RecordExecution is called once per use of the target, before its first
// try.
func (b *retryBudget) RecordExecution() {
	if b.fsBudget != nil {
		b.fsBudget.RecordExecution()
	}
	b.mu.Lock()
	b.balance = min(b.cap, b.balance+b.ratio)
	b.mu.Unlock()
}

// ReleaseExecution is called when a use of the target ends.
func (b *retryBudget) ReleaseExecution() {
	if b.fsBudget != nil {
		b.fsBudget.ReleaseExecution()
	}
}

// TryAcquirePermit is called before each retry; false stops the retries.
func (b *retryBudget) TryAcquirePermit() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.balance < 1 {
		return false
	}
	if b.fsBudget != nil && !b.fsBudget.TryAcquirePermit() {
		return false
	}
	b.balance--
	return true
}

// ReleasePermit is called when a retry that got a permit ends.
func (b *retryBudget) ReleasePermit() {
	if b.fsBudget != nil {
		b.fsBudget.ReleasePermit()
	}
}

// Rate is the share of the uses in flight that are retries.
func (b *retryBudget) Rate() float64 {
	if b.fsBudget != nil {
		return b.fsBudget.Rate()
	}
	return 0
}

// OnBudgetExceeded is called when a retry is refused.
func (b *retryBudget) OnBudgetExceeded(t budget.ExecutionType, info failsafe.ExecutionInfo) {
	if b.fsBudget != nil {
		b.fsBudget.OnBudgetExceeded(t, info)
	}
}

// remaining is how many retries the budget would allow now.
func (b *retryBudget) remaining() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.balance
}

// Limits are a target's current bounds, for health events and metrics.
type Limits struct {
	// Concurrency bounds the calls in flight now: the adaptive limit, the
	// fixed max_concurrency, or 0 when unbounded.
	Concurrency int
	// Adaptive tells whether Concurrency is learned.
	Adaptive bool
	// RetryBudget is how many retries the budget allows now (it may be
	// fractional); -1 when the target has no retry budget.
	RetryBudget float64
}

// Limits reports the target's current bounds. Safe for concurrent use.
func (t *Target) Limits() Limits {
	l := Limits{Concurrency: t.fixedLimit, RetryBudget: -1}
	if t.limiter != nil {
		l.Concurrency, l.Adaptive = t.limiter.Limit(), true
	}
	if t.retryBudget != nil {
		l.RetryBudget = t.retryBudget.remaining()
	}
	return l
}
