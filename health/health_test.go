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
	"sync/atomic"
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

func newEnv(t testing.TB) *env {
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

func (e *env) connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
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

// count returns how many messages the HEALTH stream holds on subject.
func (e *env) count(t *testing.T, subject string) uint64 {
	t.Helper()
	s, err := e.js.Stream(t.Context(), "HEALTH")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// beatsAfter waits for n heartbeats of each worker in ids stamped after
// mark (older ones may still be queued in beats).
func beatsAfter(t *testing.T, beats <-chan health.WorkerEvent, mark time.Time, n int, ids ...string) {
	t.Helper()
	got := map[string]int{}
	for _, id := range ids {
		for got[id] < n {
			if ev := next(t, beats, "heartbeats of "+id); ev.At.After(mark) {
				got[ev.Worker]++
			}
		}
	}
}

// events subscribes to subject and decodes every message into T.
func events[T any](t *testing.T, nc *nats.Conn, subject string) <-chan T {
	t.Helper()
	ch := make(chan T, 4096)
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

func newMonitor(t testing.TB, o health.Options) *health.Monitor {
	t.Helper()
	m, err := health.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return m
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

// backend is a real HTTP backend answering with the status in status (0: 200).
func backend(t *testing.T, status *atomic.Int32) handlers.Backend {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := int(status.Load()); s != 0 {
			http.Error(w, "no", s)
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

func TestNewRejectsBadOptions(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		give health.Options
	}{
		{"no JetStream", health.Options{WorkerID: "w1"}},
		{"no worker id", health.Options{JS: e.js}},
		{"SLA over 100", health.Options{JS: e.js, WorkerID: "w1", SLATarget: 100.1}},
		{"SLA negative", health.Options{JS: e.js, WorkerID: "w1", SLATarget: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := health.New(tc.give); !errors.Is(err, health.ErrInvalidOption) {
				t.Fatalf("New: got %v, want ErrInvalidOption", err)
			}
		})
	}
	m := newMonitor(t, health.Options{JS: e.js, WorkerID: "w1"})
	if _, err := health.StartAdmin(health.AdminOptions{Conn: e.nc, Monitor: m, WorkerID: "w1"}); !errors.Is(err, health.ErrInvalidOption) {
		t.Fatalf("StartAdmin without a Controller: got %v, want ErrInvalidOption", err)
	}
}

// Real traffic moves a backend healthy → degraded → unhealthy → healthy:
// one change event per transition, in order, even when two transitions
// happen between two publishes, and heartbeats in between.
func TestStateTransitionsFromTraffic(t *testing.T) {
	e := newEnv(t)
	var status atomic.Int32
	b := backend(t, &status)
	evs := events[health.BackendEvent](t, e.nc, "health.backend.svc")
	m := newMonitor(t, health.Options{JS: e.js, WorkerID: "w1", Backends: []string{"svc"}, Interval: 50 * time.Millisecond})
	run(t, m)
	nextChange := func(what string) health.BackendEvent {
		t.Helper()
		for {
			ev := next(t, evs, what)
			if ev.Kind == "change" {
				return ev
			}
			if ev.Kind != "heartbeat" {
				t.Fatalf("event kind %q, want change or heartbeat", ev.Kind)
			}
		}
	}
	if ev := next(t, evs, "first heartbeat"); ev.State != health.Healthy || ev.Kind != "heartbeat" || ev.Worker != "w1" {
		t.Fatalf("first event %+v, want a healthy heartbeat from w1", ev)
	}
	call(t, m, b, 10)
	status.Store(http.StatusBadRequest)
	call(t, m, b, 20) // the task's fault, not the backend's: no change
	status.Store(http.StatusServiceUnavailable)
	call(t, m, b, 2) // 30 of 32: under 95 %
	call(t, m, b, 30)
	m.BreakerChanged("svc", health.BreakerOpen)
	m.BreakerChanged("svc", health.BreakerOpen) // no change, no event
	m.BreakerChanged("svc", health.BreakerHalfOpen)
	m.BreakerChanged("svc", health.BreakerClosed)
	status.Store(0)
	call(t, m, b, 200) // the failures leave the 200-call window

	want := []struct {
		state   health.State
		breaker health.BreakerState
	}{
		{health.Degraded, health.BreakerClosed},
		{health.Unhealthy, health.BreakerClosed},
		{health.Unhealthy, health.BreakerOpen},
		{health.Unhealthy, health.BreakerHalfOpen},
		{health.Unhealthy, health.BreakerClosed},
		{health.Degraded, health.BreakerClosed},
		{health.Healthy, health.BreakerClosed},
	}
	var prev health.BackendEvent
	for i, w := range want {
		ev := nextChange(fmt.Sprintf("change %d", i))
		if ev.State != w.state || ev.Breaker != w.breaker {
			t.Fatalf("change %d: got %s/%s, want %s/%s", i, ev.State, ev.Breaker, w.state, w.breaker)
		}
		if ev.State != prev.State && !ev.Since.Equal(ev.At) {
			t.Errorf("change %d to %s: since %v, want its time %v", i, ev.State, ev.Since, ev.At)
		}
		if ev.State == prev.State && !ev.Since.Equal(prev.Since) {
			t.Errorf("change %d, breaker only: since %v, want the state's start %v", i, ev.Since, prev.Since)
		}
		if ev.State != health.Healthy && ev.Reason == "" {
			t.Errorf("change %d: no reason", i)
		}
		prev = ev
	}
	if prev.LatencyMS.P99 <= 0 || prev.LatencyMS.P50 > prev.LatencyMS.P99 {
		t.Errorf("latency %+v, want measured percentiles", prev.LatencyMS)
	}
	// Quiet now: three more heartbeats, all healthy, and no change event.
	for range 3 {
		if ev := next(t, evs, "heartbeat"); ev.Kind != "heartbeat" || ev.State != health.Healthy {
			t.Fatalf("got %+v, want a healthy heartbeat and no event without a transition", ev)
		}
	}
}

func TestHeartbeatsAndLateSubscriber(t *testing.T) {
	e := newEnv(t)
	m := newMonitor(t, health.Options{JS: e.js, WorkerID: "w.1", Version: "1.2.3", Backends: []string{"a", "b"},
		Interval: 50 * time.Millisecond,
		WorkerStats: func() health.WorkerStats {
			return health.WorkerStats{Done: 7, DeadLettered: 1, CacheHits: 3, CacheMisses: 1, InFlight: 2}
		}})
	workers := events[health.WorkerEvent](t, e.nc, "health.worker.>")
	stop := run(t, m)
	for range 3 { // heartbeats keep coming
		if ev := next(t, workers, "worker heartbeat"); ev.Worker != "w.1" || ev.Tasks.Done != 7 || ev.Tasks.DeadLettered != 1 ||
			ev.CacheHitRatio != 0.75 || ev.InFlight != 2 || ev.Status != health.WorkerRunning || ev.Version != "1.2.3" {
			t.Fatalf("heartbeat %+v", ev)
		}
	}
	m.BreakerChanged("b", health.BreakerOpen) // just before the end: still stored
	stop()
	// A subscriber that comes later reads the current state from the stream.
	s, err := e.js.Stream(t.Context(), "HEALTH")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"a", "b"} {
		msg, err := s.GetLastMsgForSubject(t.Context(), "health.backend."+b)
		if err != nil {
			t.Fatalf("backend %s: %v", b, err)
		}
		var ev health.BackendEvent
		want := map[string]health.State{"a": health.Healthy, "b": health.Unhealthy}[b]
		if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Backend != b || ev.State != want {
			t.Fatalf("last event of %s: %s (%v), want %s", b, msg.Data, err, want)
		}
	}
	msg, err := s.GetLastMsgForSubject(t.Context(), "health.worker.w_1")
	if err != nil {
		t.Fatal(err)
	}
	var ev health.WorkerEvent
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Status != health.WorkerStopped || ev.UptimeSeconds <= 0 {
		t.Fatalf("last worker event %s (%v), want status stopped with an uptime", msg.Data, err)
	}
}

func TestAlertsFireAndResolve(t *testing.T) {
	e := newEnv(t)
	var used atomic.Int64
	used.Store(90)
	m := newMonitor(t, health.Options{JS: e.js, WorkerID: "w1", Backends: []string{"svc"},
		Interval: 30 * time.Millisecond, BreakerOpenAlertAfter: 60 * time.Millisecond,
		DLQUsage: func(context.Context) (int64, int64, error) { return used.Load(), 100, nil }})
	breaker := events[health.AlertEvent](t, e.nc, "health.alert.breaker_open.svc")
	dlqAlerts := events[health.AlertEvent](t, e.nc, "health.alert.dlq")
	avail := events[health.AlertEvent](t, e.nc, "health.alert.availability.svc")
	run(t, m)
	if ev := next(t, dlqAlerts, "dlq alert"); ev.Status != health.Firing || ev.Rule != health.RuleDLQSize || ev.Value != 90 || ev.Threshold != 80 {
		t.Fatalf("dlq alert %+v, want firing at 90 of 80", ev)
	}
	used.Store(75) // between the thresholds: still firing, no event
	m.BreakerChanged("svc", health.BreakerOpen)
	if ev := next(t, breaker, "breaker alert"); ev.Status != health.Firing || ev.Backend != "svc" || ev.Value <= ev.Threshold {
		t.Fatalf("breaker alert %+v", ev)
	}
	m.BreakerChanged("svc", health.BreakerClosed)
	if ev := next(t, breaker, "breaker resolved"); ev.Status != health.Resolved {
		t.Fatalf("breaker alert %+v", ev)
	}
	used.Store(10)
	if ev := next(t, dlqAlerts, "dlq resolved"); ev.Status != health.Resolved {
		t.Fatalf("dlq alert %+v", ev)
	}

	// Availability: 1 failure in 10 calls is 90 %, under 99.9 %; 1 in
	// 1000 is 99.9 %, back on target.
	fail := errors.New("503")
	m.AttemptDone("svc", time.Millisecond, fail)
	for range 9 {
		m.AttemptDone("svc", time.Millisecond, nil)
	}
	if ev := next(t, avail, "availability alert"); ev.Status != health.Firing || ev.Value != 90 || ev.Threshold != 99.9 {
		t.Fatalf("availability alert %+v, want firing at 90 of 99.9", ev)
	}
	for range 990 {
		m.AttemptDone("svc", time.Millisecond, nil)
	}
	if ev := next(t, avail, "availability resolved"); ev.Status != health.Resolved {
		t.Fatalf("availability alert %+v", ev)
	}
	select {
	case ev := <-breaker:
		t.Fatalf("a second breaker event: %+v", ev)
	case ev := <-dlqAlerts:
		t.Fatalf("a second dlq event: %+v", ev)
	case ev := <-avail:
		t.Fatalf("a second availability event: %+v", ev)
	case <-time.After(150 * time.Millisecond): // five more checks
	}
}

// Two workers see the same full DLQ: the alert is stored once when it
// fires and once when it resolves.
func TestAlertStoredOnceAcrossWorkers(t *testing.T) {
	e := newEnv(t)
	var used atomic.Int64
	used.Store(95)
	usage := func(context.Context) (int64, int64, error) { return used.Load(), 100, nil }
	beats := events[health.WorkerEvent](t, e.nc, "health.worker.*")
	for _, id := range []string{"w1", "w2"} {
		_, js := e.connect(t)
		run(t, newMonitor(t, health.Options{JS: js, WorkerID: id, Interval: 20 * time.Millisecond, DLQUsage: usage}))
	}
	for _, tc := range []struct {
		used int64
		want uint64 // events stored on health.alert.dlq
	}{{95, 1}, {50, 2}, {99, 3}} {
		used.Store(tc.used)
		// A heartbeat comes before the check of the same tick: six after
		// the change mean five checks of it by each worker.
		beatsAfter(t, beats, time.Now(), 6, "w1", "w2")
		if got := e.count(t, "health.alert.dlq"); got != tc.want {
			t.Fatalf("DLQ at %d%%: %d alert events stored, want %d", tc.used, got, tc.want)
		}
	}
}

// A worker whose heartbeats stop is reported once, though two workers
// watch it, and resolved once when it is back; one that stops cleanly is
// not reported.
func TestStaleWorkerDetected(t *testing.T) {
	e := newEnv(t)
	const iv = 100 * time.Millisecond
	alerts := events[health.AlertEvent](t, e.nc, "health.alert.worker_stale.*")
	beats := events[health.WorkerEvent](t, e.nc, "health.worker.*")
	mark := time.Now()
	for _, id := range []string{"watcher1", "watcher2"} {
		nc, js := e.connect(t)
		run(t, newMonitor(t, health.Options{JS: js, Conn: nc, WorkerID: id, Interval: iv}))
	}
	// A watcher subscribes before its first heartbeat, on the same
	// connection: once that is seen, the watcher hears the others.
	beatsAfter(t, beats, mark, 1, "watcher1", "watcher2")
	// "crashy" loses its connection: its heartbeats stop without a goodbye.
	nc2, js2 := e.connect(t)
	run(t, newMonitor(t, health.Options{JS: js2, Conn: nc2, WorkerID: "crashy", Interval: iv}))
	stopClean := run(t, newMonitor(t, health.Options{JS: e.js, Conn: e.nc, WorkerID: "clean", Interval: iv}))
	beatsAfter(t, beats, mark, 2, "crashy", "clean")
	stopClean()
	nc2.Close()
	// quiet checks that no alert about crashy or clean comes while both
	// watchers check three more times.
	quiet := func() {
		t.Helper()
		beatsAfter(t, beats, time.Now(), 4, "watcher1", "watcher2")
		for {
			select {
			case ev := <-alerts:
				if ev.Alert == "worker_stale.crashy" || ev.Alert == "worker_stale.clean" {
					t.Fatalf("unexpected alert %+v", ev)
				}
				continue
			default:
			}
			return
		}
	}
	nextAbout := func(what string) health.AlertEvent {
		t.Helper()
		for {
			if ev := next(t, alerts, what); ev.Alert != "worker_stale.watcher1" && ev.Alert != "worker_stale.watcher2" {
				return ev
			}
		}
	}
	ev := nextAbout("stale alert")
	if ev.Alert != "worker_stale.crashy" || ev.Status != health.Firing || ev.Rule != health.RuleWorkerStale ||
		ev.Value <= ev.Threshold || ev.Threshold != 0.3 {
		t.Fatalf("alert %+v, want worker_stale.crashy firing after 0.3 s", ev)
	}
	quiet()
	// crashy comes back.
	nc3, js3 := e.connect(t)
	run(t, newMonitor(t, health.Options{JS: js3, Conn: nc3, WorkerID: "crashy", Interval: iv}))
	if ev := nextAbout("stale resolved"); ev.Alert != "worker_stale.crashy" || ev.Status != health.Resolved {
		t.Fatalf("alert %+v, want worker_stale.crashy resolved", ev)
	}
	quiet()
}

// N slow health URLs are probed together: a round takes about one probe,
// not N, and never more than ProbeConcurrency run at once.
func TestProbesInParallel(t *testing.T) {
	const n, slow = 6, 200 * time.Millisecond
	for _, tc := range []struct {
		concurrency      int
		minRound, maxRnd time.Duration
	}{
		{concurrency: n, minRound: slow, maxRnd: 2 * slow},
		{concurrency: 2, minRound: 3 * slow, maxRnd: 4 * slow},
	} {
		t.Run(fmt.Sprint("concurrency ", tc.concurrency), func(t *testing.T) {
			e := newEnv(t)
			var mu sync.Mutex
			var first, last time.Time
			running, peak, finished := 0, 0, 0
			probes := map[string]health.ProbeFunc{}
			for i := range n {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					select {
					case <-time.After(slow):
					case <-r.Context().Done():
					}
				}))
				t.Cleanup(srv.Close)
				probe := health.HTTPProbe(srv.Client(), srv.URL)
				probes[fmt.Sprint("b", i)] = func(ctx context.Context) error {
					mu.Lock()
					if first.IsZero() {
						first = time.Now()
					}
					running++
					peak = max(peak, running)
					mu.Unlock()
					err := probe(ctx)
					mu.Lock()
					running--
					finished++
					last = time.Now()
					mu.Unlock()
					return err
				}
			}
			run(t, newMonitor(t, health.Options{JS: e.js, WorkerID: "w1", Interval: time.Hour, Probes: probes,
				ProbeConcurrency: tc.concurrency}))
			deadline := time.Now().Add(10 * time.Second)
			for {
				mu.Lock()
				done := finished
				mu.Unlock()
				if done == n {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d probes done", done, n)
				}
				time.Sleep(5 * time.Millisecond) // polling
			}
			mu.Lock()
			defer mu.Unlock()
			round := last.Sub(first)
			t.Logf("%d probes of %s, at most %d at once: round %s", n, slow, tc.concurrency, round)
			if round < tc.minRound || round > tc.maxRnd {
				t.Errorf("round took %s, want %s to %s", round, tc.minRound, tc.maxRnd)
			}
			if peak > tc.concurrency {
				t.Errorf("%d probes at once, want at most %d", peak, tc.concurrency)
			}
		})
	}
}

// A failing probe makes the backend unhealthy and unusable for routing,
// and a passing one brings it back.
func TestProbeFeedsRouting(t *testing.T) {
	e := newEnv(t)
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(srv.Close)
	evs := events[health.BackendEvent](t, e.nc, "health.backend.svc")
	m := newMonitor(t, health.Options{JS: e.js, WorkerID: "w1", Interval: 20 * time.Millisecond,
		Probes: map[string]health.ProbeFunc{"svc": health.HTTPProbe(srv.Client(), srv.URL+"/healthz?token=s3cret")}})
	if !m.Usable("svc") || !m.Usable("unknown") {
		t.Fatal("Usable = false before any probe")
	}
	run(t, m)
	for ev := next(t, evs, "unhealthy"); ev.State != health.Unhealthy; ev = next(t, evs, "unhealthy") {
	}
	if m.Usable("svc") {
		t.Fatal("Usable = true after failing probes")
	}
	if down, retry := m.Down("svc"); !down || retry != 20*time.Millisecond {
		t.Fatalf("Down = %v, %s; want true, the interval", down, retry)
	}
	for _, ev := range m.Snapshot() {
		if ev.Backend == "svc" && (!strings.Contains(ev.Reason, "503") || strings.Contains(ev.Reason, "s3cret")) {
			t.Fatalf("reason %q: want the probe failure, without the URL's token", ev.Reason)
		}
	}
	status.Store(http.StatusOK)
	for ev := next(t, evs, "healthy"); ev.State != health.Healthy; ev = next(t, evs, "healthy") {
	}
	if !m.Usable("svc") {
		t.Fatal("Usable = false after a passing probe")
	}
}

func TestHTTPProbe(t *testing.T) {
	for _, tc := range []struct {
		give   int
		wantOK bool
	}{{200, true}, {204, true}, {404, false}, {500, false}, {503, false}} {
		t.Run(fmt.Sprint(tc.give), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(tc.give) }))
			defer srv.Close()
			if err := health.HTTPProbe(srv.Client(), srv.URL)(t.Context()); (err == nil) != tc.wantOK {
				t.Fatalf("status %d: got %v, want up %v", tc.give, err, tc.wantOK)
			}
		})
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	if err := health.HTTPProbe(nil, srv.URL)(t.Context()); err == nil {
		t.Fatal("closed server: got nil, want an error")
	}
}

