package bus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
)

// TestTasksAllowsSchedules: a fresh TASKS takes schedules.> and allows
// message schedules, and the server fires a schedule into tasks.<type>.
func TestTasksAllowsSchedules(t *testing.T) {
	for _, topo := range []bus.Topology{{}, {Prefix: "acme"}} {
		t.Run("prefix="+topo.Prefix, func(t *testing.T) {
			js := startServer(t)
			ctx := t.Context()
			if err := bus.EnsureStreams(ctx, js, topo); err != nil {
				t.Fatal(err)
			}
			s, err := js.Stream(ctx, topo.TasksStream())
			if err != nil {
				t.Fatal(err)
			}
			cfg := s.CachedInfo().Config
			if !cfg.AllowMsgSchedules || !cfg.AllowDirect || !slices.Contains(cfg.Subjects, topo.SchedulesFilter()) {
				t.Fatalf("TASKS: got allow_msg_schedules %v allow_direct %v subjects %v, want true, true and %s",
					cfg.AllowMsgSchedules, cfg.AllowDirect, cfg.Subjects, topo.SchedulesFilter())
			}
			once := strings.TrimSuffix(topo.SchedulesFilter(), ">") + "once.t1"
			msg := nats.NewMsg(once)
			msg.Header.Set("Nats-Schedule", "@at "+time.Now().Add(time.Second).UTC().Format(time.RFC3339))
			msg.Header.Set("Nats-Schedule-Target", topo.TaskSubject("echo"))
			msg.Header.Set("Task-Id", "t1")
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				t.Fatalf("publish a schedule: %v", err)
			}
			var fired *jetstream.RawStreamMsg
			testkit.Eventually(t, 10*time.Second, "the schedule to fire", func() (bool, string) {
				var err error
				fired, err = s.GetLastMsgForSubject(ctx, topo.TaskSubject("echo"))
				return err == nil, fmt.Sprint(err)
			})
			if got := fired.Header.Get("Task-Id"); got != "t1" {
				t.Errorf("fired Task-Id: got %q, want t1", got)
			}
			// Running again changes nothing.
			if err := bus.EnsureStreams(ctx, js, topo); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestTasksGainsSchedules: a TASKS made before schedules existed (or by an
// operator, without the flag) is updated in place and keeps its tasks.
func TestTasksGainsSchedules(t *testing.T) {
	js := startServer(t)
	ctx := t.Context()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "TASKS", Subjects: []string{"tasks.>"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, err := js.Publish(ctx, "tasks.echo", []byte(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := bus.EnsureStreams(ctx, js, bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Config.AllowMsgSchedules || !slices.Contains(info.Config.Subjects, "schedules.>") {
		t.Errorf("after update: allow_msg_schedules %v, subjects %v", info.Config.AllowMsgSchedules, info.Config.Subjects)
	}
	if info.State.Msgs != 3 {
		t.Errorf("after update: %d tasks, want the 3 stored before", info.State.Msgs)
	}
}

// TestTasksSchedulesRefused: when the server refuses to give an existing
// TASKS message schedules, the error names the setting and is final
// (ErrStreamMismatch: the worker stops instead of retrying).
func TestTasksSchedulesRefused(t *testing.T) {
	tests := []struct {
		name  string
		give  jetstream.StreamConfig
		other *jetstream.StreamConfig
	}{
		// Schedules need roll-ups, which purge; deny_purge cannot be lifted.
		{"deny purge", jetstream.StreamConfig{Name: "TASKS", Subjects: []string{"tasks.>"}, Retention: jetstream.WorkQueuePolicy, DenyPurge: true}, nil},
		{"schedules.> taken", jetstream.StreamConfig{Name: "TASKS", Subjects: []string{"tasks.>"}, Retention: jetstream.WorkQueuePolicy},
			&jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"schedules.>"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js := startServer(t)
			ctx := context.Background()
			if _, err := js.CreateStream(ctx, tt.give); err != nil {
				t.Fatal(err)
			}
			if tt.other != nil {
				if _, err := js.CreateStream(ctx, *tt.other); err != nil {
					t.Fatal(err)
				}
			}
			err := bus.EnsureStreams(ctx, js, bus.Topology{})
			if !errors.Is(err, bus.ErrStreamMismatch) {
				t.Fatalf("got %v, want ErrStreamMismatch", err)
			}
			for _, want := range []string{"TASKS", "allow_msg_schedules", "schedules.>"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
		})
	}
}
