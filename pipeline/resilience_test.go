package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
)

// backendServer is a real HTTP backend that echoes, or answers 503 while
// down, and counts the calls it sees.
func backendServer(t *testing.T, down *atomic.Bool, calls *atomic.Int64) *handlers.HTTP {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	h, err := handlers.NewHTTP(handlers.HTTPOptions{Name: "svc", URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func TestPrimaryDownServedByFallback(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var primaryDown, fallbackDown atomic.Bool
	var primaryCalls, fallbackCalls atomic.Int64
	primaryDown.Store(true)
	route := &resilience.Route{Name: "work", Targets: []resilience.Target{
		resilience.NewTarget("primary", backendServer(t, &primaryDown, &primaryCalls), resilience.PolicyOptions{
			Timeout: time.Second, Breaker: &resilience.BreakerOptions{FailureThreshold: 3, Delay: time.Minute, SuccessThreshold: 1}}),
		resilience.NewTarget("fallback", backendServer(t, &fallbackDown, &fallbackCalls), resilience.PolicyOptions{Timeout: time.Second}),
	}}
	e.start(t, pipeline.Options{Concurrency: 1}, route)
	const n = 50
	for i := range n {
		e.publish(t, "work", fmt.Sprintf("f%d", i), "x")
	}
	testkit.Eventually(t, 15*time.Second, "all results", func() (bool, string) { return e.count(t, "RESULTS") == n, "" })
	if got := primaryCalls.Load(); got > 3 {
		t.Errorf("primary calls: got %d, want ≤ 3 (the breaker's threshold)", got)
	}
	if got := fallbackCalls.Load(); got != n {
		t.Errorf("fallback calls: got %d, want %d", got, n)
	}
	if got := e.waitMsg(t, "RESULTS", "results.work.f49").Header.Get("Task-Backend"); got != "fallback" {
		t.Errorf("Task-Backend: got %q, want fallback", got)
	}
}

// A full outage shorter than the redelivery budget dead-letters nothing:
// every task completes once the backend is back.
func TestOutageRedeliversInsteadOfDeadLettering(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{MaxDeliver: 5})
	var down atomic.Bool
	var calls atomic.Int64
	down.Store(true)
	route := &resilience.Route{Name: "work", Targets: []resilience.Target{
		resilience.NewTarget("svc", backendServer(t, &down, &calls), resilience.PolicyOptions{
			Timeout: time.Second, Breaker: &resilience.BreakerOptions{FailureThreshold: 3, Delay: time.Second, SuccessThreshold: 1}}),
	}}
	w := e.start(t, pipeline.Options{MaxDeliver: 5}, route)
	const n = 20
	for i := range n {
		e.publish(t, "work", fmt.Sprintf("o%d", i), "x")
	}
	// The outage: 3 seconds, then the backend is back.
	recover := time.AfterFunc(3*time.Second, func() { down.Store(false) })
	defer recover.Stop()
	testkit.Eventually(t, 30*time.Second, "every result after the outage", func() (bool, string) { return e.count(t, "RESULTS") == n, "" })
	if got := e.count(t, "DLQ"); got != 0 {
		t.Errorf("DLQ: got %d entries, want 0", got)
	}
	// While the breaker was open the backend saw few calls, not one per
	// task and delivery.
	if got := calls.Load(); got >= 3*n {
		t.Errorf("backend calls: got %d, want far fewer than %d", got, 3*n)
	}
	// Tasks that arrived while the breaker was open were held, not handed
	// back: only a call that failed (before the breaker opened, or a failed
	// trial call) spent a delivery; a refusal without a call never did.
	t.Logf("stats after outage: %+v, backend calls %d", w.Stats(), calls.Load())
	failedCalls := uint64(calls.Load()) - n
	if got := w.Stats().Redelivered; got > failedCalls {
		t.Errorf("redelivered %d > %d failed calls: held tasks spent deliveries", got, failedCalls)
	}
}

// A paused route holds its tasks (no backend call) while other routes run;
// resuming serves the held ones.
func TestPauseAndResumeRoute(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var slowCalls, otherCalls atomic.Int64
	w := e.start(t, pipeline.Options{}, echoRoute("paused", &slowCalls), echoRoute("other", &otherCalls))
	if err := w.PauseRoute("nope"); !errors.Is(err, resilience.ErrNoRoute) {
		t.Fatalf("PauseRoute(unknown) = %v, want ErrNoRoute", err)
	}
	if err := w.PauseRoute("paused"); err != nil {
		t.Fatal(err)
	}
	if got := w.PausedRoutes(); len(got) != 1 || got[0] != "paused" {
		t.Errorf("PausedRoutes: got %v, want [paused]", got)
	}
	const n = 10
	for i := range n {
		e.publish(t, "paused", fmt.Sprintf("p%d", i), "x")
	}
	testkit.Eventually(t, 15*time.Second, "paused tasks held", func() (bool, string) { return w.Stats().Parked == n, "" })
	// The worker keeps serving other routes meanwhile.
	e.publish(t, "other", "o1", "x")
	e.waitMsg(t, "RESULTS", "results.other.o1")
	if got := slowCalls.Load(); got != 0 {
		t.Fatalf("paused route's backend called %d times", got)
	}
	if err := w.ResumeRoute("paused"); err != nil {
		t.Fatal(err)
	}
	if got := w.PausedRoutes(); len(got) != 0 {
		t.Errorf("PausedRoutes after resume: got %v, want none", got)
	}
	testkit.Eventually(t, 15*time.Second, "held tasks served after resume", func() (bool, string) { return e.count(t, "RESULTS") == n+1, "" })
	if st := w.Stats(); st.Parked != 0 || st.Redelivered != 0 {
		t.Errorf("after resume: parked %d, redelivered %d; want 0, 0", st.Parked, st.Redelivered)
	}
}

// A task held when the worker drains goes back to the stream at once.
func TestDrainHandsBackParked(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var calls atomic.Int64
	w := e.newWorker(t, pipeline.Options{}, echoRoute("work", &calls))
	cancel, done := goRun(w)
	if err := w.PauseRoute("work"); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "work", "d1", "x")
	testkit.Eventually(t, 15*time.Second, "task held", func() (bool, string) { return w.Stats().Parked == 1, "" })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Handed back: a second worker gets it without waiting out ack_wait.
	e.start(t, pipeline.Options{}, echoRoute("work", &calls))
	e.waitMsg(t, "RESULTS", "results.work.d1")
}

// slowServer answers after delay (or when the request is cancelled),
// recording when each call arrived.
func slowServer(t *testing.T, name string, delay time.Duration, arrivals chan<- time.Time) *handlers.HTTP {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrivals != nil {
			arrivals <- time.Now()
		}
		// Read the body first: only then does the server notice a client
		// that gave up (r.Context is cancelled on the closed connection).
		_, _ = io.Copy(io.Discard, r.Body)
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	h, err := handlers.NewHTTP(handlers.HTTPOptions{Name: name, URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// A backend slower than its timeout fails over; with hedge_after the
// second backend is asked before the first times out.
func TestSlowBackendTimeoutAndHedge(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		hedge   time.Duration
		within  time.Duration // every task's Task-Duration
	}{
		{"attempt timeout fails over", 200 * time.Millisecond, 0, 2 * time.Second},
		{"hedge asks the next backend early", 10 * time.Second, 50 * time.Millisecond, 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, bus.ConsumerOptions{})
			route := &resilience.Route{Name: "work", HedgeAfter: tc.hedge, Targets: []resilience.Target{
				resilience.NewTarget("slow", slowServer(t, "slow", 30*time.Second, nil), resilience.PolicyOptions{Timeout: tc.timeout}),
				resilience.NewTarget("fast", slowServer(t, "fast", 0, nil), resilience.PolicyOptions{Timeout: time.Second}),
			}}
			e.start(t, pipeline.Options{}, route)
			const n = 10
			for i := range n {
				e.publish(t, "work", fmt.Sprintf("s%d", i), "x")
			}
			for i := range n {
				m := e.waitMsg(t, "RESULTS", fmt.Sprintf("results.work.s%d", i))
				if string(m.Data) != "fast" || m.Header.Get("Task-Backend") != "fast" {
					t.Fatalf("task s%d answered by %q (%s), want fast", i, m.Header.Get("Task-Backend"), m.Data)
				}
				took, err := time.ParseDuration(m.Header.Get("Task-Duration"))
				if err != nil || took > tc.within {
					t.Fatalf("task s%d took %s (%v), want ≤ %s", i, m.Header.Get("Task-Duration"), err, tc.within)
				}
			}
		})
	}
}

// rate_limit holds as measured at the backend, with many tasks waiting.
func TestRateLimitHoldsAtBackend(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	arrivals := make(chan time.Time, 100)
	const rate, n = 20, 30
	route := &resilience.Route{Name: "work", Targets: []resilience.Target{
		resilience.NewTarget("svc", slowServer(t, "svc", 0, arrivals), resilience.PolicyOptions{
			Timeout: 5 * time.Second, RateN: rate, RatePer: time.Second}),
	}}
	e.start(t, pipeline.Options{Concurrency: 64}, route)
	for i := range n {
		e.publish(t, "work", fmt.Sprintf("r%d", i), "x")
	}
	testkit.Eventually(t, 15*time.Second, "all results", func() (bool, string) { return e.count(t, "RESULTS") == n, "" })
	close(arrivals)
	var times []time.Time
	for at := range arrivals {
		times = append(times, at)
	}
	if len(times) != n {
		t.Fatalf("backend saw %d calls, want %d", len(times), n)
	}
	// A smooth limiter spaces calls 1/rate apart: n calls span ≥ (n-1)/rate,
	// allowing for the clock of a loaded machine.
	span := times[n-1].Sub(times[0])
	if min := time.Duration(n-1) * time.Second / rate * 9 / 10; span < min {
		t.Fatalf("%d calls took %s at the backend, want ≥ %s (%d/s)", n, span, min, rate)
	}
}

// A task exhausted over several deliveries carries every attempt of every
// delivery in its DLQ copy.
func TestExhaustedCarriesHistory(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{MaxDeliver: 3})
	h, err := dlq.EnsureHistory(context.Background(), e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	var calls atomic.Int64
	down.Store(true)
	route := &resilience.Route{Name: "work", Targets: []resilience.Target{
		resilience.NewTarget("svc", backendServer(t, &down, &calls), resilience.PolicyOptions{Timeout: time.Second}),
	}}
	e.start(t, pipeline.Options{MaxDeliver: 3, History: h, WorkerID: "w-hist"}, route)
	e.publish(t, "work", "h1", "x")
	m := e.waitMsg(t, "DLQ", "dlq.work")
	recs, err := dlq.DecodeHistory(m.Header.Get(dlq.HeaderHistory))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || m.Header.Get("Dlq-Attempts") != "3" {
		t.Fatalf("history %+v, Dlq-Attempts %q; want 3 records", recs, m.Header.Get("Dlq-Attempts"))
	}
	for i, r := range recs {
		if r.Delivery != i+1 || r.Backend != "svc" || r.Class != "transient" || r.Status != 503 || r.Worker != "w-hist" {
			t.Errorf("record %d: %+v", i, r)
		}
	}
	seq, _ := strconv.ParseUint(m.Header.Get("Dlq-Original-Seq"), 10, 64)
	if seq == 0 {
		t.Fatal("no Dlq-Original-Seq")
	}
	// The history goes once the DLQ copy is stored and the task termed.
	testkit.Eventually(t, 15*time.Second, "history removed after the task left TASKS", func() (bool, string) {
		got, _ := h.Load(context.Background(), seq)
		return len(got) == 0, ""
	})
}
