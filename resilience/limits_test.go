package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/resilience"
)

// queueingBackend serves capacity calls at once, each for service; the
// calls beyond capacity queue inside it, as an overloaded service's do.
type queueingBackend struct {
	sem     atomic.Pointer[chan struct{}]
	service time.Duration
}

func newQueueingBackend(capacity int, service time.Duration) *queueingBackend {
	b := &queueingBackend{service: service}
	b.setCapacity(capacity)
	return b
}

// setCapacity changes how many calls are served at once from now on.
func (b *queueingBackend) setCapacity(n int) {
	ch := make(chan struct{}, n)
	b.sem.Store(&ch)
}

func (b *queueingBackend) Call(ctx context.Context, req *handlers.Request) (*handlers.Response, error) {
	sem := *b.sem.Load()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, handlers.Transient(ctx.Err())
	}
	defer func() { <-sem }()
	timer := time.NewTimer(b.service)
	defer timer.Stop()
	select {
	case <-timer.C:
		return &handlers.Response{Body: req.Payload}, nil
	case <-ctx.Done():
		return nil, handlers.Transient(ctx.Err())
	}
}

// latencies collects the backend latency of calls (the attempt's
// duration, without its wait for a slot in the worker) per period.
type latencies struct {
	mu    sync.Mutex
	sum   time.Duration
	count int
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.sum += d
	l.count++
	l.mu.Unlock()
}

func (l *latencies) reset() {
	l.mu.Lock()
	l.sum, l.count = 0, 0
	l.mu.Unlock()
}

func (l *latencies) calls() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count
}

func (l *latencies) mean() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count == 0 {
		return 0
	}
	return l.sum / time.Duration(l.count)
}

