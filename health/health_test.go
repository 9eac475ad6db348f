package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/health"
)

type env struct {
	srv *bus.Embedded
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir(), NoSyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	e := &env{srv: srv}
	e.nc, e.js = e.connect(t)
	if err := bus.EnsureStreams(context.Background(), e.js, bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) connect(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(e.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// events subscribes to subject and decodes every message into T.
func events[T any](t *testing.T, nc *nats.Conn, subject string) <-chan T {
	t.Helper()
	ch := make(chan T, 1024)
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var v T
		if err := json.Unmarshal(m.Data, &v); err != nil {
			t.Errorf("%s: %v", m.Subject, err)
			return
		}
		ch <- v
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

func next[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

func run(t *testing.T, m *health.Monitor) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// backend is a real HTTP backend that answers 503 while down.
func backend(t *testing.T, down func() bool) handlers.Backend {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	h, err := handlers.NewHTTP(handlers.HTTPOptions{Name: "svc", URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// call makes n real calls through m's recording.
func call(t *testing.T, m *health.Monitor, b handlers.Backend, n int) {
	t.Helper()
	for range n {
		m.AttemptStarted("svc")
		start := time.Now()
		_, err := b.Call(context.Background(), &handlers.Request{TaskID: "t", Payload: []byte("x")})
		m.AttemptDone("svc", time.Since(start), err)
	}
}

func TestStateTransitionsFromTraffic(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	isDown := false
	setDown := func(v bool) { mu.Lock(); isDown = v; mu.Unlock() }
	b := backend(t, func() bool { mu.Lock(); defer mu.Unlock(); return isDown })
	evs := events[health.BackendEvent](t, e.nc, "health.backend.svc")
	m, err := health.New(health.Options{JS: e.js, WorkerID: "w1", Backends: []string{"svc"}, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	run(t, m)
	if ev := next(t, evs, "first heartbeat"); ev.State != health.Healthy || ev.Kind != "heartbeat" || ev.Worker != "w1" {
		t.Fatalf("first event %+v", ev)
	}
	call(t, m, b, 10)
	setDown(true)
	call(t, m, b, 1) // 10 of 11 succeeded: under 95 %
	ev := next(t, evs, "degraded")
	if ev.State != health.Degraded || ev.Kind != "change" || ev.SuccessRate > 0.95 || ev.LatencyMS.P99 <= 0 {
		t.Fatalf("after one failure: %+v", ev)
	}
	call(t, m, b, 20) // 10 of 31: under 50 %
	if ev := next(t, evs, "unhealthy"); ev.State != health.Unhealthy || ev.Reason == "" {
		t.Fatalf("after 21 failures: %+v", ev)
	}
	m.BreakerChanged("svc", health.BreakerOpen)
	if ev := next(t, evs, "breaker open"); ev.Breaker != health.BreakerOpen || ev.State != health.Unhealthy {
		t.Fatalf("breaker open: %+v", ev)
	}
	m.BreakerChanged("svc", health.BreakerClosed)
	if ev := next(t, evs, "breaker closed"); ev.Breaker != health.BreakerClosed {
		t.Fatalf("breaker closed: %+v", ev)
	}
	setDown(false)
	// Recovery, one state at a time: exactly one event per transition.
	var states []string
	for len(states) == 0 || states[len(states)-1] != health.Healthy {
		call(t, m, b, 10)
		select {
		case ev := <-evs:
			states = append(states, ev.State)
		case <-time.After(50 * time.Millisecond):
		}
		if len(states) > 5 {
			break
		}
	}
	if fmt.Sprint(states) != "[degraded healthy]" {
		t.Fatalf("recovery events %v, want [degraded healthy]", states)
	}
	select {
	case ev := <-evs:
		t.Fatalf("an event without a change: %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestHeartbeatsAndLateSubscriber(t *testing.T) {
	e := newEnv(t)
	m, err := health.New(health.Options{JS: e.js, WorkerID: "w.1", Version: "1.2.3", Backends: []string{"a", "b"},
		Interval: 50 * time.Millisecond,
		WorkerStats: func() health.WorkerStats {
			return health.WorkerStats{Done: 7, DeadLettered: 1, CacheHits: 3, CacheMisses: 1, InFlight: 2}
		}})
	if err != nil {
		t.Fatal(err)
	}
	workers := events[health.WorkerEvent](t, e.nc, "health.worker.>")
	stop := run(t, m)
	for range 3 { // heartbeats keep coming
		if ev := next(t, workers, "worker heartbeat"); ev.Worker != "w.1" || ev.Tasks.Done != 7 || ev.CacheHitRatio != 0.75 ||
			ev.Status != health.WorkerRunning || ev.Version != "1.2.3" {
			t.Fatalf("heartbeat %+v", ev)
		}
	}
	stop()
	// A subscriber that comes later reads the current state from the stream.
	s, err := e.js.Stream(context.Background(), "HEALTH")
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"health.backend.a", "health.backend.b", "health.worker.w_1"} {
		msg, err := s.GetLastMsgForSubject(context.Background(), subj)
		if err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
		if subj == "health.worker.w_1" {
			var ev health.WorkerEvent
			if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Status != health.WorkerStopped {
				t.Fatalf("last worker event %s (%v), want status stopped", msg.Data, err)
			}
		}
	}
}

func TestAlertsFireAndResolve(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	used := int64(90)
	m, err := health.New(health.Options{JS: e.js, WorkerID: "w1", Backends: []string{"svc"},
		Interval: 30 * time.Millisecond, BreakerOpenAlertAfter: 60 * time.Millisecond,
		DLQUsage: func(context.Context) (int64, int64, error) { mu.Lock(); defer mu.Unlock(); return used, 100, nil }})
	if err != nil {
		t.Fatal(err)
	}
	breaker := events[health.AlertEvent](t, e.nc, "health.alert.breaker_open.svc")
	dlqAlerts := events[health.AlertEvent](t, e.nc, "health.alert.dlq")
	run(t, m)
	if ev := next(t, dlqAlerts, "dlq alert"); ev.Status != health.Firing || ev.Rule != health.RuleDLQSize || ev.Value != 90 {
		t.Fatalf("dlq alert %+v", ev)
	}
	mu.Lock()
	used = 75 // between the thresholds: still firing, no event
	mu.Unlock()
	m.BreakerChanged("svc", health.BreakerOpen)
	if ev := next(t, breaker, "breaker alert"); ev.Status != health.Firing || ev.Backend != "svc" || ev.Value <= ev.Threshold {
		t.Fatalf("breaker alert %+v", ev)
	}
	m.BreakerChanged("svc", health.BreakerClosed)
	if ev := next(t, breaker, "breaker resolved"); ev.Status != health.Resolved {
		t.Fatalf("breaker alert %+v", ev)
	}
	mu.Lock()
	used = 10
	mu.Unlock()
	if ev := next(t, dlqAlerts, "dlq resolved"); ev.Status != health.Resolved {
		t.Fatalf("dlq alert %+v", ev)
	}
	select {
	case ev := <-breaker:
		t.Fatalf("a second breaker event: %+v", ev)
	case ev := <-dlqAlerts:
		t.Fatalf("a second dlq event: %+v", ev)
	case <-time.After(150 * time.Millisecond):
	}
}

// A worker whose heartbeats stop is reported by another; one that stops
// cleanly is not.
func TestStaleWorkerDetected(t *testing.T) {
	e := newEnv(t)
	const iv = 30 * time.Millisecond
	watcher, err := health.New(health.Options{JS: e.js, Conn: e.nc, WorkerID: "watcher", Interval: iv})
	if err != nil {
		t.Fatal(err)
	}
	alerts := events[health.AlertEvent](t, e.nc, "health.alert.worker_stale.*")
	beats := events[health.WorkerEvent](t, e.nc, "health.worker.*")
	run(t, watcher)

	// "crashy" loses its connection: its heartbeats stop without a goodbye.
	nc2, js2 := e.connect(t)
	crashy, _ := health.New(health.Options{JS: js2, WorkerID: "crashy", Interval: iv})
	run(t, crashy)
	clean, _ := health.New(health.Options{JS: e.js, WorkerID: "clean", Interval: iv})
	stopClean := run(t, clean)
	// Both are heard (on the watcher's connection) before anything happens.
	heard := map[string]bool{}
	for !heard["crashy"] || !heard["clean"] {
		heard[next(t, beats, "heartbeats").Worker] = true
	}
	stopClean()
	nc2.Close()
	ev := next(t, alerts, "stale alert")
	if ev.Alert != "worker_stale.crashy" || ev.Status != health.Firing || ev.Rule != health.RuleWorkerStale {
		t.Fatalf("alert %+v", ev)
	}
	// crashy comes back.
	_, js3 := e.connect(t)
	again, _ := health.New(health.Options{JS: js3, WorkerID: "crashy", Interval: iv})
	run(t, again)
	if ev := next(t, alerts, "stale resolved"); ev.Alert != "worker_stale.crashy" || ev.Status != health.Resolved {
		t.Fatalf("alert %+v", ev)
	}
	select {
	case ev := <-alerts:
		t.Fatalf("unexpected alert %+v (clean stop must not alert)", ev)
	case <-time.After(10 * iv):
	}
}

// N slow health URLs are probed together: a round takes about one probe.
func TestProbesInParallel(t *testing.T) {
	e := newEnv(t)
	const n, slow = 6, 300 * time.Millisecond
	var mu sync.Mutex
	var arrivals []time.Time
	probes := map[string]health.ProbeFunc{}
	for i := range n {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			arrivals = append(arrivals, time.Now())
			mu.Unlock()
			select {
			case <-time.After(slow):
			case <-r.Context().Done():
			}
		}))
		t.Cleanup(srv.Close)
		probes[fmt.Sprint("b", i)] = health.HTTPProbe(srv.Client(), srv.URL)
	}
	m, _ := health.New(health.Options{JS: e.js, WorkerID: "w1", Interval: time.Hour, Probes: probes})
	run(t, m)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := len(arrivals)
		mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d probes arrived", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if spread := arrivals[n-1].Sub(arrivals[0]); spread >= slow {
		t.Fatalf("probes spread over %s: they ran one after another", spread)
	}
}

// A failing probe marks the backend down for routing, and healthy again.
func TestProbeFeedsRouting(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	status := http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	evs := events[health.BackendEvent](t, e.nc, "health.backend.svc")
	m, _ := health.New(health.Options{JS: e.js, WorkerID: "w1", Interval: 20 * time.Millisecond,
		Probes: map[string]health.ProbeFunc{"svc": health.HTTPProbe(srv.Client(), srv.URL+"/healthz?token=s3cret")}})
	run(t, m)
	for ev := next(t, evs, "unhealthy"); ev.State != health.Unhealthy; ev = next(t, evs, "unhealthy") {
	}
	if down, _ := m.Down("svc"); !down {
		t.Fatal("Down = false after failing probes")
	}
	for _, ev := range m.Snapshot() {
		if ev.Backend == "svc" && (ev.Reason == "" || strings.Contains(ev.Reason, "s3cret")) {
			t.Fatalf("reason %q: want the probe failure, without the URL's token", ev.Reason)
		}
	}
	mu.Lock()
	status = http.StatusOK
	mu.Unlock()
	for ev := next(t, evs, "healthy"); ev.State != health.Healthy; ev = next(t, evs, "healthy") {
	}
	if down, _ := m.Down("svc"); down {
		t.Fatal("Down = true after a passing probe")
	}
}

func TestNATSProbe(t *testing.T) {
	e := newEnv(t)
	probe := health.NATSProbe(e.nc, "svc.probe")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := probe(ctx); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("no service: %v, want no responders", err)
	}
	sub, err := e.nc.Subscribe("svc.probe", func(m *nats.Msg) { _ = m.Respond(nil) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := probe(ctx); err != nil {
		t.Fatalf("service up: %v", err)
	}
}
