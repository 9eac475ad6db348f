package health_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/health"
)

var at = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDecodeEvent(t *testing.T) {
	backend := health.BackendEvent{Backend: "api.v2", State: health.Degraded, Breaker: health.BreakerHalfOpen,
		SuccessRate: 0.9, Availability: 99.5, LatencyMS: health.Latency{P50: 1, P95: 2, P99: 3}, Worker: "w1", At: at}
	worker := health.WorkerEvent{Worker: "host.example-7", Status: health.WorkerRunning, Interval: 10, CacheHitRatio: 0.5, At: at}
	alert := health.AlertEvent{Alert: "breaker_open.api_v2", Status: health.Firing, Rule: health.RuleBreakerOpen, At: at}
	with := func(f func(*health.BackendEvent)) string { e := backend; f(&e); return mustJSON(t, e) }
	withW := func(f func(*health.WorkerEvent)) string { e := worker; f(&e); return mustJSON(t, e) }
	withA := func(f func(*health.AlertEvent)) string { e := alert; f(&e); return mustJSON(t, e) }
	huge := worker
	huge.Version = strings.Repeat("v", health.MaxEventSize)

	for _, tc := range []struct {
		name    string
		topo    bus.Topology
		subject string
		data    string
		want    any // nil: refused
	}{
		{"backend", bus.Topology{}, "health.backend.api_v2", mustJSON(t, backend), backend},
		{"worker", bus.Topology{}, "health.worker.host_example-7", mustJSON(t, worker), worker},
		{"alert", bus.Topology{}, "health.alert.breaker_open.api_v2", mustJSON(t, alert), alert},
		{"under a prefix", bus.Topology{Prefix: "acme"}, "acme.health.worker.host_example-7", mustJSON(t, worker), worker},
		{"extra fields are allowed", bus.Topology{}, "health.alert.breaker_open.api_v2",
			strings.TrimSuffix(mustJSON(t, alert), "}") + `,"new":1}`, alert},

		{"oversized", bus.Topology{}, "health.worker.host_example-7", mustJSON(t, huge), nil},
		{"not JSON", bus.Topology{}, "health.worker.host_example-7", `{"worker":`, nil},
		{"trailing garbage", bus.Topology{}, "health.worker.host_example-7", mustJSON(t, worker) + "x", nil},
		{"array", bus.Topology{}, "health.worker.host_example-7", `[]`, nil},
		{"null", bus.Topology{}, "health.worker.host_example-7", `null`, nil},
		{"wrong type", bus.Topology{}, "health.worker.host_example-7", `{"worker":7}`, nil},
		{"other prefix", bus.Topology{Prefix: "acme"}, "health.worker.host_example-7", mustJSON(t, worker), nil},
		{"unknown kind", bus.Topology{}, "health.other.x", mustJSON(t, worker), nil},
		{"kind without name", bus.Topology{}, "health.worker", mustJSON(t, worker), nil},

		{"backend: another name", bus.Topology{}, "health.backend.db", mustJSON(t, backend), nil},
		{"backend: two tokens", bus.Topology{}, "health.backend.api.v2", mustJSON(t, backend), nil},
		{"backend: no name", bus.Topology{}, "health.backend.api_v2", with(func(e *health.BackendEvent) { e.Backend = "" }), nil},
		{"backend: no state", bus.Topology{}, "health.backend.api_v2", with(func(e *health.BackendEvent) { e.State = "" }), nil},
		{"backend: bad state", bus.Topology{}, "health.backend.api_v2", with(func(e *health.BackendEvent) { e.State = "fine" }), nil},
		{"backend: no breaker", bus.Topology{}, "health.backend.api_v2", with(func(e *health.BackendEvent) { e.Breaker = "" }), nil},
		{"backend: no at", bus.Topology{}, "health.backend.api_v2", with(func(e *health.BackendEvent) { e.At = time.Time{} }), nil},
		{"backend: success over 1", bus.Topology{}, "health.backend.api_v2", with(func(e *health.BackendEvent) { e.SuccessRate = 1.5 }), nil},
		{"backend: availability over 100", bus.Topology{}, "health.backend.api_v2", with(func(e *health.BackendEvent) { e.Availability = 101 }), nil},
		{"backend: negative latency", bus.Topology{}, "health.backend.api_v2", with(func(e *health.BackendEvent) { e.LatencyMS.P99 = -1 }), nil},
		{"backend: negative in flight", bus.Topology{}, "health.backend.api_v2", with(func(e *health.BackendEvent) { e.InFlight = -1 }), nil},

		{"worker: another id", bus.Topology{}, "health.worker.victim", mustJSON(t, worker), nil},
		{"worker: no id", bus.Topology{}, "health.worker.host_example-7", withW(func(e *health.WorkerEvent) { e.Worker = "" }), nil},
		{"worker: no status", bus.Topology{}, "health.worker.host_example-7", withW(func(e *health.WorkerEvent) { e.Status = "" }), nil},
		{"worker: no at", bus.Topology{}, "health.worker.host_example-7", withW(func(e *health.WorkerEvent) { e.At = time.Time{} }), nil},
		{"worker: interval of a year", bus.Topology{}, "health.worker.host_example-7", withW(func(e *health.WorkerEvent) { e.Interval = 365 * 86400 }), nil},
		{"worker: negative interval", bus.Topology{}, "health.worker.host_example-7", withW(func(e *health.WorkerEvent) { e.Interval = -1 }), nil},
		{"worker: cache ratio over 1", bus.Topology{}, "health.worker.host_example-7", withW(func(e *health.WorkerEvent) { e.CacheHitRatio = 2 }), nil},

		{"alert: another name", bus.Topology{}, "health.alert.dlq", mustJSON(t, alert), nil},
		{"alert: bad status", bus.Topology{}, "health.alert.breaker_open.api_v2", withA(func(e *health.AlertEvent) { e.Status = "on" }), nil},
		{"alert: no rule", bus.Topology{}, "health.alert.breaker_open.api_v2", withA(func(e *health.AlertEvent) { e.Rule = "" }), nil},
		{"alert: no at", bus.Topology{}, "health.alert.breaker_open.api_v2", withA(func(e *health.AlertEvent) { e.At = time.Time{} }), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := health.DecodeEvent(tc.topo, tc.subject, []byte(tc.data))
			if tc.want == nil {
				if !errors.Is(err, health.ErrInvalidEvent) {
					t.Fatalf("got %+v, %v; want an error wrapping ErrInvalidEvent", got, err)
				}
				if strings.Contains(err.Error(), strings.Repeat("v", 100)) {
					t.Errorf("the error repeats the event: %.200s", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// Whatever arrives on a health subject, DecodeEvent does not panic, and
// what it accepts encodes to an event it accepts again.
func FuzzDecodeEvent(f *testing.F) {
	f.Add("health.backend.svc", `{"backend":"svc","state":"healthy","breaker":"closed","at":"2026-01-02T03:04:05Z"}`)
	f.Add("health.worker.w1", `{"worker":"w1","status":"running","interval_s":10,"at":"2026-01-02T03:04:05Z"}`)
	f.Add("health.alert.dlq", `{"alert":"dlq","status":"firing","rule":"dlq_size","at":"2026-01-02T03:04:05Z"}`)
	f.Add("health.worker.w1", `{"worker":"w1","status":"running","at":"0001-01-01T00:00:00Z"}`)
	f.Add("health.backend.a_b", `{"backend":"a.b","state":"degraded","breaker":"open","success_rate":1e308,"at":"2026-01-02T03:04:05Z"}`)
	f.Fuzz(func(t *testing.T, subject, data string) {
		ev, err := health.DecodeEvent(bus.Topology{}, subject, []byte(data))
		if err != nil {
			if !errors.Is(err, health.ErrInvalidEvent) {
				t.Fatalf("error %v does not wrap ErrInvalidEvent", err)
			}
			return
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := health.DecodeEvent(bus.Topology{}, subject, b); err != nil {
			t.Fatalf("accepted %q on %s, refused its encoding %s: %v", data, subject, b, err)
		}
	})
}

// Heartbeats the monitor cannot trust (oversized, not JSON, lacking a
// field, or naming another worker than their subject) are not tracked:
// the one well-formed heartbeat of a worker that then goes silent raises
// its stale alert, and none of the others ever does.
func TestMonitorDropsMalformedHeartbeats(t *testing.T) {
	e := newEnv(t)
	const iv = 100 * time.Millisecond
	alerts := events[health.AlertEvent](t, e.nc, "health.alert.worker_stale.*")
	beats := events[health.WorkerEvent](t, e.nc, "health.worker.watcher")
	nc, js := e.connect(t)
	run(t, newMonitor(t, health.Options{JS: js, Conn: nc, WorkerID: "watcher", Interval: iv}))
	next(t, beats, "the watcher's first heartbeat") // it listens from now on

	beat := func(id string) health.WorkerEvent {
		return health.WorkerEvent{Worker: id, Status: health.WorkerRunning, Interval: iv.Seconds(), At: time.Now().UTC()}
	}
	big := beat("big")
	big.Version = strings.Repeat("x", health.MaxEventSize)
	nostatus := beat("nostatus")
	nostatus.Status = ""
	for _, m := range []struct{ subject, data string }{
		{"health.worker.big", mustJSON(t, big)},
		{"health.worker.junk", `{"worker":"junk","status":"running"`},
		{"health.worker.nostatus", mustJSON(t, nostatus)},
		{"health.worker.liar", mustJSON(t, beat("victim"))},
		{"health.worker.real", mustJSON(t, beat("real"))},
	} {
		if err := e.nc.Publish(m.subject, []byte(m.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		ev := next(t, alerts, "worker_stale.real")
		if ev.Alert == "worker_stale.real" && ev.Status == health.Firing {
			break
		}
		if ev.Alert != "worker_stale.watcher" {
			t.Fatalf("alert %+v about a dropped heartbeat", ev)
		}
	}
	// Every check judges every tracked worker: three more heartbeats of
	// the watcher are two more checks, in which a tracked forgery fires.
	for range 3 {
		next(t, beats, "heartbeat")
	}
	for len(alerts) > 0 {
		if ev := <-alerts; ev.Alert != "worker_stale.real" && ev.Alert != "worker_stale.watcher" {
			t.Fatalf("alert %+v about a dropped heartbeat", ev)
		}
	}
}

// A malformed last event of an alert is no alert to the monitor: it does
// not resolve it, while it does resolve a well-formed firing one whose
// condition is over.
func TestMonitorIgnoresMalformedAlert(t *testing.T) {
	e := newEnv(t)
	firing := func(name string) health.AlertEvent {
		return health.AlertEvent{Alert: name, Status: health.Firing, Backend: "svc", Rule: health.RuleBreakerOpen,
			Worker: "gone", At: time.Now().UTC()}
	}
	mismatch := firing("breaker_open.other")
	for subject, body := range map[string]string{
		"health.alert.breaker_open.good": mustJSON(t, firing("breaker_open.good")),
		"health.alert.breaker_open.bad":  mustJSON(t, mismatch),
	} {
		if _, err := e.js.Publish(t.Context(), subject, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	resolved := events[health.AlertEvent](t, e.nc, "health.alert.>")
	beats := events[health.WorkerEvent](t, e.nc, "health.worker.w1")
	run(t, newMonitor(t, health.Options{JS: e.js, WorkerID: "w1", Backends: []string{"good", "bad"},
		Interval: 50 * time.Millisecond}))
	ev := next(t, resolved, "breaker_open.good resolved")
	if ev.Alert != "breaker_open.good" || ev.Status != health.Resolved {
		t.Fatalf("got %+v, want breaker_open.good resolved", ev)
	}
	for range 3 {
		next(t, beats, "heartbeat")
	}
	for len(resolved) > 0 {
		if ev := <-resolved; ev.Alert == "breaker_open.bad" || ev.Alert == "breaker_open.other" {
			t.Fatalf("the monitor acted on a malformed alert: %+v", ev)
		}
	}
	if n := e.count(t, "health.alert.breaker_open.bad"); n != 1 {
		t.Errorf("health.alert.breaker_open.bad holds %d events, want the malformed one only", n)
	}
}
