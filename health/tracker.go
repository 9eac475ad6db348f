package health

import (
	"slices"
	"sync"
	"time"
)

// Window sizes of a backend's tracker.
const (
	// windowCalls is how many recent calls the success rate and the
	// latency percentiles are computed over.
	windowCalls = 200
	// availabilitySlot and availabilitySlots make the rolling window of
	// availability: one hour in one-minute slots.
	availabilitySlot  = time.Minute
	availabilitySlots = 60
	// minCalls is the fewest calls in the window for a success rate (or
	// an availability) to judge a backend by.
	minCalls = 10
)

// tracker follows one backend: its recent calls, breaker, probes and
// in-flight calls. Its methods are safe for concurrent use and cheap: the
// task path calls them on every attempt.
type tracker struct {
	mu sync.Mutex
	// Ring of the last windowCalls calls.
	ok      [windowCalls]bool
	latency [windowCalls]time.Duration
	next, n int
	okCount int

	inFlight    int
	breaker     string    // closed, open, half-open
	breakerAt   time.Time // when it entered that state
	probeFailed int       // consecutive failed probes
	probeErr    string
	probed      bool // has a probe

	slots [availabilitySlots]slot
}

// slot counts the calls of one availability slot.
type slot struct {
	start     time.Time
	ok, total int
}

func newTracker(now time.Time) *tracker {
	return &tracker{breaker: BreakerClosed, breakerAt: now}
}

func (t *tracker) started() {
	t.mu.Lock()
	t.inFlight++
	t.mu.Unlock()
}

// done records a call's outcome (ok: the backend did its job).
func (t *tracker) done(now time.Time, d time.Duration, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.inFlight--
	if t.n == windowCalls && t.ok[t.next] {
		t.okCount--
	}
	t.ok[t.next], t.latency[t.next] = ok, d
	if ok {
		t.okCount++
	}
	t.next = (t.next + 1) % windowCalls
	t.n = min(t.n+1, windowCalls)
	t.count(now, ok)
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

func (t *tracker) setBreaker(now time.Time, state string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.breaker == state {
		return false
	}
	t.breaker, t.breakerAt = state, now
	return true
}

func (t *tracker) probe(now time.Time, err error) {
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
}

// view is what a tracker says at one moment.
type view struct {
	state, reason     string
	breaker           string
	breakerSince      time.Time
	successRate       float64 // 0..1, 1 without calls
	calls             int
	p50, p95, p99     time.Duration
	inFlight          int
	availability      float64 // percent, 100 without calls
	availabilityCalls int
	probeDown         bool
}

// snapshot computes the view; with percentiles false it skips the sort
// (state checks on the task path).
func (t *tracker) snapshot(now time.Time, percentiles bool) view {
	t.mu.Lock()
	v := view{breaker: t.breaker, breakerSince: t.breakerAt, inFlight: t.inFlight, calls: t.n, successRate: 1,
		probeDown: t.probed && t.probeFailed >= 2}
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
	probeErr := t.probeErr
	t.mu.Unlock()

	v.availability, v.availabilityCalls = 100, total
	if total > 0 {
		v.availability = 100 * float64(ok) / float64(total)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		at := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
		v.p50, v.p95, v.p99 = at(0.50), at(0.95), at(0.99)
	}
	v.state, v.reason = judge(v, probeErr)
	return v
}

// judge is the documented state rule:
//
//	unhealthy  breaker open; or the active probe failed twice in a row; or
//	           under 50 % of the last 200 calls succeeded (at least 10)
//	degraded   breaker half-open; or under 95 % succeeded (at least 10)
//	healthy    otherwise
func judge(v view, probeErr string) (state, reason string) {
	switch {
	case v.breaker == BreakerOpen:
		return Unhealthy, "circuit breaker open"
	case v.probeDown:
		return Unhealthy, "health probe failing: " + probeErr
	case v.calls >= minCalls && v.successRate < 0.5:
		return Unhealthy, "success rate under 50%"
	case v.breaker == BreakerHalfOpen:
		return Degraded, "circuit breaker half-open"
	case v.calls >= minCalls && v.successRate < 0.95:
		return Degraded, "success rate under 95%"
	}
	return Healthy, ""
}
