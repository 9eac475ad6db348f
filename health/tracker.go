package health

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Window sizes of a backend's tracker.
const (
	// windowCalls is how many recent calls the success rate and the
	// latency percentiles are computed over. A count, not a duration: a
	// backend that gets no traffic keeps the verdict of its last calls
	// until its breaker or its probe says otherwise.
	windowCalls = WindowCalls
	// availabilitySlot and availabilitySlots make the rolling window of
	// availability: one hour in one-minute slots.
	availabilitySlot  = time.Minute
	availabilitySlots = 60
	// minCalls is the fewest calls in the window for a success rate (or
	// an availability) to judge a backend by.
	minCalls = MinCalls
	// probeFailures is how many probes in a row must fail for a backend
	// to be unhealthy and skipped by routing: one lost packet is not an
	// outage.
	probeFailures = 2
	// maxPending bounds the transitions kept for Run to publish; a
	// backend flapping faster than Run publishes loses the oldest ones.
	maxPending = 64
)

// WindowCalls is how many recent calls of a backend its success rate,
// rejected count and latency percentiles are over.
const WindowCalls = 200

// MinCalls is the fewest calls a backend's window must hold for its
// success rate to judge it (and the fewest calls and probes in the hour
// for its availability alert): under it, a success rate says too little
// to show as a figure.
const MinCalls = 10

// tracker follows one backend: its recent calls, breaker, probes and
// in-flight calls. Its methods are safe for concurrent use and cheap: the
// task path calls them on every attempt, and the state is judged there in
// constant time so that every transition is seen where it happens.
type tracker struct {
	mu sync.Mutex
	// Ring of the last windowCalls calls. A rejected call (the backend
	// refused the task as the task's fault) is also ok: it says nothing
	// against the backend, but a reader must still see that tasks fail.
	ok       [windowCalls]bool
	rejected [windowCalls]bool
	latency  [windowCalls]time.Duration
	next, n  int
	okCount  int
	rejCount int

	inFlight    int
	breaker     BreakerState
	breakerAt   time.Time // when it entered that state
	probeFailed int       // consecutive failed probes
	probeErr    string
	probed      bool // has a probe

	state   State
	reason  string
	stateAt time.Time    // when state began
	pending []transition // not yet published
	dropped int          // transitions lost to maxPending

	slots [availabilitySlots]slot
}

// transition is one change of a backend's state or breaker, as it was
// when it happened.
type transition struct {
	state       State
	reason      string
	breaker     BreakerState
	at, since   time.Time // since: when state began
	successRate float64
	inFlight    int
}

// slot counts the calls of one availability slot.
type slot struct {
	start     time.Time
	ok, total int
}

func newTracker(now time.Time) *tracker {
	t := &tracker{breaker: BreakerClosed, breakerAt: now, stateAt: now}
	t.state, t.reason = t.judge()
	return t
}

func (t *tracker) started() {
	t.mu.Lock()
	t.inFlight++
	t.mu.Unlock()
}

// done records a call's outcome (ok: the backend did its job) and reports
// whether the backend's state changed.
func (t *tracker) done(now time.Time, d time.Duration, ok bool) bool {
	return t.record(now, d, ok, false)
}

// reject records a call the backend answered with a permanent refusal
// (handlers.IsPermanent: the task's fault). It counts as a success in
// judging the backend and in its availability, and in the rejected count
// of the window, so that a backend refusing every task reads "healthy,
// all rejected" rather than only "healthy". It reports whether the state
// changed.
func (t *tracker) reject(now time.Time, d time.Duration) bool {
	return t.record(now, d, true, true)
}

// AttemptRejected records a finished call that took d and that backend
// answered with a permanent refusal (handlers.IsPermanent: a 4xx, the
// task's fault). Like AttemptDone with such an error it counts as the
// backend doing its job, and it is also counted as rejected over the same
// window of calls, so that a backend refusing every task is not reported
// as plainly healthy. Safe for concurrent use, constant time.
func (m *Monitor) AttemptRejected(backend string, d time.Duration) {
	if m.tracker(backend).reject(m.o.Now(), d) {
		m.poke()
	}
}

func (t *tracker) record(now time.Time, d time.Duration, ok, rejected bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	// A done without a started (a caller that records only outcomes)
	// must not drive the gauge negative.
	t.inFlight = max(t.inFlight-1, 0)
	if t.n == windowCalls {
		if t.ok[t.next] {
			t.okCount--
		}
		if t.rejected[t.next] {
			t.rejCount--
		}
	}
	t.ok[t.next], t.rejected[t.next], t.latency[t.next] = ok, rejected, d
	if ok {
		t.okCount++
	}
	if rejected {
		t.rejCount++
	}
	t.next = (t.next + 1) % windowCalls
	t.n = min(t.n+1, windowCalls)
	t.count(now, ok)
	return t.rejudge(now, false)
}

// count adds a call to its availability slot.
func (t *tracker) count(now time.Time, ok bool) {
	start := now.Truncate(availabilitySlot)
	s := &t.slots[(start.Unix()/int64(availabilitySlot/time.Second))%availabilitySlots]
	if !s.start.Equal(start) {
		*s = slot{start: start}
	}
	s.total++
	if ok {
		s.ok++
	}
}

