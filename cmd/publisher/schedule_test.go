package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/task"
)

// subjectCount is the number of messages on subjects matching filter in
// stream.
func subjectCount(t *testing.T, e *testEnv, stream, filter string) int {
	t.Helper()
	s, err := e.js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// TestPublishDelayed: --in and --at store a delayed task that runs at its
// time, not before; --wait waits for it.
func TestPublishDelayed(t *testing.T) {
	t.Parallel()
	e := startServer(t)
	start := time.Now()
	r := runCmd(t, "", "publish", "echo", "later", "--id", "d1", "--in", "2s", "--nats-url", e.url)
	wantOK(t, r)
	if strings.TrimSpace(r.stdout) != "d1" {
		t.Errorf("stdout %q, want the id d1", r.stdout)
	}
	r = runCmd(t, "", "status", "echo", "d1", "--nats-url", e.url)
	wantOK(t, r)
	if !strings.HasPrefix(r.stdout, "scheduled: runs at ") {
		t.Errorf("status of a delayed task: %q, want scheduled", r.stdout)
	}
	r = runCmd(t, "", "schedule", "list", "--delayed", "--nats-url", e.url)
	wantOK(t, r)
	if !strings.Contains(r.stdout, "d1") || !strings.Contains(r.stdout, "echo") {
		t.Errorf("schedule list --delayed: %q, want d1", r.stdout)
	}
	if n := subjectCount(t, e, "TASKS", "tasks.>"); n != 0 {
		t.Fatalf("%d tasks in TASKS right after a delayed publish, want 0", n)
	}
	fakeWorker(t, e, bus.Topology{})
	at := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339)
	r = runCmd(t, "", "publish", "echo", "at-body", "--id", "d2", "--at", at, "--wait", "--nats-url", e.url)
	wantOK(t, r)
	if strings.TrimSpace(r.stdout) != "at-body" {
		t.Errorf("publish --at --wait: stdout %q, want the result at-body", r.stdout)
	}
	due, _ := time.Parse(time.RFC3339, at)
	if now := time.Now(); now.Before(due) {
		t.Errorf("--wait returned at %s, before the task was due at %s", now, due)
	}
	testkit.Eventually(t, 10*time.Second, "the --in task's result", func() (bool, string) {
		r := runCmd(t, "", "status", "echo", "d1", "--nats-url", e.url)
		return strings.HasPrefix(r.stdout, "done: backend fake"), ""
	})
	m := lastTask(t, e, "RESULTS", "results.echo.d1")
	if m.Time.Before(start.Add(2 * time.Second)) {
		t.Errorf("the --in 2s task's result was stored %s after the publish, before its time", m.Time.Sub(start))
	}
}

// TestPublishDelayedBadInput: mistakes exit 2 and store nothing.
func TestPublishDelayedBadInput(t *testing.T) {
	t.Parallel()
	e := startServer(t)
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--at", past}, "not in the future"},
		{[]string{"--at", "tomorrow"}, "RFC 3339"},
		{[]string{"--in", "-5s"}, "positive"},
		{[]string{"--in", "5x"}, "--in"},
		{[]string{"--in", "5s", "--at", past}, "not both"},
		{[]string{"--in", "5s", "--header", "Nats-Schedule=@every 1s"}, "Nats-"},
	} {
		args := append([]string{"publish", "echo", "x", "--nats-url", e.url}, tc.args...)
		wantFail(t, runCmd(t, "", args...), exitUsage, tc.want)
	}
	wantFail(t, runCmd(t, "", "publish", "--file", "-", "--in", "1s", "--nats-url", e.url), exitUsage, "--in")
	if n := subjectCount(t, e, "TASKS", ">"); n != 0 {
		t.Errorf("TASKS holds %d messages after refused publishes, want 0", n)
	}
}

