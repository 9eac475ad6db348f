package tracing_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/tracing"
)

// scraper serves m on a real HTTP server and returns its metric lines
// (comments dropped).
func scraper(t *testing.T, m *tracing.Metrics) func() string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	return func() string {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
}

// clock is a settable clock for the lag cache.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }
func hasLine(body, line string) bool { return strings.Contains("\n"+body, "\n"+line+"\n") }
func wantLines(t *testing.T, body string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !hasLine(body, l) {
			t.Errorf("scrape lacks the line %q:\n%s", l, testkit.Lines(body, "breakwater_"))
		}
	}
}

func TestInstrumentsScraped(t *testing.T) {
	m, err := tracing.NewMetrics(tracing.MetricsOptions{ServiceName: "breakwater-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })

	var mu sync.Mutex
	breakers := map[string]string{"flow": "closed", "coder": "open", "slow": "half-open"}
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	var pendingCalls int
	pending := uint64(17)
	in, err := tracing.NewInstruments(m.Meter(), tracing.InstrumentsOptions{
		Breakers: func() map[string]string {
			mu.Lock()
			defer mu.Unlock()
			out := map[string]string{}
			for k, v := range breakers {
				out[k] = v
			}
			return out
		},
		InFlight: func() map[string]int { return map[string]int{"flow": 3, "coder": 0} },
		Cache: func() tracing.CacheStats {
			return tracing.CacheStats{Hits: 5, Misses: 2, Evictions: 1, Bytes: 4096, Entries: 4}
		},
		Pending: func(context.Context) (uint64, error) {
			mu.Lock()
			defer mu.Unlock()
			pendingCalls++
			if pending == 0 {
				return 0, errors.New("server gone")
			}
			return pending, nil
		},
		PendingEvery: 5 * time.Second,
		Now:          clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	in.TaskDone(ctx, "echo", "ok", 3*time.Millisecond)
	in.TaskDone(ctx, "echo", "ok", 2*time.Second)
	in.TaskDone(ctx, "echo", "dead_lettered", 40*time.Millisecond)
	in.BackendCall(ctx, "flow", "ok", 20*time.Millisecond, 0)
	in.BackendCall(ctx, "flow", "transient", 5*time.Millisecond, 250*time.Millisecond)
	in.RateLimitWait(ctx, "flow", 750*time.Millisecond)
	in.Retry(ctx, "flow")
	in.Retry(ctx, "flow")
	in.Retry(ctx, "coder")
	in.DLQEntry(ctx, "exhausted")
	in.DLQEntry(ctx, "poison")
	in.DLQEntry(ctx, "exhausted")

	scrape := scraper(t, m)
	body := scrape()
	wantLines(t, body,
		`breakwater_task_duration_seconds_count{outcome="ok",type="echo"} 2`,
		`breakwater_task_duration_seconds_sum{outcome="ok",type="echo"} 2.003`,
		`breakwater_task_duration_seconds_bucket{outcome="ok",type="echo",le="0.005"} 1`,
		`breakwater_task_duration_seconds_bucket{outcome="ok",type="echo",le="+Inf"} 2`,
		`breakwater_task_duration_seconds_count{outcome="dead_lettered",type="echo"} 1`,
		`breakwater_backend_call_duration_seconds_count{backend="flow",outcome="ok"} 1`,
		`breakwater_backend_call_duration_seconds_count{backend="flow",outcome="transient"} 1`,
		`breakwater_backend_wait_duration_seconds_count{backend="flow"} 2`,
		`breakwater_backend_wait_duration_seconds_sum{backend="flow"} 1`,
		`breakwater_backend_retries_total{backend="flow"} 2`,
		`breakwater_backend_retries_total{backend="coder"} 1`,
		`breakwater_dlq_entries_total{reason="exhausted"} 2`,
		`breakwater_dlq_entries_total{reason="poison"} 1`,
		`breakwater_breaker_state{backend="flow"} 0`,
		`breakwater_breaker_state{backend="slow"} 1`,
		`breakwater_breaker_state{backend="coder"} 2`,
		`breakwater_backend_in_flight{backend="flow"} 3`,
		`breakwater_backend_in_flight{backend="coder"} 0`,
		`breakwater_cache_hits_total 5`,
		`breakwater_cache_misses_total 2`,
		`breakwater_cache_evictions_total 1`,
		`breakwater_cache_size_bytes 4096`,
		`breakwater_cache_entries 4`,
		`breakwater_consumer_pending 17`,
	)
	if strings.Contains(body, "t9") || strings.Contains(body, "task_id") {
		t.Error("a task id in the metrics")
	}

	// The lag is asked again only after PendingEvery; between, scrapes
	// reuse the last answer, and a failed request keeps it.
	mu.Lock()
	breakers["coder"] = "closed"
	pending = 30
	mu.Unlock()
	clk.Add(4 * time.Second)
	body = scrape()
	wantLines(t, body, `breakwater_consumer_pending 17`, `breakwater_breaker_state{backend="coder"} 0`)
	clk.Add(time.Second)
	wantLines(t, scrape(), `breakwater_consumer_pending 30`)
	mu.Lock()
	pending = 0
	mu.Unlock()
	clk.Add(5 * time.Second)
	wantLines(t, scrape(), `breakwater_consumer_pending 30`)
	mu.Lock()
	defer mu.Unlock()
	if pendingCalls != 3 {
		t.Errorf("pending asked %d times in 5 scrapes over 10s, want 3", pendingCalls)
	}
}

// Without callbacks, only the recorded instruments appear, and the task
// counters of ObserveWorker still work beside them.
func TestInstrumentsWithoutCallbacks(t *testing.T) {
	m, err := tracing.NewMetrics(tracing.MetricsOptions{ServiceName: "breakwater-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	if err := tracing.ObserveWorker(m.Meter(), func() tracing.WorkerStats { return tracing.WorkerStats{Done: 2, InFlight: 1} }); err != nil {
		t.Fatal(err)
	}
	in, err := tracing.NewInstruments(m.Meter(), tracing.InstrumentsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in.TaskDone(context.Background(), "echo", "ok", time.Millisecond)
	body := scraper(t, m)()
	wantLines(t, body,
		`breakwater_tasks_total{outcome="ok"} 2`,
		`breakwater_tasks_in_flight 1`,
		`breakwater_task_duration_seconds_count{outcome="ok",type="echo"} 1`,
	)
	for _, absent := range []string{"breakwater_breaker_state", "breakwater_cache_hits_total", "breakwater_consumer_pending"} {
		if strings.Contains(body, absent) {
			t.Errorf("scrape has %s without its callback", absent)
		}
	}
}
