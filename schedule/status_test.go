package schedule_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/schedule"
	"github.com/breakwater/breakwater/task"
)

// startWorker answers the admin plane's task requests as a worker running
// the tasks in running does.
func (e *env) startWorker(t *testing.T, id string, running map[string]time.Time) *testkit.Tasks {
	t.Helper()
	f := testkit.NewTasks(running)
	m, err := health.New(health.Options{JS: e.js, WorkerID: id})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := health.StartAdmin(health.AdminOptions{Conn: e.nc, Monitor: m, Control: nopControl{}, Tasks: f, WorkerID: id,
		Subject: health.AdminSubject(e.topo.Prefix)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return f
}

type nopControl struct{}

func (nopControl) PauseRoute(string) error   { return nil }
func (nopControl) ResumeRoute(string) error  { return nil }
func (nopControl) TripBreaker(string) error  { return nil }
func (nopControl) ResetBreaker(string) error { return nil }

func (e *env) publish(t *testing.T, subject string, h nats.Header, data string) *jetstream.PubAck {
	t.Helper()
	ack, err := e.js.PublishMsg(t.Context(), &nats.Msg{Subject: subject, Header: h, Data: []byte(data)})
	if err != nil {
		t.Fatal(err)
	}
	return ack
}

// TestStatus: each state, found where the task is.
func TestStatus(t *testing.T) {
	t.Parallel()
	for _, topo := range []bus.Topology{{}, {Prefix: "acme"}} {
		t.Run("prefix="+topo.Prefix, func(t *testing.T) {
			e := newEnv(t, topo)
			ctx := t.Context()
			since := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
			e.startWorker(t, "w1", map[string]time.Time{"echo/run": since})
			at := time.Now().Add(time.Hour)
			if _, err := e.c.Delay(ctx, schedule.Delayed{ID: "later", Type: "echo", At: at}); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"p1", "run", "p3"} {
				e.publish(t, topo.TaskSubject("echo"), nats.Header{task.HeaderMsgID: {id}}, "x")
			}
			e.publish(t, topo.TaskSubject("other"), nats.Header{task.HeaderID: {"o1"}}, "x")
			e.publish(t, topo.ResultSubject("echo", "fin"), nats.Header{task.HeaderID: {"fin"}, task.HeaderStatus: {"ok"},
				task.HeaderBackend: {"echoer"}, task.HeaderDuration: {"3ms"}, task.HeaderAttempts: {"2"}}, "answer")
			dead := e.publish(t, topo.DLQSubject("echo"), nats.Header{task.HeaderID: {"dead"}, task.HeaderDLQReason: {"exhausted"},
				task.HeaderDLQError: {"HTTP 503"}}, "x")

			tests := []struct {
				typ, id string
				want    schedule.Status
			}{
				{"echo", "later", schedule.Status{State: schedule.Scheduled, At: at.Truncate(time.Second).Add(time.Second)}},
				{"echo", "p3", schedule.Status{State: schedule.Pending, Position: 3, Of: 3}},
				{"echo", "run", schedule.Status{State: schedule.Running, Worker: "w1", Since: since}},
				{"echo", "fin", schedule.Status{State: schedule.Done, Backend: "echoer", Duration: "3ms", Attempts: 2}},
				{"echo", "dead", schedule.Status{State: schedule.DeadLettered, Reason: "exhausted", Error: "HTTP 503", Seq: dead.Sequence}},
				{"other", "o1", schedule.Status{State: schedule.Pending, Position: 1, Of: 1}},
				{"echo", "o1", schedule.Status{State: schedule.Unknown}},     // another type's
				{"other", "later", schedule.Status{State: schedule.Unknown}}, // another type's
				{"echo", "never", schedule.Status{State: schedule.Unknown}},
			}
			for _, tt := range tests {
				got, err := e.c.Status(ctx, tt.typ, tt.id)
				if err != nil {
					t.Fatalf("%s %s: %v", tt.typ, tt.id, err)
				}
				w := tt.want
				if got.State != w.State || !got.At.Equal(w.At) || got.Position != w.Position || got.Of != w.Of || got.Worker != w.Worker ||
					!got.Since.Equal(w.Since) || got.Backend != w.Backend || got.Duration != w.Duration || got.Attempts != w.Attempts ||
					got.Reason != w.Reason || got.Error != w.Error || (w.Seq != 0 && got.Seq != w.Seq) {
					t.Errorf("%s %s: got %+v, want %+v", tt.typ, tt.id, got, w)
				}
			}
			if got, _ := e.c.Status(ctx, "echo", "fin"); string(got.Result) != "answer" {
				t.Errorf("done result %q, want answer", got.Result)
			}
			for _, bad := range [][2]string{{"echo", "a.b"}, {"ec*", "x"}, {"", "x"}} {
				if _, err := e.c.Status(ctx, bad[0], bad[1]); !errors.Is(err, schedule.ErrInvalid) {
					t.Errorf("Status(%q, %q): got %v, want ErrInvalid", bad[0], bad[1], err)
				}
			}
		})
	}
}

// TestStatusOfFiring: a periodic schedule's firing waiting in TASKS is
// found by the id the worker gives it.
func TestStatusOfFiring(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bus.Topology{})
	ctx := t.Context()
	// The server refuses Nats-Scheduler from clients: a real firing it is.
	if _, err := e.c.Add(ctx, schedule.Periodic{Name: "sec", Type: "echo", Spec: schedule.Spec{Every: time.Second}}); err != nil {
		t.Fatal(err)
	}
	var fired *jetstream.RawStreamMsg
	testkit.Eventually(t, 10*time.Second, "a firing", func() (bool, string) {
		fired = e.lastTask(t, "echo")
		return fired != nil && fired.Header.Get(task.HeaderScheduler) != "", "none"
	})
	if err := e.c.Remove(ctx, "sec"); err != nil {
		t.Fatal(err)
	}
	id := schedule.FiringID("sec", fired.Time)
	st, err := e.c.Status(ctx, "echo", id)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != schedule.Pending || st.Seq != fired.Sequence {
		t.Errorf("firing %s: got %+v, want pending at seq %d", id, st, fired.Sequence)
	}
}