// TestScheduleCommands: add, replace, list, show and rm; bad input exits
// 2 and stores nothing.
func TestScheduleCommands(t *testing.T) {
	t.Parallel()
	e := startServer(t)
	u := []string{"--nats-url", e.url}
	r := runCmd(t, "", append([]string{"schedule", "add", "beat", "echo", `{"n":1}`, "--every", "1h", "--header", "X-Team=ops"}, u...)...)
	wantOK(t, r)
	if !strings.HasPrefix(r.stdout, "added schedule beat: echo @every 1h0m0s, next run ") {
		t.Errorf("add: %q", r.stdout)
	}
	r = runCmd(t, "", append([]string{"schedule", "add", "beat", "echo", "--every", "2h"}, u...)...)
	wantOK(t, r)
	if !strings.HasPrefix(r.stdout, "replaced schedule beat") {
		t.Errorf("second add: %q, want replaced", r.stdout)
	}
	wantOK(t, runCmd(t, "", append([]string{"schedule", "add", "tokyo", "reports.daily", "--cron", "0 0 9 * * *", "--tz", "Asia/Tokyo"}, u...)...))
	if n := subjectCount(t, e, "TASKS", "schedules.>"); n != 2 {
		t.Errorf("TASKS holds %d schedule messages, want 2 (adding beat again replaced it)", n)
	}

	r = runCmd(t, "", append([]string{"schedule", "list"}, u...)...)
	wantOK(t, r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "beat") || !strings.HasPrefix(lines[2], "tokyo") {
		t.Fatalf("list:\n%s", r.stdout)
	}
	if !strings.Contains(lines[1], "@every 2h0m0s") || !strings.Contains(lines[2], "0 0 9 * * * (Asia/Tokyo)") {
		t.Errorf("list patterns:\n%s", r.stdout)
	}
	r = runCmd(t, "", append([]string{"schedule", "list", "--json"}, u...)...)
	wantOK(t, r)
	var tokyo scheduleJSON
	if err := json.Unmarshal([]byte(strings.Split(strings.TrimSpace(r.stdout), "\n")[1]), &tokyo); err != nil {
		t.Fatal(err)
	}
	// 09:00 in Tokyo is 00:00 UTC, every day.
	if tokyo.Next == nil || tokyo.Next.UTC().Hour() != 0 || tokyo.Next.Minute() != 0 || !tokyo.Next.After(time.Now()) ||
		time.Until(*tokyo.Next) > 24*time.Hour || tokyo.TimeZone != "Asia/Tokyo" {
		t.Errorf("tokyo: next %v zone %q, want the next 00:00 UTC", tokyo.Next, tokyo.TimeZone)
	}
	r = runCmd(t, "", append([]string{"schedule", "show", "beat"}, u...)...)
	wantOK(t, r)
	for _, want := range []string{"Name:       beat", "Pattern:    @every 2h0m0s", "Subject:    schedules.every.beat", "Last fired: -"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show: missing %q in\n%s", want, r.stdout)
		}
	}
	wantFail(t, runCmd(t, "", append([]string{"schedule", "show", "nope"}, u...)...), exitFailure, "not found")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bad.name", "echo", "--every", "1m"}, "schedule name"},
		{[]string{"x", "echo"}, "--every DURATION or --cron"},
		{[]string{"x", "echo", "--every", "1x"}, "--every"},
		{[]string{"x", "echo", "--every", "500ms"}, "whole seconds"},
		{[]string{"x", "echo", "--cron", "0 0 9 * *"}, "6"},
		{[]string{"x", "echo", "--cron", "0 0 25 * * *"}, "hour"},
		{[]string{"x", "echo", "--cron", "0 0 9 * * *", "--tz", "Atlantis/Capital"}, "unknown time zone"},
		{[]string{"x", "echo", "--every", "1m", "--tz", "Europe/Berlin"}, "cron patterns only"},
		{[]string{"x", "echo", "--every", "1m", "--cron", "0 0 9 * * *"}, "exactly one"},
		{[]string{"x", "ech*", "--every", "1m"}, "wildcards"},
		{[]string{"x", "echo", "--every", "1m", "--header", "Task-Id=7"}, "Task-Id"},
	} {
		args := append(append([]string{"schedule", "add"}, tc.args...), u...)
		wantFail(t, runCmd(t, "", args...), exitUsage, tc.want)
	}
	if n := subjectCount(t, e, "TASKS", "schedules.>"); n != 2 {
		t.Errorf("TASKS holds %d schedule messages after refused adds, want 2", n)
	}

	r = runCmd(t, "", append([]string{"schedule", "rm", "beat"}, u...)...)
	wantOK(t, r)
	wantFail(t, runCmd(t, "", append([]string{"schedule", "rm", "beat"}, u...)...), exitFailure, "not found")
	r = runCmd(t, "", append([]string{"schedule", "list"}, u...)...)
	if strings.Contains(r.stdout, "beat") {
		t.Errorf("list after rm: %q", r.stdout)
	}
}

