package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/internal/testkit"
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
	var st client.HealthSnapshot
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
	now := time.Now().UTC()
	publishEvent(t, e, "health.backend.old", health.BackendEvent{Backend: "old", State: "healthy", Breaker: "closed", At: now})
	stdout, _, stop := runAsync(t, "health", "--watch", "--json", "--nats-url", e.url)
	testkit.Eventually(t, 10*time.Second, "a watched event", func() (bool, string) {
		publishEvent(t, e, "health.backend.new", health.BackendEvent{Backend: "new", State: "degraded", Breaker: "closed", At: now})
		return strings.Contains(stdout.String(), `"backend":"new"`), stdout.String()
	})
	if code := stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if strings.Contains(stdout.String(), `"backend":"old"`) {
		t.Errorf("--watch printed an event from before it started:\n%s", stdout.String())
	}
}

// Events made by a real Monitor (under a topology prefix) are read back:
// the backend's last state, the worker's clean stop.
func TestHealthFromMonitor(t *testing.T) {
	topo := bus.Topology{Prefix: "acme"}
	e := startServer(t, topo)
	m, err := health.New(health.Options{JS: e.js, Topology: topo, WorkerID: "w9", Version: "2.0.0",
		Backends: []string{"flow", "coder"}, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	hs, err := e.js.Stream(t.Context(), topo.HealthStream())
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the first heartbeat", func() (bool, string) {
		_, err := hs.GetLastMsgForSubject(t.Context(), topo.HealthBackendSubject("coder"))
		return err == nil, ""
	})
	for range 20 {
		m.AttemptStarted("flow")
		m.AttemptDone("flow", 4*time.Millisecond, errors.New("503"))
		m.AttemptStarted("coder")
		m.AttemptDone("coder", 2*time.Millisecond, nil)
	}
	m.BreakerChanged("flow", health.BreakerOpen)
	cancel() // publishes what changed, then a last "stopped" heartbeat
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	r := runCmd(t, "", "health", "--json", "--prefix", "acme", "--nats-url", e.url)
	wantOK(t, r)
	var st client.HealthSnapshot
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if len(st.Backends) != 2 || len(st.Workers) != 1 {
		t.Fatalf("got %d backends and %d workers, want 2 and 1:\n%s", len(st.Backends), len(st.Workers), r.stdout)
	}
	coder, flow := st.Backends[0], st.Backends[1]
	if flow.Backend != "flow" || flow.State != health.Unhealthy || flow.Breaker != health.BreakerOpen || flow.SuccessRate != 0 ||
		flow.LatencyMS.P99 != 4 || flow.Kind != "change" {
		t.Errorf("flow: %+v, want a change to unhealthy with its breaker open, p99 4ms", flow)
	}
	// coder never changed: its last event is the first heartbeat.
	if coder.Backend != "coder" || coder.State != health.Healthy || coder.Kind != "heartbeat" {
		t.Errorf("coder: %+v, want a healthy heartbeat", coder)
	}
	if w := st.Workers[0]; w.Worker != "w9" || w.Status != health.WorkerStopped || w.Version != "2.0.0" {
		t.Errorf("worker: %+v, want w9 stopped", w)
	}

	r = runCmd(t, "", "health", "--prefix", "acme", "--nats-url", e.url)
	wantOK(t, r)
	for _, want := range []string{"flow", "unhealthy", "circuit breaker open", "4.0ms", "w9", "stopped", "2.0.0"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, r.stdout)
		}
	}
}

// With no event yet, --json prints empty lists, not nulls.
func TestHealthEmpty(t *testing.T) {
	e := startServer(t)
	r := runCmd(t, "", "health", "--json", "--nats-url", e.url)
	wantOK(t, r)
	for _, want := range []string{`"backends": []`, `"workers": []`, `"alerts": []`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--json lacks %s:\n%s", want, r.stdout)
		}
	}
	r = runCmd(t, "", "health", "--nats-url", e.url)
	wantOK(t, r)
	if !strings.Contains(r.stdout, "(no backend events)") || !strings.Contains(r.stdout, "(no worker heartbeats)") {
		t.Errorf("table:\n%s", r.stdout)
	}
}

