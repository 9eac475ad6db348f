package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/health"
)

// publishEvent stores a health event as a worker would.
func publishEvent(t *testing.T, e *testEnv, subject string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(t.Context(), subject, b); err != nil {
		t.Fatal(err)
	}
}

func TestHealthShowsLastState(t *testing.T) {
	e := startServer(t)
	now := time.Now().UTC()
	publishEvent(t, e, "health.backend.flow", health.BackendEvent{Backend: "flow", State: "healthy", Breaker: "closed", At: now})
	// The last event per subject is the current state.
	publishEvent(t, e, "health.backend.flow", health.BackendEvent{Backend: "flow", State: "unhealthy", Breaker: "open",
		SuccessRate: 0.2, Availability: 97.5, Reason: "circuit breaker open", Worker: "w1", At: now})
	publishEvent(t, e, "health.backend.coder", health.BackendEvent{Backend: "coder", State: "healthy", Breaker: "closed",
		SuccessRate: 1, LatencyMS: health.Latency{P50: 1.5, P95: 3, P99: 9}, Availability: 100, Worker: "w1", At: now})
	publishEvent(t, e, "health.worker.w1", health.WorkerEvent{Worker: "w1", Status: "running", Version: "1.0.0",
		Tasks: health.Tasks{Done: 42}, Interval: 10, At: now})
	publishEvent(t, e, "health.alert.breaker_open.flow", health.AlertEvent{Alert: "breaker_open.flow", Status: "firing",
		Rule: "breaker_open", Value: 75, Threshold: 60, At: now})
	publishEvent(t, e, "health.alert.dlq", health.AlertEvent{Alert: "dlq", Status: "resolved", Rule: "dlq_size", At: now})

	r := runCmd(t, "", "health", "--nats-url", e.url)
	wantOK(t, r)
	for _, want := range []string{"coder", "flow     unhealthy", "open", "97.500%", "w1", "42", "breaker_open.flow"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "dlq_size") {
		t.Errorf("a resolved alert is shown:\n%s", r.stdout)
	}

	r = runCmd(t, "", "health", "--json", "--nats-url", e.url)
	wantOK(t, r)
	var st healthState
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Backends) != 2 || st.Backends[1].Backend != "flow" || st.Backends[1].State != "unhealthy" ||
		len(st.Workers) != 1 || len(st.Alerts) != 1 {
		t.Fatalf("--json state %+v", st)
	}
}

func TestHealthWatch(t *testing.T) {
	e := startServer(t)
	publishEvent(t, e, "health.backend.old", health.BackendEvent{Backend: "old"})
	stdout, _, stop := runAsync(t, "health", "--watch", "--json", "--nats-url", e.url)
	waitFor(t, 10*time.Second, "a watched event", func() bool {
		publishEvent(t, e, "health.backend.new", health.BackendEvent{Backend: "new", State: "degraded"})
		return strings.Contains(stdout.String(), `"backend":"new"`)
	})
	if code := stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if strings.Contains(stdout.String(), `"backend":"old"`) {
		t.Errorf("--watch printed an event from before it started:\n%s", stdout.String())
	}
}
