package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
)

// deadLetter stores n entries of type typ and reason in the DLQ, as a
// worker would.
func deadLetter(t *testing.T, e *testEnv, typ string, reason dlq.Reason, ids ...string) {
	t.Helper()
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: bus.Topology{}, Worker: "w1"})
	for _, id := range ids {
		err := w.Write(t.Context(), &dlq.Entry{
			// The copy is deduplicated by the task's Nats-Msg-Id: give each one.
			ID: id, Type: typ, Subject: "tasks." + typ, Seq: 1,
			Header: nats.Header{"Task-Id": {id}, "Nats-Msg-Id": {id}}, Payload: []byte("data-" + id),
			Reason: reason, Err: errors.New("backend said 503"), Attempts: 2, Backends: []string{"svc"},
			History: []dlq.Record{{Delivery: 1, Backend: "svc", Class: "transient", Status: 503, Duration: "2ms"}},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestDLQList(t *testing.T) {
	e := startServer(t)
	deadLetter(t, e, "alpha", dlq.Exhausted, "a1", "a2")
	deadLetter(t, e, "beta", dlq.Poison, "b1")
	r := runCmd(t, "", "dlq", "list", "--nats-url", e.url)
	wantOK(t, r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "SEQ") || !strings.Contains(lines[1], "a1") ||
		!strings.Contains(lines[1], "exhausted") || !strings.Contains(lines[3], "poison") {
		t.Fatalf("table:\n%s", r.stdout)
	}
	if r.stderr != "3 entries\n" {
		t.Errorf("stderr %q", r.stderr)
	}

	r = runCmd(t, "", "dlq", "list", "--json", "--reason", "poison", "--nats-url", e.url)
	wantOK(t, r)
	var got dlqEntry
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("--json output %q: %v", r.stdout, err)
	}
	if got.ID != "b1" || got.Type != "beta" || got.Reason != "poison" || got.Data != "data-b1" || len(got.History) != 1 {
		t.Errorf("--json entry %+v", got)
	}
}

func TestDLQShow(t *testing.T) {
	e := startServer(t)
	deadLetter(t, e, "alpha", dlq.Exhausted, "a1")
	r := runCmd(t, "", "dlq", "show", "1", "--nats-url", e.url)
	wantOK(t, r)
	for _, want := range []string{"Task-Id:  a1", "Reason:   exhausted", "History:", "transient", "503", "Dlq-Reason: exhausted", "Payload:\ndata-a1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show output lacks %q:\n%s", want, r.stdout)
		}
	}
	wantFail(t, runCmd(t, "", "dlq", "show", "9", "--nats-url", e.url), 1, "no such DLQ entry")
	wantFail(t, runCmd(t, "", "dlq", "show", "x", "--nats-url", e.url), 2, "SEQ")
}

func TestDLQReplayAndPurge(t *testing.T) {
	e := startServer(t)
	deadLetter(t, e, "alpha", dlq.Exhausted, "a1", "a2")
	deadLetter(t, e, "beta", dlq.Poison, "b1")

	dry := runCmd(t, "", "dlq", "replay", "--type", "alpha", "--dry-run", "--nats-url", e.url)
	wantOK(t, dry)
	if !strings.Contains(dry.stdout, "would replay 1 (exhausted a1) to tasks.alpha as a1-r1") ||
		dry.stderr != "dry run: would replay 2 entries, changed nothing\n" {
		t.Fatalf("dry run: %q / %q", dry.stdout, dry.stderr)
	}
	if n := streamMsgs(t, e, "TASKS"); n != 0 {
		t.Fatalf("dry run published %d tasks", n)
	}

	r := runCmd(t, "", "dlq", "replay", "--reason", "exhausted", "--rate", "1000/s", "--nats-url", e.url)
	wantOK(t, r)
	if r.stderr != "replayed 2, skipped 0 (result already stored), failed 0\n" {
		t.Fatalf("summary %q", r.stderr)
	}
	// Replays run concurrently: whichever came last, its headers are right.
	m := lastTask(t, e, "TASKS", "tasks.alpha")
	if id := m.Header.Get("Task-Id"); (id != "a1" && id != "a2") || m.Header.Get("Nats-Msg-Id") != id+"-r1" || m.Header.Get("Dlq-Replays") != "1" {
		t.Errorf("replayed headers %v", m.Header)
	}
	if n := streamMsgs(t, e, "TASKS"); n != 2 {
		t.Errorf("TASKS holds %d, want 2", n)
	}

	r = runCmd(t, "", "dlq", "purge", "--nats-url", e.url)
	wantOK(t, r)
	if r.stderr != "purged 1, failed 0\n" || streamMsgs(t, e, "DLQ") != 0 {
		t.Fatalf("purge: %q, DLQ holds %d", r.stderr, streamMsgs(t, e, "DLQ"))
	}
}

func TestDLQUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"dlq", "list", "--reason", "bogus"},
		{"dlq", "list", "--since", "yesterday"},
		{"dlq", "replay", "--rate", "fast"},
		{"dlq", "list", "--seq", "0"},
		{"dlq", "list", "--limit", "-1"},
		{"dlq"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCmd(t, "", args...)
			if r.code != 2 || strings.Count(r.stderr, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want 2 and one line", r.code, r.stderr)
			}
		})
	}
}

// A replay of many entries at a rate.
func TestDLQReplayMany(t *testing.T) {
	e := startServer(t)
	ids := make([]string, 2000)
	for i := range ids {
		ids[i] = fmt.Sprintf("m%d", i)
	}
	deadLetter(t, e, "bulk", dlq.Exhausted, ids...)
	r := runCmd(t, "", "dlq", "replay", "--rate", "20000/s", "--nats-url", e.url)
	wantOK(t, r)
	if n := streamMsgs(t, e, "TASKS"); n != uint64(len(ids)) || streamMsgs(t, e, "DLQ") != 0 {
		t.Fatalf("TASKS %d, DLQ %d; want %d, 0 (%s)", n, streamMsgs(t, e, "DLQ"), len(ids), r.stderr)
	}
}

func streamMsgs(t *testing.T, e *testEnv, stream string) uint64 {
	t.Helper()
	s, err := e.js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