// TestAdaptiveLimitFallsWhenBackendQueues drives two backends alike with
// more callers than they serve at once: one behind a fixed limit of 20,
// one behind an adaptive limit (at most 40, the default windows). When both
// backends' capacity drops from 20 to 4 calls at once, calls start queueing
// inside them: the fixed limit keeps 20 in flight and latency stays five
// times the service time; the adaptive limit must fall, and the latency
// behind it come back to near the service time (about 2 ×: the limiter
// settles with a few calls queued) within 5 s. When the capacity comes
// back, the limit must rise again. The clock is synctest's, so the test
// does not depend on the machine's load; TestAdaptiveLimitTracksCapacityDrop
// does the same over HTTP in real time.
func TestAdaptiveLimitFallsWhenBackendQueues(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const service = 10 * time.Millisecond
		type side struct {
			name    string
			backend *queueingBackend
			target  resilience.Target
			lat     latencies
		}
		fixedBE, adaptiveBE := newQueueingBackend(20, service), newQueueingBackend(20, service)
		var dropped atomic.Bool
		var lowest atomic.Int32 // the adaptive limit's lowest after the drop
		lowest.Store(1 << 30)
		sides := []*side{
			{name: "fixed", backend: fixedBE, target: resilience.NewTarget("fixed", fixedBE, resilience.PolicyOptions{MaxConcurrency: 20})},
			{name: "adaptive", backend: adaptiveBE, target: resilience.NewTarget("adaptive", adaptiveBE, resilience.PolicyOptions{
				Adaptive: &resilience.AdaptiveOptions{Max: 40, Initial: 20,
					OnLimitChanged: func(_ string, _, to int) {
						if dropped.Load() {
							lowest.Store(min(lowest.Load(), int32(to)))
						}
					}},
			})},
		}
		if l := sides[1].target.Limits(); l.Concurrency != 20 || !l.Adaptive || l.RetryBudget != -1 {
			t.Fatalf("adaptive limits at start: got %+v, want 20, adaptive, no budget", l)
		}
		if l := sides[0].target.Limits(); l.Concurrency != 20 || l.Adaptive {
			t.Fatalf("fixed limits: got %+v, want 20, not adaptive", l)
		}

		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, s := range sides {
			route := &resilience.Route{Name: s.name, Targets: []resilience.Target{s.target}}
			for i := range 40 {
				wg.Go(func() {
					req := &handlers.Request{TaskID: fmt.Sprint(i)}
					for ctx.Err() == nil {
						ans, err := route.Do(ctx, req)
						if err != nil {
							if ctx.Err() == nil {
								t.Errorf("%s: %v", s.name, err)
							}
							return
						}
						s.lat.add(ans.Attempts[len(ans.Attempts)-1].Duration)
					}
				})
			}
		}

		time.Sleep(3 * time.Second) // simulated: the healthy phase
		for _, s := range sides {
			if got := s.lat.mean(); got > 3*service {
				t.Errorf("%s at full capacity: mean latency %v, want about %v", s.name, got, service)
			}
			s.backend.setCapacity(4)
			s.lat.reset()
		}
		before := sides[1].target.Limits().Concurrency
		dropped.Store(true)
		time.Sleep(5 * time.Second) // simulated: the limit falls
		falling := sides[1].lat.mean()
		for _, s := range sides {
			s.lat.reset()
		}
		time.Sleep(5 * time.Second) // simulated: the limits after the fall
		fixed, adaptive := sides[0].lat.mean(), sides[1].lat.mean()
		fixedCalls, adaptiveCalls := sides[0].lat.calls(), sides[1].lat.calls()
		settled := sides[1].target.Limits().Concurrency
		t.Logf("after the capacity fell from 20 to 4: fixed limit 20: mean latency %v, %d calls over 5-10 s; adaptive: limit %d before, lowest %d after, %d at 10 s, mean latency %v over 0-5 s, %v and %d calls over 5-10 s",
			fixed, fixedCalls, before, lowest.Load(), settled, falling, adaptive, adaptiveCalls)
		if fixed < 4*service {
			t.Errorf("fixed limit: mean latency %v, want about %v (20 in flight, 4 served at once)", fixed, 5*service)
		}
		if got := lowest.Load(); got >= int32(before) {
			t.Errorf("adaptive limit: lowest %d after the backend started queueing, want below the %d before", got, before)
		}
		if adaptive > 3*service || adaptive > fixed/2 {
			t.Errorf("adaptive limit: mean latency %v 5-10 s after the drop, want at most %v and half the fixed limit's %v", adaptive, 3*service, fixed)
		}
		if settled > 12 {
			t.Errorf("adaptive limit: %d 10 s after the drop, want near the backend's 4 (at most 12)", settled)
		}
		// A limit that overshoots to the minimum starves the backend.
		if got := lowest.Load(); got < 2 || adaptiveCalls*10 < fixedCalls*9 {
			t.Errorf("adaptive limit: lowest %d, %d calls over 5-10 s; want at least 2 and 90%% of the fixed limit's %d calls", got, adaptiveCalls, fixedCalls)
		}

		for _, s := range sides {
			s.backend.setCapacity(20)
			s.lat.reset()
		}
		time.Sleep(5 * time.Second) // simulated: the capacity is back
		stop()
		wg.Wait()
		if got, adaptive := sides[1].target.Limits().Concurrency, sides[1].lat.mean(); got < 20 || adaptive > 3*service {
			t.Errorf("adaptive limit 5 s after the capacity came back to 20: got %d, mean latency %v; want at least 20 and at most %v", got, adaptive, 3*service)
		}
	})
}

// TestAdaptiveLimitThroughLongOverload keeps a backend's capacity at 4 of
// the 20 it had for two simulated minutes: the baseline (1000 windows)
// slowly takes the overloaded latency for normal, so the limit creeps up,
// but it must stay near the capacity and latency near the service time,
// where failsafe-go's default baseline (10 windows) let it climb back
// within seconds.
func TestAdaptiveLimitThroughLongOverload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const service = 10 * time.Millisecond
		be := newQueueingBackend(20, service)
		target := resilience.NewTarget("a", be, resilience.PolicyOptions{Adaptive: &resilience.AdaptiveOptions{}})
		route := &resilience.Route{Name: "a", Targets: []resilience.Target{target}}
		var lat latencies
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				req := &handlers.Request{TaskID: fmt.Sprint(i)}
				for ctx.Err() == nil {
					if ans, err := route.Do(ctx, req); err == nil {
						lat.add(ans.Attempts[len(ans.Attempts)-1].Duration)
					} else if ctx.Err() == nil {
						t.Errorf("call: %v", err)
						return
					}
				}
			})
		}
		time.Sleep(3 * time.Second) // simulated: the healthy phase
		be.setCapacity(4)
		var limits []int // each 20 s of the overload
		for range 6 {
			lat.reset()
			time.Sleep(20 * time.Second) // simulated
			limits = append(limits, target.Limits().Concurrency)
		}
		stop()
		wg.Wait()
		last := lat.mean()
		t.Logf("limit every 20 s over 2 minutes at capacity 4: %v; mean latency over the last 20 s: %v", limits, last)
		if got := limits[len(limits)-1]; got > 16 || last > 4*service {
			t.Errorf("after 2 minutes of overload: limit %d, mean latency %v; want at most 16 and %v", got, last, 4*service)
		}
	})
}