// --watch without --json prints one line per event, by kind.
func TestHealthWatchLines(t *testing.T) {
	e := startServer(t)
	stdout, _, stop := runAsync(t, "health", "--watch", "--nats-url", e.url)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := []string{
		"2026-01-02T03:04:05Z backend flow unhealthy breaker=open success=20.0% p50=1.0ms p95=2.0ms p99=3.0ms availability=97.500% in_flight=4 change by w1: circuit breaker open",
		"2026-01-02T03:04:05Z worker w1 running uptime=1m30s done=42 failed=1 dead_lettered=2 in_flight=3 cache_hits=50% version=1.0.0",
		"2026-01-02T03:04:05Z alert breaker_open.flow FIRING rule=breaker_open value=75.00 threshold=60.00 by w1: breaker of flow open for 75s",
	}
	testkit.Eventually(t, 10*time.Second, "the watched events", func() (bool, string) {
		if strings.Contains(stdout.String(), want[0]) {
			return true, ""
		}
		// Until the consumer exists, events published are not new to it.
		publishEvent(t, e, "health.backend.flow", health.BackendEvent{Backend: "flow", State: "unhealthy", Breaker: "open",
			SuccessRate: 0.2, LatencyMS: health.Latency{P50: 1, P95: 2, P99: 3}, Availability: 97.5, InFlight: 4,
			Reason: "circuit breaker open", Worker: "w1", Kind: "change", At: at})
		return false, ""
	})
	publishEvent(t, e, "health.worker.w1", health.WorkerEvent{Worker: "w1", Status: "running", Version: "1.0.0",
		UptimeSeconds: 90, Tasks: health.Tasks{Done: 42, Failed: 1, DeadLettered: 2}, InFlight: 3, CacheHitRatio: 0.5, At: at})
	publishEvent(t, e, "health.alert.breaker_open.flow", health.AlertEvent{Alert: "breaker_open.flow", Status: "firing",
		Rule: "breaker_open", Value: 75, Threshold: 60, Worker: "w1", Message: "breaker of flow open for 75s", At: at})
	testkit.Eventually(t, 10*time.Second, "the alert line", func() (bool, string) { return strings.Contains(stdout.String(), "alert "), stdout.String() })
	if code := stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, w := range want {
		if !strings.Contains(stdout.String(), w+"\n") {
			t.Errorf("output lacks line\n%s\ngot:\n%s", w, stdout.String())
		}
	}
}