// TestStatusAndCancelCommands: status in each state without a worker
// (running is covered end to end), --json, and cancel of a pending and a
// scheduled task into the DLQ as cancelled.
func TestStatusAndCancelCommands(t *testing.T) {
	t.Parallel()
	e := startServer(t)
	u := []string{"--nats-url", e.url}
	wantOK(t, runCmd(t, "", append([]string{"publish", "echo", "P", "--id", "pend"}, u...)...))
	wantOK(t, runCmd(t, "", append([]string{"publish", "echo", "S", "--id", "sched", "--in", "1h"}, u...)...))
	storeResult(t, e, "echo", "fin", `{"answer":42}`)
	if _, err := e.js.PublishMsg(t.Context(), &nats.Msg{Subject: "dlq.echo", Header: nats.Header{
		task.HeaderID: {"dead"}, task.HeaderDLQReason: {"rejected"}, task.HeaderDLQError: {"HTTP 422"}}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ id, want string }{
		{"pend", "pending: 1 of 1 tasks of type echo waiting in TASKS"},
		{"sched", "scheduled: runs at "},
		{"fin", `done: backend fake, duration 2ms, 0 attempt(s), stored `},
		{"dead", "dead-lettered: reason rejected, DLQ seq 1"},
		{"nope", "unknown: "},
	} {
		r := runCmd(t, "", append([]string{"status", "echo", tc.id}, u...)...)
		wantOK(t, r)
		if !strings.HasPrefix(r.stdout, tc.want) {
			t.Errorf("status %s: %q, want it to start with %q", tc.id, r.stdout, tc.want)
		}
	}
	r := runCmd(t, "", append([]string{"status", "echo", "fin", "--json"}, u...)...)
	wantOK(t, r)
	var st struct {
		State  string          `json:"state"`
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.State != "done" || string(st.Result) != `{"answer":42}` {
		t.Errorf("status --json: %q (%v)", r.stdout, err)
	}
	wantFail(t, runCmd(t, "", append([]string{"status", "echo", "a.b"}, u...)...), exitUsage, "task id")

	r = runCmd(t, "", append([]string{"cancel", "echo", "pend"}, u...)...)
	wantOK(t, r)
	if !strings.HasPrefix(r.stdout, "cancelled pending task pend: dead-lettered as cancelled, DLQ seq ") {
		t.Errorf("cancel pending: %q", r.stdout)
	}
	r = runCmd(t, "", append([]string{"cancel", "echo", "sched"}, u...)...)
	wantOK(t, r)
	if !strings.HasPrefix(r.stdout, "cancelled scheduled task sched (due ") {
		t.Errorf("cancel scheduled: %q", r.stdout)
	}
	if n := subjectCount(t, e, "TASKS", ">"); n != 0 {
		t.Errorf("TASKS holds %d messages after both cancels, want 0", n)
	}
	r = runCmd(t, "", append([]string{"dlq", "list", "--reason", "cancelled", "--json"}, u...)...)
	wantOK(t, r)
	got := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(r.stdout), "\n") {
		var d dlqEntry
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatal(err)
		}
		got[d.ID] = d.Data
	}
	if len(got) != 2 || got["pend"] != "P" || got["sched"] != "S" {
		t.Errorf("cancelled DLQ entries %v, want pend and sched with their payloads", got)
	}
	wantFail(t, runCmd(t, "", append([]string{"cancel", "echo", "fin"}, u...)...), exitFailure, "is done")
	wantFail(t, runCmd(t, "", append([]string{"cancel", "echo", "nope"}, u...)...), exitFailure, "cannot be cancelled")
}
