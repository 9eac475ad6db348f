package health_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/breakwater/breakwater/health"
)

// control records what it was asked to do; it is the worker's side.
type control struct {
	mu    sync.Mutex
	calls []string
}

func (c *control) do(op, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name == "nope" {
		return errors.New("unknown " + name)
	}
	c.calls = append(c.calls, op+" "+name)
	return nil
}

func (c *control) PauseRoute(n string) error   { return c.do("pause", n) }
func (c *control) ResumeRoute(n string) error  { return c.do("resume", n) }
func (c *control) TripBreaker(n string) error  { return c.do("trip", n) }
func (c *control) ResetBreaker(n string) error { return c.do("reset", n) }

func TestAdminService(t *testing.T) {
	e := newEnv(t)
	m := newMonitor(t, health.Options{JS: e.js, WorkerID: "w1", Backends: []string{"svc"}})
	m.AttemptStarted("svc")
	m.AttemptDone("svc", 3*time.Millisecond, nil)
	ctl := &control{}
	svc, err := health.StartAdmin(health.AdminOptions{Conn: e.nc, Monitor: m, Control: ctl, WorkerID: "w1", Version: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })

	request := func(subject, body string) []byte {
		t.Helper()
		msg, err := e.nc.Request(subject, []byte(body), 2*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		return msg.Data
	}
	var ping micro.Ping
	if err := json.Unmarshal(request("$SRV.PING.breakwater", ""), &ping); err != nil || ping.Name != "breakwater" || ping.Metadata["worker"] != "w1" {
		t.Fatalf("PING %+v, %v", ping, err)
	}
	var info micro.Info
	if err := json.Unmarshal(request("$SRV.INFO.breakwater", ""), &info); err != nil || len(info.Endpoints) != 10 {
		t.Fatalf("INFO %+v, %v; want 10 endpoints", info, err)
	}
	var stats micro.Stats
	if err := json.Unmarshal(request("$SRV.STATS.breakwater", ""), &stats); err != nil || len(stats.Endpoints) == 0 {
		t.Fatalf("STATS %+v, %v", stats, err)
	}
	var st health.Status
	if err := json.Unmarshal(stats.Endpoints[0].Data, &st); err != nil || len(st.Backends) != 1 || st.Backends[0].LatencyMS.P50 != 3 {
		t.Fatalf("STATS data %s, %v; want the backend's health with its latency", stats.Endpoints[0].Data, err)
	}
	if err := json.Unmarshal(request("breakwater.w1.status", ""), &st); err != nil || st.Worker != "w1" || st.Backends[0].Backend != "svc" {
		t.Fatalf("status %+v, %v", st, err)
	}

	for _, tc := range []struct{ subject, body, want string }{
		{"breakwater.w1.route.pause", `{"route":"echo"}`, "pause echo"},
		{"breakwater.w1.route.resume", `{"route":"echo"}`, "resume echo"},
		{"breakwater.all.breaker.trip", `{"backend":"svc"}`, "trip svc"},
		{"breakwater.w1.breaker.reset", `{"backend":"svc"}`, "reset svc"},
	} {
		var reply health.ControlReply
		if err := json.Unmarshal(request(tc.subject, tc.body), &reply); err != nil || !reply.OK || reply.Worker != "w1" {
			t.Fatalf("%s: %+v, %v", tc.subject, reply, err)
		}
		ctl.mu.Lock()
		last := ctl.calls[len(ctl.calls)-1]
		ctl.mu.Unlock()
		if last != tc.want {
			t.Fatalf("%s did %q, want %q", tc.subject, last, tc.want)
		}
	}
	for _, tc := range []struct {
		name, subject, body, wantCode string
	}{
		{"refused by the worker", "breakwater.w1.route.pause", `{"route":"nope"}`, "422"},
		{"not JSON", "breakwater.w1.route.pause", `not json`, "400"},
		{"no route", "breakwater.w1.route.resume", `{"backend":"svc"}`, "400"},
		{"no backend", "breakwater.w1.breaker.trip", `{}`, "400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := e.nc.Request(tc.subject, []byte(tc.body), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var reply health.ControlReply
			if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.OK || reply.Error == "" || reply.Worker != "w1" {
				t.Fatalf("reply %s (%v), want ok false with the reason", msg.Data, err)
			}
			if got := msg.Header.Get("Nats-Service-Error-Code"); got != tc.wantCode {
				t.Fatalf("error code %q, want %q", got, tc.wantCode)
			}
		})
	}
	if err := json.Unmarshal(request("$SRV.STATS.breakwater", ""), &stats); err != nil {
		t.Fatal(err)
	}
	errs := 0
	for _, ep := range stats.Endpoints {
		errs += ep.NumErrors
	}
	if errs != 4 {
		t.Fatalf("STATS count %d errors, want 4", errs)
	}
}

// A request on breakwater.all.<op> reaches every worker; one on
// breakwater.<id>.<op> only that one.
func TestAdminAllWorkers(t *testing.T) {
	e := newEnv(t)
	ctls := map[string]*control{}
	for _, id := range []string{"w1", "w2", "w3"} {
		nc, js := e.connect(t)
		m := newMonitor(t, health.Options{JS: js, WorkerID: id})
		ctls[id] = &control{}
		svc, err := health.StartAdmin(health.AdminOptions{Conn: nc, Monitor: m, Control: ctls[id], WorkerID: id})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = svc.Stop() })
		// The service's subscriptions reach the server before any request.
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	replies := func(subject, body string, want int) map[string]bool {
		t.Helper()
		inbox := e.nc.NewRespInbox()
		sub, err := e.nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		if err := e.nc.PublishRequest(subject, inbox, []byte(body)); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for len(got) < want {
			msg, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatalf("%s: %d replies of %d: %v", subject, len(got), want, err)
			}
			var r health.ControlReply
			if err := json.Unmarshal(msg.Data, &r); err != nil || !r.OK {
				t.Fatalf("%s: reply %s (%v)", subject, msg.Data, err)
			}
			got[r.Worker] = true
		}
		return got
	}
	if got := replies("breakwater.all.route.pause", `{"route":"echo"}`, 3); len(got) != 3 {
		t.Fatalf("replies from %v, want w1, w2 and w3", got)
	}
	replies("breakwater.w2.route.resume", `{"route":"echo"}`, 1)
	for id, c := range ctls {
		c.mu.Lock()
		want := map[string]string{"w1": "[pause echo]", "w2": "[pause echo resume echo]", "w3": "[pause echo]"}[id]
		if got := fmt.Sprint(c.calls); got != want {
			t.Errorf("%s did %s, want %s", id, got, want)
		}
		c.mu.Unlock()
	}
}