func TestNATSProbe(t *testing.T) {
	e := newEnv(t)
	probe := health.NATSProbe(e.nc, "svc.probe")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := probe(ctx); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("no service: got %v, want no responders", err)
	}
	var code atomic.Value
	code.Store("")
	sub, err := e.nc.Subscribe("svc.probe", func(m *nats.Msg) {
		reply := nats.NewMsg(m.Reply)
		if c := code.Load().(string); c != "" {
			reply.Header.Set("Nats-Service-Error-Code", c)
		}
		_ = m.RespondMsg(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for _, tc := range []struct {
		code   string
		wantOK bool
	}{{"", true}, {"400", true}, {"503", false}} {
		code.Store(tc.code)
		if err := probe(ctx); (err == nil) != tc.wantOK {
			t.Fatalf("service error %q: got %v, want up %v", tc.code, err, tc.wantOK)
		}
	}
}

// BenchmarkAttemptDone is the task path's cost: one AttemptStarted and
// one AttemptDone on a healthy backend.
func BenchmarkAttemptDone(b *testing.B) {
	e := newEnv(b)
	m := newMonitor(b, health.Options{JS: e.js, WorkerID: "w1", Backends: []string{"a", "b", "c", "d"}})
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.AttemptStarted("a")
			m.AttemptDone("a", time.Millisecond, nil)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var n atomic.Int32
		b.RunParallel(func(pb *testing.PB) {
			name := string(rune('a' + n.Add(1)%4)) // goroutines spread over backends
			for pb.Next() {
				m.AttemptStarted(name)
				m.AttemptDone(name, time.Millisecond, nil)
			}
		})
	})
}