// TestCancel: a scheduled and a pending task end in the DLQ as cancelled
// and leave TASKS; a running one is stopped by its worker; a done one is
// not cancellable.
func TestCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bus.Topology{})
	ctx := t.Context()
	w := e.startWorker(t, "w1", map[string]time.Time{"echo/run": time.Now()})
	if _, err := e.c.Delay(ctx, schedule.Delayed{ID: "later", Type: "echo", At: time.Now().Add(2 * time.Second), Data: []byte("L"),
		Header: nats.Header{"X-K": {"v"}}}); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "tasks.echo", nats.Header{task.HeaderID: {"pend"}, task.HeaderMsgID: {"pend"}}, "P")
	e.publish(t, "results.echo.fin", nats.Header{task.HeaderID: {"fin"}, task.HeaderStatus: {"ok"}}, "")

	admin, err := dlq.NewAdmin(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id      string
		was     schedule.State
		payload string
	}{{"later", schedule.Scheduled, "L"}, {"pend", schedule.Pending, "P"}} {
		c, err := e.c.Cancel(ctx, "echo", tc.id)
		if err != nil {
			t.Fatalf("cancel %s: %v", tc.id, err)
		}
		if c.Was.State != tc.was || c.DLQSeq == 0 {
			t.Fatalf("cancel %s: %+v, want it %s with a DLQ copy", tc.id, c, tc.was)
		}
		item, err := admin.Get(ctx, c.DLQSeq)
		if err != nil {
			t.Fatal(err)
		}
		if item.Reason() != dlq.Cancelled || item.ID() != tc.id || string(item.Data) != tc.payload ||
			item.Header.Get(task.HeaderDLQOriginalSubject) != "tasks.echo" || item.Header.Get(task.HeaderDLQWorker) != "publisher" {
			t.Errorf("DLQ copy of %s: reason %s id %s data %q headers %v", tc.id, item.Reason(), item.ID(), item.Data, item.Header)
		}
		for k := range item.Header {
			if k == schedule.HeaderSchedule || k == schedule.HeaderTarget {
				t.Errorf("DLQ copy of %s carries the schedule header %s: a replay would schedule, not run it", tc.id, k)
			}
		}
		if st, _ := e.c.Status(ctx, "echo", tc.id); st.State != schedule.DeadLettered || st.Reason != "cancelled" {
			t.Errorf("status of cancelled %s: %+v, want dead-lettered as cancelled", tc.id, st)
		}
	}
	if item, _ := admin.List(ctx, dlq.Filter{}); len(item) == 2 && item[0].Header.Get("X-K") != "v" {
		t.Errorf("the scheduled task's DLQ copy lost its header X-K: %v", item[0].Header)
	}
	if n := e.subjects(t, "TASKS", ">"); len(n) != 0 {
		t.Errorf("TASKS after cancelling holds %v, want nothing", n)
	}
	// The cancelled delayed task never fires (its time passes meanwhile).
	testkit.Consistently(t, 3*time.Second, "the cancelled delayed task not firing", func() (bool, string) {
		if m := e.lastTask(t, "echo"); m != nil {
			return false, fmt.Sprintf("the cancelled delayed task fired: %v", m.Header)
		}
		return true, ""
	})

	c, err := e.c.Cancel(ctx, "echo", "run")
	if err != nil {
		t.Fatal(err)
	}
	if c.Was.State != schedule.Running || c.Worker != "w1" {
		t.Errorf("cancel running: %+v, want stopped by w1", c)
	}
	if got := w.Cancelled(); len(got) != 1 || got[0] != "echo/run" {
		t.Errorf("worker cancelled %v, want [echo/run]", got)
	}
	for _, id := range []string{"fin", "never", "pend"} {
		if _, err := e.c.Cancel(ctx, "echo", id); !errors.Is(err, schedule.ErrNotCancellable) {
			t.Errorf("cancel %s: got %v, want ErrNotCancellable", id, err)
		}
	}
}

