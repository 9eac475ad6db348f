package health_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/internal/testkit"
)

// task.status and task.cancel, asked of every worker at once: only the one
// running the task says so, and only it stops it.
func TestAdminTaskEndpoints(t *testing.T) {
	e := newEnv(t)
	since := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	tasks := map[string]*testkit.Tasks{
		"w1": testkit.NewTasks(map[string]time.Time{}),
		"w2": testkit.NewTasks(map[string]time.Time{"sleep/t1": since}),
	}
	for id, rt := range tasks {
		nc, js := e.connect(t)
		svc, err := health.StartAdmin(health.AdminOptions{Conn: nc, Monitor: newMonitor(t, health.Options{JS: js, WorkerID: id}),
			Control: &control{}, Tasks: rt, WorkerID: id})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = svc.Stop() })
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	ask := func(op, body string) map[string]health.TaskReply {
		t.Helper()
		inbox := e.nc.NewRespInbox()
		sub, err := e.nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		if err := e.nc.PublishRequest("breakwater.all."+op, inbox, []byte(body)); err != nil {
			t.Fatal(err)
		}
		got := map[string]health.TaskReply{}
		for len(got) < len(tasks) {
			msg, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatalf("%s: %d replies of %d: %v", op, len(got), len(tasks), err)
			}
			var r health.TaskReply
			if err := json.Unmarshal(msg.Data, &r); err != nil {
				t.Fatalf("%s: reply %s: %v", op, msg.Data, err)
			}
			got[r.Worker] = r
		}
		return got
	}
	st := ask("task.status", `{"type":"sleep","id":"t1"}`)
	if r := st["w2"]; !r.Running || !r.Since.Equal(since) {
		t.Errorf("w2 status: got %+v, want running since %s", r, since)
	}
	if r := st["w1"]; r.Running {
		t.Errorf("w1 status: got %+v, want not running", r)
	}
	if st := ask("task.status", `{"type":"other","id":"t1"}`); st["w2"].Running {
		t.Errorf("another type's task with the same id: got running %+v", st["w2"])
	}
	c := ask("task.cancel", `{"type":"sleep","id":"t1"}`)
	if !c["w2"].Cancelled || c["w1"].Cancelled {
		t.Errorf("cancel: got %+v, want cancelled by w2 only", c)
	}
	if got := tasks["w2"].Cancelled(); len(got) != 1 || got[0] != "sleep/t1" {
		t.Errorf("w2 cancelled %v, want [sleep/t1]", got)
	}
	if c := ask("task.cancel", `{"type":"sleep","id":"t1"}`); c["w2"].Cancelled {
		t.Errorf("second cancel: got %+v, want nothing to cancel", c["w2"])
	}
	for _, body := range []string{`{"type":"sleep"}`, `{"id":"t1"}`, `not json`} {
		msg, err := e.nc.Request("breakwater.w1.task.status", []byte(body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := msg.Header.Get("Nats-Service-Error-Code"); got != "400" {
			t.Errorf("task.status %s: error code %q, want 400", body, got)
		}
	}
}