// setBreaker records the breaker entering state and reports whether that
// is a change.
func (t *tracker) setBreaker(now time.Time, state BreakerState) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.breaker == state {
		return false
	}
	t.breaker, t.breakerAt = state, now
	return t.rejudge(now, true)
}

// probe records a probe's outcome and reports whether the state changed.
func (t *tracker) probe(now time.Time, err error) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.probed = true
	if err != nil {
		t.probeFailed++
		t.probeErr = err.Error()
	} else {
		t.probeFailed, t.probeErr = 0, ""
	}
	t.count(now, err == nil)
	return t.rejudge(now, false)
}

func (t *tracker) down() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.probeDown()
}

func (t *tracker) probeDown() bool { return t.probed && t.probeFailed >= probeFailures }

// rejudge applies the state rule; a change of state (or of the breaker,
// when breakerChanged) is queued for Run to publish. The caller holds mu.
func (t *tracker) rejudge(now time.Time, breakerChanged bool) bool {
	state, reason := t.judge()
	t.reason = reason
	if state == t.state && !breakerChanged {
		return false
	}
	if state != t.state {
		t.state, t.stateAt = state, now
	}
	if len(t.pending) == maxPending {
		t.pending = slices.Delete(t.pending, 0, 1)
		t.dropped++
	}
	rate := 1.0
	if t.n > 0 {
		rate = float64(t.okCount) / float64(t.n)
	}
	t.pending = append(t.pending, transition{state: state, reason: reason, breaker: t.breaker, at: now,
		since: t.stateAt, successRate: rate, inFlight: t.inFlight})
	return true
}

// judge is the documented state rule (see the package doc):
//
//	unhealthy  breaker open; or the active probe failed twice in a row; or
//	           under 50 % of the last 200 calls succeeded (at least 10)
//	degraded   breaker half-open; or under 95 % succeeded (at least 10)
//	healthy    otherwise
//
// A healthy backend gets a reason too when its success rate is not one a
// reader should trust or read alone: too few calls to judge it, or calls
// it rejected as the tasks' fault. The caller holds mu.
func (t *tracker) judge() (state State, reason string) {
	judged := t.n >= minCalls
	// Integer arithmetic: okCount/n < 0.5 and < 0.95 without division.
	switch {
	case t.breaker == BreakerOpen:
		return Unhealthy, "circuit breaker open"
	case t.probeDown():
		return Unhealthy, "health probe failing: " + t.probeErr
	case judged && 2*t.okCount < t.n:
		return Unhealthy, "success rate under 50%"
	case t.breaker == BreakerHalfOpen:
		return Degraded, "circuit breaker half-open"
	case judged && 100*t.okCount < 95*t.n:
		return Degraded, "success rate under 95%"
	case t.n == 0:
		return Healthy, "no calls yet"
	case !judged:
		return Healthy, fmt.Sprintf("too few calls to judge (%d of %d)", t.n, minCalls)
	case t.rejCount > 0:
		return Healthy, fmt.Sprintf("%d of the last %d calls rejected as the task's fault", t.rejCount, t.n)
	}
	return Healthy, ""
}

// takePending returns the transitions not yet published and how many were
// lost since the last call.
func (t *tracker) takePending() ([]transition, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, d := t.pending, t.dropped
	t.pending, t.dropped = nil, 0
	return p, d
}

// view is what a tracker says at one moment.
type view struct {
	state             State
	reason            string
	stateSince        time.Time
	breaker           BreakerState
	breakerSince      time.Time
	successRate       float64 // 0..1, 1 without calls; rejections count as successes
	calls             int     // in the window the success rate is over
	rejected          int     // of calls, refused as the task's fault
	p50, p95, p99     time.Duration
	inFlight          int
	availability      float64 // percent, 100 without calls
	availabilityCalls int
}

// snapshot computes the view; with percentiles false it skips the sort.
func (t *tracker) snapshot(now time.Time, percentiles bool) view {
	t.mu.Lock()
	v := view{state: t.state, reason: t.reason, stateSince: t.stateAt, breaker: t.breaker, breakerSince: t.breakerAt,
		inFlight: t.inFlight, calls: t.n, rejected: t.rejCount, successRate: 1}
	if t.n > 0 {
		v.successRate = float64(t.okCount) / float64(t.n)
	}
	var lat []time.Duration
	if percentiles && t.n > 0 {
		lat = slices.Clone(t.latency[:t.n])
	}
	ok, total := 0, 0
	oldest := now.Add(-availabilitySlot * availabilitySlots)
	for _, s := range t.slots {
		if s.start.After(oldest) {
			ok, total = ok+s.ok, total+s.total
		}
	}
	t.mu.Unlock()

	v.availability, v.availabilityCalls = 100, total
	if total > 0 {
		v.availability = 100 * float64(ok) / float64(total)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		// Nearest rank: the smallest latency at or above q of the calls.
		at := func(q float64) time.Duration {
			i := int(math.Ceil(q*float64(len(lat)))) - 1
			return lat[min(max(i, 0), len(lat)-1)]
		}
		v.p50, v.p95, v.p99 = at(0.50), at(0.95), at(0.99)
	}
	return v
}