// The alert rules read the injected clock: a breaker open for 59 s of it
// does not alert and one open for 61 s does; an hour later, the failures
// have left the availability window and its alert resolves.
func TestAlertsFollowTheClock(t *testing.T) {
	e := newEnv(t)
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var offset atomic.Int64
	advance := func(d time.Duration) { offset.Add(int64(d)) }
	m := newMonitor(t, health.Options{JS: e.js, WorkerID: "w1", Interval: 20 * time.Millisecond,
		Now: func() time.Time { return base.Add(time.Duration(offset.Load())) }})
	beats := events[health.WorkerEvent](t, e.nc, "health.worker.w1")
	alerts := events[health.AlertEvent](t, e.nc, "health.alert.>")
	// checks waits for three fresh heartbeats: two alert checks at least
	// since the call.
	checks := func() {
		t.Helper()
		for len(beats) > 0 {
			<-beats
		}
		for range 3 {
			next(t, beats, "heartbeat")
		}
	}
	run(t, m)
	m.BreakerChanged("svc", health.BreakerOpen)
	m.AttemptDone("svc", time.Millisecond, errors.New("503"))
	for range 9 {
		m.AttemptDone("svc", time.Millisecond, nil)
	}
	if ev := next(t, alerts, "availability alert"); ev.Alert != "availability.svc" || ev.Status != health.Firing {
		t.Fatalf("got %+v, want availability.svc firing", ev)
	}
	advance(59 * time.Second)
	checks()
	if len(alerts) > 0 {
		t.Fatalf("alert after 59 s of a 60 s limit: %+v", <-alerts)
	}
	advance(2 * time.Second)
	if ev := next(t, alerts, "breaker alert"); ev.Alert != "breaker_open.svc" || ev.Status != health.Firing ||
		ev.Value != 61 || ev.Threshold != 60 || !ev.At.Equal(base.Add(61*time.Second)) {
		t.Fatalf("got %+v, want breaker_open.svc firing at 61 s of 60", ev)
	}
	advance(time.Hour)
	if ev := next(t, alerts, "availability resolved"); ev.Alert != "availability.svc" || ev.Status != health.Resolved {
		t.Fatalf("got %+v, want availability.svc resolved", ev)
	}
	checks()
	if len(alerts) > 0 {
		t.Fatalf("unexpected alert: %+v", <-alerts)
	}
}
