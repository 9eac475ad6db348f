package health_test

import (
	"encoding/json"
	"errors"
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
	m, _ := health.New(health.Options{JS: e.js, WorkerID: "w1", Backends: []string{"svc"}})
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
	var reply health.ControlReply
	if err := json.Unmarshal(request("breakwater.w1.route.pause", `{"route":"nope"}`), &reply); err != nil || reply.OK || reply.Error == "" {
		t.Fatalf("failing control: %+v, %v", reply, err)
	}
	if err := json.Unmarshal(request("breakwater.w1.route.pause", `not json`), &reply); err != nil || reply.OK {
		t.Fatalf("bad request: %+v, %v", reply, err)
	}
}