// TestRetryBudgetBoundsCallsInOutage runs tasks against a backend that
// fails every call: with retry budget 0.2 the backend sees at most 1.2
// calls per task, without it max_attempts per task.
func TestRetryBudgetBoundsCallsInOutage(t *testing.T) {
	tests := []struct {
		name      string
		budget    float64
		wantCalls func(calls, tasks int) bool
		want      string
	}{
		{"budget 0.2", 0.2, func(c, n int) bool { return c <= n+n/5 && c > n }, "more than tasks and at most 1.2 × tasks"},
		{"budget 0.5", 0.5, func(c, n int) bool { return c <= n+n/2 && c > n+n/5 }, "at most 1.5 × tasks"},
		{"no budget", 0, func(c, n int) bool { return c == 3*n }, "3 × tasks"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := &recorder{answer: func(int) error { return errDown }}
				target := resilience.NewTarget("a", b, resilience.PolicyOptions{
					Timeout: time.Second,
					Retry:   &resilience.RetryOptions{MaxAttempts: 3, Backoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond, Budget: tc.budget},
				})
				r := &resilience.Route{Name: "x", Targets: []resilience.Target{target}}
				const tasks, workers = 200, 16
				next := atomic.Int32{}
				var wg sync.WaitGroup
				var budgetSpent atomic.Int32
				for range workers {
					wg.Go(func() {
						for next.Add(1) <= tasks {
							err := do(r)
							if !errors.Is(err, handlers.ErrTransient) {
								t.Errorf("got %v, want the backend's transient failure", err)
							}
							if strings.Contains(err.Error(), "retry budget spent") {
								budgetSpent.Add(1)
							}
						}
					})
				}
				wg.Wait()
				calls := b.count()
				t.Logf("%d tasks, %d calls, %d tasks not retried for the budget", tasks, calls, budgetSpent.Load())
				if !tc.wantCalls(calls, tasks) {
					t.Errorf("backend calls: got %d for %d tasks, want %s", calls, tasks, tc.want)
				}
				if tc.budget > 0 {
					if budgetSpent.Load() == 0 {
						t.Errorf("no task failed for the budget")
					}
					if l := target.Limits(); l.RetryBudget < 0 || l.RetryBudget >= 1 {
						t.Errorf("budget left after the outage: got %g, want 0 to 1", l.RetryBudget)
					}
				}
			})
		})
	}
}

// TestRetryBudgetAllowsRetriesWhenCalm checks that a budget earned by
// successful calls pays for the retries of an occasional failure.
func TestRetryBudgetAllowsRetriesWhenCalm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fail := atomic.Bool{}
		b := &recorder{answer: func(int) error {
			if fail.CompareAndSwap(true, false) {
				return errDown
			}
			return nil
		}}
		target := resilience.NewTarget("a", b, resilience.PolicyOptions{
			Timeout: time.Second,
			Retry:   &resilience.RetryOptions{MaxAttempts: 3, Backoff: time.Millisecond, MaxBackoff: time.Millisecond, Budget: 0.1},
		})
		r := &resilience.Route{Name: "x", Targets: []resilience.Target{target}}
		for range 50 {
			if err := do(r); err != nil {
				t.Fatalf("healthy call: %v", err)
			}
		}
		if got := target.Limits().RetryBudget; got < 4.9 || got > 5.1 {
			t.Errorf("budget after 50 calls at 0.1: got %g, want 5", got)
		}
		fail.Store(true)
		if err := do(r); err != nil {
			t.Fatalf("a failure with budget left: got %v, want it retried", err)
		}
		if got := b.count(); got != 52 {
			t.Errorf("calls: got %d, want 52 (50, and one failure retried)", got)
		}
	})
}
