package schedule_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/schedule"
	"github.com/breakwater/breakwater/task"
)

// env is a real embedded server with the contract's streams.
type env struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	topo bus.Topology
	c    *schedule.Client
}

func newEnv(t *testing.T, topo bus.Topology) *env {
	t.Helper()
	nc, js := testkit.StartServer(t).JetStream(t)
	if err := bus.EnsureStreams(t.Context(), js, topo); err != nil {
		t.Fatal(err)
	}
	return &env{nc: nc, js: js, topo: topo, c: schedule.New(js, schedule.Options{Topology: topo, AskWait: 300 * time.Millisecond})}
}

func (e *env) stream(t *testing.T, name string) jetstream.Stream {
	t.Helper()
	s, err := e.js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// subjects returns the message count per subject of stream matching filter.
func (e *env) subjects(t *testing.T, stream, filter string) map[string]uint64 {
	t.Helper()
	info, err := e.stream(t, stream).Info(t.Context(), jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects
}

// lastTask returns the last message on tasks.<typ>, or nil.
func (e *env) lastTask(t *testing.T, typ string) *jetstream.RawStreamMsg {
	t.Helper()
	m, err := e.stream(t, e.topo.TasksStream()).GetLastMsgForSubject(t.Context(), e.topo.TaskSubject(typ))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDelayFiresOnce: a delayed task is not published before its time,
// then once, to tasks.<type> with its Task-Id, and its schedule is gone.
func TestDelayFiresOnce(t *testing.T) {
	t.Parallel()
	for _, topo := range []bus.Topology{{}, {Prefix: "acme"}} {
		t.Run("prefix="+topo.Prefix, func(t *testing.T) {
			e := newEnv(t, topo)
			at := time.Now().Add(2 * time.Second)
			ack, err := e.c.Delay(t.Context(), schedule.Delayed{ID: "d1", Type: "echo", At: at, Data: []byte("hi"),
				Header: nats.Header{"X-Trace": {"k"}}})
			if err != nil {
				t.Fatal(err)
			}
			if ack.Stream != topo.TasksStream() {
				t.Errorf("stored in %s, want %s", ack.Stream, topo.TasksStream())
			}
			sc, err := e.c.GetDelayed(t.Context(), "d1")
			if err != nil {
				t.Fatal(err)
			}
			if sc.Type != "echo" || !sc.Spec.At.Equal(at.Truncate(time.Second).Add(time.Second)) {
				t.Errorf("delayed: type %q at %s, want echo at %s rounded up", sc.Type, sc.Spec.At, at)
			}
			// A second publish of the same id within the window is one task.
			if ack, err := e.c.Delay(t.Context(), schedule.Delayed{ID: "d1", Type: "echo", At: at}); err != nil || !ack.Duplicate {
				t.Errorf("repeat: duplicate %v, %v; want a duplicate", ack != nil && ack.Duplicate, err)
			}
			var fired *jetstream.RawStreamMsg
			testkit.Eventually(t, 10*time.Second, "the delayed task", func() (bool, string) {
				fired = e.lastTask(t, "echo")
				return fired != nil, "not fired"
			})
			if fired.Time.Before(at) {
				t.Errorf("fired at %s, before its time %s", fired.Time, at)
			}
			if got := fired.Header.Get(task.HeaderID); got != "d1" {
				t.Errorf("fired Task-Id %q, want d1", got)
			}
			if got := fired.Header.Get("X-Trace"); got != "k" || string(fired.Data) != "hi" {
				t.Errorf("fired header X-Trace %q data %q, want k and hi", got, fired.Data)
			}
			testkit.Eventually(t, 5*time.Second, "the schedule to be purged", func() (bool, string) {
				_, err := e.c.GetDelayed(t.Context(), "d1")
				return errors.Is(err, schedule.ErrNotFound), fmt.Sprint(err)
			})
			if n := e.subjects(t, topo.TasksStream(), topo.TaskSubject("echo"))[topo.TaskSubject("echo")]; n != 1 {
				t.Errorf("tasks.echo holds %d tasks, want 1", n)
			}
		})
	}
}

// TestDelayRefusesBadInput: nothing is stored for bad input.
func TestDelayRefusesBadInput(t *testing.T) {
	e := newEnv(t, bus.Topology{})
	later := time.Now().Add(time.Hour)
	for _, d := range []schedule.Delayed{
		{ID: "p", Type: "echo", At: time.Now().Add(-time.Second)},
		{ID: "a.b", Type: "echo", At: later},
		{ID: "w", Type: "ech*", At: later},
		{ID: "h", Type: "echo", At: later, Header: nats.Header{"Nats-Schedule": {"@every 1s"}}},
		{ID: "i", Type: "echo", At: later, Header: nats.Header{"Task-Id": {"other"}}},
	} {
		if _, err := e.c.Delay(t.Context(), d); !errors.Is(err, schedule.ErrInvalid) {
			t.Errorf("Delay(%+v): got %v, want ErrInvalid", d, err)
		}
	}
	if n := e.subjects(t, "TASKS", ">"); len(n) != 0 {
		t.Errorf("TASKS holds %v, want nothing", n)
	}
}

// TestPeriodicAddReplaceListRemove: a name is one schedule; adding it
// again replaces it; rm stops it.
func TestPeriodicAddReplaceListRemove(t *testing.T) {
	e := newEnv(t, bus.Topology{})
	ctx := t.Context()
	for _, every := range []time.Duration{time.Hour, 2 * time.Hour} {
		if _, err := e.c.Add(ctx, schedule.Periodic{Name: "report", Type: "reports.daily", Spec: schedule.Spec{Every: every},
			Header: nats.Header{"X-Who": {"ops"}}, Data: []byte(`{"n":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.c.Add(ctx, schedule.Periodic{Name: "berlin", Type: "echo", Spec: schedule.Spec{Cron: "0 30 9 * * mon-fri", TimeZone: "Europe/Berlin"}}); err != nil {
		t.Fatal(err)
	}
	if got := e.subjects(t, "TASKS", "schedules.every.report")["schedules.every.report"]; got != 1 {
		t.Errorf("schedules.every.report holds %d messages, want 1 (a roll-up)", got)
	}
	list, err := e.c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "berlin" || list[1].Name != "report" {
		t.Fatalf("List: got %v, want berlin and report", list)
	}
	r := list[1]
	if r.Type != "reports.daily" || r.Spec.Every != 2*time.Hour || r.Header.Get("X-Who") != "ops" || string(r.Data) != `{"n":1}` {
		t.Errorf("report: %+v, want type reports.daily every 2h with its header and data", r)
	}
	for k := range r.Header {
		if k == schedule.HeaderSchedule || k == schedule.HeaderTarget || k == schedule.HeaderRollup {
			t.Errorf("report's task headers hold the schedule's own %s", k)
		}
	}
	b := list[0]
	next, ok := b.Next(time.Now())
	if !ok || b.Spec.TimeZone != "Europe/Berlin" {
		t.Fatalf("berlin: next %s %v zone %q", next, ok, b.Spec.TimeZone)
	}
	berlin := mustZone(t, "Europe/Berlin")
	if l := next.In(berlin); l.Hour() != 9 || l.Minute() != 30 || l.Weekday() == time.Saturday || l.Weekday() == time.Sunday || !next.After(time.Now()) {
		t.Errorf("berlin next run %s (%s in Berlin), want a weekday 09:30 in Berlin, in the future", next, l)
	}
	if err := e.c.Remove(ctx, "report"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Get(ctx, "report"); !errors.Is(err, schedule.ErrNotFound) {
		t.Errorf("Get after Remove: got %v, want ErrNotFound", err)
	}
	if err := e.c.Remove(ctx, "report"); !errors.Is(err, schedule.ErrNotFound) {
		t.Errorf("second Remove: got %v, want ErrNotFound", err)
	}
	if list, _ := e.c.List(ctx); len(list) != 1 {
		t.Errorf("List after Remove: %d schedules, want 1", len(list))
	}
}

func TestPeriodicRefusesBadInput(t *testing.T) {
	e := newEnv(t, bus.Topology{})
	for _, p := range []schedule.Periodic{
		{Name: "a.b", Type: "echo", Spec: schedule.Spec{Every: time.Minute}},
		{Name: "", Type: "echo", Spec: schedule.Spec{Every: time.Minute}},
		{Name: "x", Type: "echo.>", Spec: schedule.Spec{Every: time.Minute}},
		{Name: "x", Type: "echo", Spec: schedule.Spec{Every: 10 * time.Millisecond}},
		{Name: "x", Type: "echo", Spec: schedule.Spec{Cron: "61 * * * * *"}},
		{Name: "x", Type: "echo", Spec: schedule.Spec{Cron: "0 * * * * *", TimeZone: "Nowhere/City"}},
		{Name: "x", Type: "echo", Spec: schedule.Spec{At: time.Now().Add(time.Hour)}},
		{Name: "x", Type: "echo", Spec: schedule.Spec{Every: time.Minute}, Header: nats.Header{"Nats-Msg-Id": {"1"}}},
		{Name: "x", Type: "echo", Spec: schedule.Spec{Every: time.Minute}, Header: nats.Header{"task-id": {"1"}}},
	} {
		if _, err := e.c.Add(t.Context(), p); !errors.Is(err, schedule.ErrInvalid) {
			t.Errorf("Add(%+v): got %v, want ErrInvalid", p, err)
		}
	}
	if n := e.subjects(t, "TASKS", ">"); len(n) != 0 {
		t.Errorf("TASKS holds %v, want nothing", n)
	}
}

// TestEveryFires: an @every 1s schedule fires each second into
// tasks.<type>, each firing marked with Nats-Scheduler (from which the
// worker derives its distinct id), and no more after Remove.
func TestEveryFires(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bus.Topology{})
	ctx := t.Context()
	if _, err := e.c.Add(ctx, schedule.Periodic{Name: "tick", Type: "echo", Spec: schedule.Spec{Every: time.Second}}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "3 firings", func() (bool, string) {
		n := e.subjects(t, "TASKS", "tasks.echo")["tasks.echo"]
		return n >= 3, fmt.Sprintf("%d firings", n)
	})
	m := e.lastTask(t, "echo")
	if got := m.Header.Get(task.HeaderScheduler); got != "schedules.every.tick" {
		t.Errorf("Nats-Scheduler %q, want schedules.every.tick", got)
	}
	// The ids the worker gives them are distinct.
	s := e.stream(t, "TASKS")
	ids := map[string]bool{}
	for i, seq := 0, uint64(1); i < 3; i++ {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject("tasks.echo"))
		if err != nil {
			t.Fatal(err)
		}
		seq = m.Sequence + 1
		ids[schedule.FiringID("tick", m.Time)] = true
	}
	if len(ids) != 3 {
		t.Errorf("3 firings have the ids %v, want 3 distinct", ids)
	}
	if err := e.c.Remove(ctx, "tick"); err != nil {
		t.Fatal(err)
	}
	// A firing in flight may still land; then nothing for 3 intervals.
	before := e.subjects(t, "TASKS", "tasks.echo")["tasks.echo"]
	testkit.Consistently(t, 3*time.Second, "no firing after Remove", func() (bool, string) {
		n := e.subjects(t, "TASKS", "tasks.echo")["tasks.echo"]
		return n <= before+1, fmt.Sprintf("%d firings after Remove, want at most 1 in flight", n-before)
	})
}

// TestCronAgreesWithServer: the next run computed here is when the server
// fires a cron schedule (in a zone).
func TestCronAgreesWithServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, bus.Topology{})
	sc, err := e.c.Add(t.Context(), schedule.Periodic{Name: "cron", Type: "echo",
		Spec: schedule.Spec{Cron: "*/3 * * * * *", TimeZone: "Asia/Kolkata"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.c.Get(t.Context(), "cron")
	if err != nil {
		t.Fatal(err)
	}
	next, ok := got.Next(sc.Created)
	if !ok || next.Unix()%3 != 0 {
		t.Fatalf("next run %s (%v), want a second divisible by 3", next, ok)
	}
	var fired *jetstream.RawStreamMsg
	testkit.Eventually(t, 10*time.Second, "the first firing", func() (bool, string) {
		fired = e.lastTask(t, "echo")
		return fired != nil, "none"
	})
	if fired.Time.Before(next) || fired.Time.After(next.Add(2*time.Second)) {
		t.Errorf("fired at %s, want at its next run %s (within 2s)", fired.Time, next)
	}
}