// Events a worker would not publish (another worker's id on the subject,
// no state, not JSON, oversized) are neither shown nor watched.
func TestHealthDropsMalformedEvents(t *testing.T) {
	e := startServer(t)
	now := time.Now().UTC()
	forged := []struct {
		subject string
		data    string
	}{
		{"health.worker.victim", `{"worker":"forged","status":"running","at":"2026-01-02T03:04:05Z"}`},
		{"health.backend.nostate", `{"backend":"nostate","breaker":"closed","at":"2026-01-02T03:04:05Z"}`},
		{"health.alert.junk", `{"alert":"junk","status":"firing"`},
		{"health.backend.big", `{"backend":"big","state":"healthy","breaker":"closed","at":"2026-01-02T03:04:05Z","reason":"` +
			strings.Repeat("x", health.MaxEventSize) + `"}`},
	}
	publishAll := func() {
		for _, f := range forged {
			if _, err := e.js.Publish(t.Context(), f.subject, []byte(f.data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	publishAll()
	publishEvent(t, e, "health.backend.flow", health.BackendEvent{Backend: "flow", State: "healthy", Breaker: "closed", At: now})
	r := runCmd(t, "", "health", "--json", "--nats-url", e.url)
	wantOK(t, r)
	var st client.HealthSnapshot
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Backends) != 1 || st.Backends[0].Backend != "flow" || len(st.Workers) != 0 || len(st.Alerts) != 0 {
		t.Fatalf("got %+v, want the flow backend only", st)
	}

	for _, asJSON := range []bool{false, true} {
		args := []string{"health", "--watch", "--nats-url", e.url}
		if asJSON {
			args = append(args, "--json")
		}
		stdout, _, stop := runAsync(t, args...)
		testkit.Eventually(t, 10*time.Second, "the watch under way", func() (bool, string) {
			if strings.Contains(stdout.String(), "flow") {
				return true, ""
			}
			// Until the consumer exists, events published are not new to it.
			publishEvent(t, e, "health.backend.flow", health.BackendEvent{Backend: "flow", State: "healthy", Breaker: "closed", At: now})
			return false, ""
		})
		// Delivered in stream order: once "after" is shown, so would be
		// the forged events before it.
		publishAll()
		publishEvent(t, e, "health.backend.after", health.BackendEvent{Backend: "after", State: "healthy", Breaker: "closed", At: now})
		testkit.Eventually(t, 10*time.Second, "the event after the forged ones", func() (bool, string) { return strings.Contains(stdout.String(), "after"), stdout.String() })
		if code := stop(); code != 0 {
			t.Fatalf("exit %d", code)
		}
		for _, bad := range []string{"forged", "victim", "nostate", "junk", "big"} {
			if strings.Contains(stdout.String(), bad) {
				t.Errorf("--watch (json %v) shows a malformed event %q:\n%.300s", asJSON, bad, stdout.String())
			}
		}
	}
}

// withoutFields is v's JSON object without the named fields, as an older
// worker sends.
func withoutFields(t *testing.T, v any, names ...string) map[string]any {
	t.Helper()
	m := withFields(t, v, nil)
	for _, n := range names {
		delete(m, n)
	}
	return m
}

// withFields is v's JSON object with extra fields, as a newer worker sends.
func withFields(t *testing.T, v any, extra map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, x := range extra {
		m[k] = x
	}
	return m
}

// The table reads right for a user: a backend rejecting every task shows
// its rejections beside its 100 % success, a backend with too few calls
// shows no success figure, the columns are explained, a worker that has
// only sent its first heartbeat reads "starting", and paused routes are
// listed.
func TestHealthTableReadsRight(t *testing.T) {
	e := startServer(t)
	now := time.Now().UTC()
	backend := func(name string, rate float64) health.BackendEvent {
		return health.BackendEvent{Backend: name, State: health.Healthy, Breaker: health.BreakerClosed, SuccessRate: rate,
			LatencyMS: health.Latency{P50: 1, P95: 2, P99: 3}, Availability: 100, Worker: "w1", Kind: "heartbeat", At: now}
	}
	publishEvent(t, e, "health.backend.refuser", withFields(t, backend("refuser", 1), map[string]any{"calls": 20, "rejected": 20}))
	publishEvent(t, e, "health.backend.young", withFields(t, backend("young", 0), map[string]any{"calls": 5, "rejected": 0}))
	publishEvent(t, e, "health.backend.idle", withFields(t, backend("idle", 1), map[string]any{"calls": 0, "rejected": 0}))
	publishEvent(t, e, "health.backend.older", withoutFields(t, backend("older", 0.97), "calls", "rejected")) // a worker that sends no counts
	publishEvent(t, e, "health.worker.fresh", health.WorkerEvent{Worker: "fresh", Status: health.WorkerRunning,
		Version: "1.0.0", UptimeSeconds: 0.004, Interval: 10, At: now})
	// Setup took 3s before the first heartbeat: still the first of 10s.
	publishEvent(t, e, "health.worker.slowstart", health.WorkerEvent{Worker: "slowstart", Status: health.WorkerRunning,
		Version: "1.0.0", UptimeSeconds: 3, Interval: 10, At: now})
	publishEvent(t, e, "health.worker.quick", health.WorkerEvent{Worker: "quick", Status: health.WorkerRunning,
		Version: "1.0.0", UptimeSeconds: 3, Tasks: health.Tasks{Done: 7}, Interval: 10, At: now})
	publishEvent(t, e, "health.worker.busy", withFields(t, health.WorkerEvent{Worker: "busy", Status: health.WorkerRunning,
		Version: "1.0.0", UptimeSeconds: 90, Tasks: health.Tasks{Done: 42}, Interval: 10, At: now},
		map[string]any{"paused_routes": []string{"code.generate"}}))

	r := runCmd(t, "", "health", "--nats-url", e.url)
	wantOK(t, r)
	rows := map[string][]string{}
	for line := range strings.SplitSeq(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = f
		}
	}
	tests := []struct {
		row  string
		want string // a run of the row's fields, space-joined
	}{
		{"BACKEND", "SUCCESS REJECTED P50"},
		{"refuser", "healthy closed 100.0% 20 (100%) 1.0ms"},
		{"young", "healthy closed n/a (5 calls) 0 1.0ms"},
		{"idle", "healthy closed n/a (0 calls) 0 - - -"},
		{"older", "healthy closed 97.0% - 1.0ms"},
		{"fresh", "fresh starting - - - - - - 1.0.0"},
		{"busy", "busy running 1m30s 42"},
		{"slowstart", "slowstart starting - -"},
		{"quick", "quick running 3s 7"},
		{"code.generate", "code.generate busy"},
	}
	for _, tt := range tests {
		if got := strings.Join(rows[tt.row], " "); !strings.Contains(got, tt.want) {
			t.Errorf("row %s = %q, want it to contain %q\n%s", tt.row, got, tt.want, r.stdout)
		}
	}
	for _, want := range []string{
		"SUCCESS: of the backend's last 200 calls", "n/a under 10 calls",
		"REJECTED: of those, tasks the backend refused as their own fault",
		"AVAILABILITY: successful calls and probes over the last hour (the SLA window)",
		"PAUSED ROUTE", `"starting"`,
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, r.stdout)
		}
	}
}
