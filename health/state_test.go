package health

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
)

// A tracker's view says what a reader needs to read its success rate
// right: how many calls it is over, and how many of the "successes" were
// tasks the backend refused as their own fault.
func TestTrackerCallsAndRejections(t *testing.T) {
	type call int
	const (
		ok call = iota
		fail
		rejected
	)
	calls := func(c call, n int) []call {
		out := make([]call, n)
		for i := range out {
			out[i] = c
		}
		return out
	}
	tests := []struct {
		name         string
		give         []call
		wantState    State
		wantReason   string // contained in the reason; "" wants none
		wantCalls    int
		wantRejected int
		wantRate     float64
	}{
		{name: "no calls", wantState: Healthy, wantReason: "no calls yet", wantRate: 1},
		{name: "five failures are too few to judge", give: calls(fail, 5), wantState: Healthy,
			wantReason: "too few calls to judge (5 of 10)", wantCalls: 5, wantRate: 0},
		{name: "ten failures are judged", give: calls(fail, 10), wantState: Unhealthy,
			wantReason: "success rate under 50%", wantCalls: 10, wantRate: 0},
		{name: "every task rejected: healthy, and says so", give: calls(rejected, 20), wantState: Healthy,
			wantReason: "20 of the last 20 calls rejected as the task's fault", wantCalls: 20, wantRejected: 20, wantRate: 1},
		{name: "rejections slide out of the window", give: append(calls(rejected, windowCalls), calls(ok, windowCalls)...),
			wantState: Healthy, wantCalls: windowCalls, wantRate: 1},
		{name: "half the window rejected", give: append(calls(rejected, windowCalls), calls(ok, windowCalls/2)...),
			wantState: Healthy, wantReason: "100 of the last 200 calls", wantCalls: windowCalls, wantRejected: windowCalls / 2, wantRate: 1},
		{name: "plain successes need no reason", give: calls(ok, 50), wantState: Healthy, wantCalls: 50, wantRate: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			tr := newTracker(now)
			for _, c := range tt.give {
				tr.started()
				switch c {
				case ok:
					tr.done(now, time.Millisecond, true)
				case fail:
					tr.done(now, time.Millisecond, false)
				case rejected:
					tr.reject(now, time.Millisecond)
				}
			}
			v := tr.snapshot(now, true)
			if v.state != tt.wantState {
				t.Errorf("state %q, want %q", v.state, tt.wantState)
			}
			if tt.wantReason == "" && v.reason != "" || !strings.Contains(v.reason, tt.wantReason) {
				t.Errorf("reason %q, want %q", v.reason, tt.wantReason)
			}
			if v.calls != tt.wantCalls || v.rejected != tt.wantRejected || v.successRate != tt.wantRate {
				t.Errorf("calls %d, rejected %d, success %.2f; want %d, %d, %.2f",
					v.calls, v.rejected, v.successRate, tt.wantCalls, tt.wantRejected, tt.wantRate)
			}
			if v.inFlight != 0 {
				t.Errorf("in flight %d after every call ended, want 0", v.inFlight)
			}
		})
	}
}

// A rejection counts as available (the backend answered), like a success.
func TestTrackerRejectionIsAvailable(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tr := newTracker(now)
	for range 10 {
		tr.reject(now, time.Millisecond)
	}
	tr.done(now, time.Millisecond, false)
	tr.done(now, time.Millisecond, false)
	v := tr.snapshot(now, false)
	if v.availabilityCalls != 12 || v.availability < 83 || v.availability > 84 {
		t.Errorf("availability %.2f%% over %d calls, want 83.33%% over 12", v.availability, v.availabilityCalls)
	}
}

// The reasons reach the stored heartbeat of a real Monitor: a backend that
// refused every task, and one with too few calls to judge, are healthy with
// a reason that says why the figures read as they do.
func TestMonitorHeartbeatSaysWhyHealthy(t *testing.T) {
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir(), NoSyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	topo := bus.Topology{}
	if err := bus.EnsureStreams(t.Context(), js, topo); err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{JS: js, Topology: topo, WorkerID: "w1", Backends: []string{"idle"}, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range 12 {
		m.AttemptStarted("refuser")
		m.AttemptRejected("refuser", time.Millisecond)
	}
	for range 3 {
		m.AttemptStarted("young")
		m.AttemptDone("young", time.Millisecond, context.DeadlineExceeded)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }() // its first heartbeat goes out at once
	s, err := js.Stream(t.Context(), topo.HealthStream())
	if err != nil {
		t.Fatal(err)
	}
	last := func(backend string) (BackendEvent, bool) {
		msg, err := s.GetLastMsgForSubject(t.Context(), topo.HealthBackendSubject(backend))
		if err != nil {
			return BackendEvent{}, false
		}
		var ev BackendEvent
		return ev, json.Unmarshal(msg.Data, &ev) == nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, a := last("refuser")
		_, b := last("young")
		_, c := last("idle")
		if a && b && c {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat of the three backends within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for backend, want := range map[string]string{
		"refuser": "12 of the last 12 calls rejected as the task's fault",
		"young":   "too few calls to judge (3 of 10)",
		"idle":    "no calls yet",
	} {
		ev, _ := last(backend)
		if ev.State != Healthy || ev.Reason != want {
			t.Errorf("%s: %s %q, want healthy %q", backend, ev.State, ev.Reason, want)
		}
	}
}