// TestLastFired: the newest recent firing with a result is found by the
// id the worker gave it.
func TestLastFired(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bus.Topology{})
	ctx := t.Context()
	sc, err := e.c.Add(ctx, schedule.Periodic{Name: "tick", Type: "echo", Spec: schedule.Spec{Every: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Remove(ctx, "tick"); err != nil { // the results below stand in for its firings
		t.Fatal(err)
	}
	if f, err := e.c.LastFired(ctx, sc); err != nil || f != nil {
		t.Fatalf("before any result: %+v, %v; want none", f, err)
	}
	var due time.Time
	testkit.Eventually(t, 10*time.Second, "two seconds to pass", func() (bool, string) {
		due = time.Now().Add(-time.Second).Truncate(time.Second)
		return due.After(sc.Created.Add(time.Second)), ""
	})
	// Results of two firings: the newer one is the last fired.
	older := schedule.FiringID("tick", due.Add(-time.Second))
	e.publish(t, "results.echo."+older, nats.Header{task.HeaderID: {older}, task.HeaderStatus: {"ok"}}, "old")
	id := schedule.FiringID("tick", due)
	e.publish(t, "results.echo."+id, nats.Header{task.HeaderID: {id}, task.HeaderStatus: {"ok"}}, "r")
	f, err := e.c.LastFired(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	if f == nil || f.ID != id || !f.At.Equal(due) || string(f.Result.Data) != "r" {
		t.Errorf("LastFired: got %+v, want %s due at %s", f, id, due)
	}
}
