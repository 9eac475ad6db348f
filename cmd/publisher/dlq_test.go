package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/sync/errgroup"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/tracing"
)

// deadLetter stores n entries of type typ and reason in the DLQ, as a
// worker would.
func deadLetter(t *testing.T, e *testEnv, typ string, reason dlq.Reason, ids ...string) {
	t.Helper()
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: bus.Topology{}, Worker: "w1"})
	for _, id := range ids {
		e.fakeSeq++
		err := w.Write(t.Context(), &dlq.Entry{
			// The copy is deduplicated by the task's TASKS sequence: give each its own.
			ID: id, Type: typ, Subject: "tasks." + typ, Seq: 1000 + e.fakeSeq,
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

// A replay of 10,000 entries at a high rate: every task back, DLQ empty.
func TestDLQReplayMany(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 entries")
	}
	const n = 10_000
	e := startServer(t)
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: bus.Topology{}, Worker: "w1"})
	var g errgroup.Group
	g.SetLimit(32)
	for k := range n {
		g.Go(func() error {
			id := fmt.Sprint("m", k)
			return w.Write(t.Context(), &dlq.Entry{ID: id, Type: "bulk", Subject: "tasks.bulk", Seq: uint64(k + 1),
				Header: nats.Header{"Task-Id": {id}}, Payload: []byte(id), Reason: dlq.Exhausted})
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, "", "dlq", "replay", "--rate", "20000/s", "--nats-url", e.url)
	wantOK(t, r)
	if r.stderr != "replayed 10000, skipped 0 (result already stored), failed 0\n" {
		t.Errorf("summary %q", r.stderr)
	}
	if got := streamMsgs(t, e, "TASKS"); got != n || streamMsgs(t, e, "DLQ") != 0 {
		t.Fatalf("TASKS %d, DLQ %d; want %d, 0", got, streamMsgs(t, e, "DLQ"), n)
	}
}

// Every filter flag, through list --json.
func TestDLQFilterFlags(t *testing.T) {
	e := startServer(t)
	deadLetter(t, e, "alpha", dlq.Exhausted, "a1", "a2") // seqs 1, 2
	deadLetter(t, e, "beta", dlq.Poison, "b1")           // seq 3
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: bus.Topology{}})
	if err := w.Write(t.Context(), &dlq.Entry{ID: "c1", Type: "code.gen", Subject: "tasks.code.gen", Seq: 9,
		Header: nats.Header{"Task-Id": {"c1"}}, Reason: dlq.Rejected, Backends: []string{"gpu", "cpu"}}); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		give []string
		want string
	}{
		{nil, "a1 a2 b1 c1"},
		{[]string{"--type", "alpha"}, "a1 a2"},
		{[]string{"--type", "beta,code.gen"}, "b1 c1"},
		{[]string{"--reason", "poison", "--reason", "rejected"}, "b1 c1"},
		{[]string{"--backend", "cpu"}, "c1"},
		{[]string{"--backend", "svc"}, "a1 a2 b1"},
		{[]string{"--seq", "1,3"}, "a1 b1"},
		{[]string{"--seq", "2", "--seq", "4"}, "a2 c1"},
		{[]string{"--limit", "2"}, "a1 a2"},
		{[]string{"--since", "1h"}, "a1 a2 b1 c1"},
		{[]string{"--since", future}, ""},
		{[]string{"--until", "1h"}, ""},
		{[]string{"--until", future, "--type", "alpha", "--reason", "exhausted", "--limit", "1"}, "a1"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.give, " "), func(t *testing.T) {
			r := runCmd(t, "", append([]string{"dlq", "list", "--json", "--nats-url", e.url}, tt.give...)...)
			wantOK(t, r)
			var got []string
			for line := range strings.Lines(r.stdout) {
				var en dlqEntry
				if err := json.Unmarshal([]byte(line), &en); err != nil {
					t.Fatalf("line %q: %v", line, err)
				}
				got = append(got, en.ID)
			}
			if strings.Join(got, " ") != tt.want {
				t.Fatalf("got %v, want %s", got, tt.want)
			}
		})
	}
}

func TestDLQPurgeDryRun(t *testing.T) {
	e := startServer(t)
	deadLetter(t, e, "alpha", dlq.Exhausted, "a1", "a2")
	r := runCmd(t, "", "dlq", "purge", "--dry-run", "--nats-url", e.url)
	wantOK(t, r)
	if r.stdout != "would purge 1 (exhausted a1)\nwould purge 2 (exhausted a2)\n" ||
		r.stderr != "dry run: would purge 2 entries, changed nothing\n" {
		t.Fatalf("dry purge: %q / %q", r.stdout, r.stderr)
	}
	if n := streamMsgs(t, e, "DLQ"); n != 2 {
		t.Fatalf("dry run left %d entries, want 2", n)
	}
}

// A task whose result is already stored is skipped, in the dry run and
// in the replay, and its entry removed by the replay only.
func TestDLQReplaySkipsStoredResult(t *testing.T) {
	e := startServer(t)
	deadLetter(t, e, "alpha", dlq.Exhausted, "a1", "a2")
	if _, err := e.js.Publish(t.Context(), "results.alpha.a2", []byte("done")); err != nil {
		t.Fatal(err)
	}
	dry := runCmd(t, "", "dlq", "replay", "--dry-run", "--nats-url", e.url)
	wantOK(t, dry)
	if !strings.Contains(dry.stdout, "would skip 2 (exhausted a2): result already stored") ||
		dry.stderr != "dry run: would replay 1 entries and skip 1 (result already stored), changed nothing\n" {
		t.Fatalf("dry run: %q / %q", dry.stdout, dry.stderr)
	}
	r := runCmd(t, "", "dlq", "replay", "--nats-url", e.url)
	wantOK(t, r)
	if r.stderr != "replayed 1, skipped 1 (result already stored), failed 0\n" {
		t.Fatalf("summary %q", r.stderr)
	}
	if tasks, left := streamMsgs(t, e, "TASKS"), streamMsgs(t, e, "DLQ"); tasks != 1 || left != 0 {
		t.Fatalf("TASKS %d, DLQ %d; want 1, 0", tasks, left)
	}
}

func streamMsgs(t *testing.T, e *testEnv, stream string) uint64 { return testkit.Msgs(t, e.js, stream) }

// With tracing on, a replay is one span linked to the failed task's trace,
// and console spans stay off standard output.
func TestDLQReplayTraced(t *testing.T) {
	e := startServer(t)
	const failed = "4bf92f3577b34da6a3ce929d0e0e4736"
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: bus.Topology{}})
	if err := w.Write(t.Context(), &dlq.Entry{ID: "tr", Type: "alpha", Subject: "tasks.alpha", Seq: 1, Reason: dlq.Exhausted,
		Header: nats.Header{"Task-Id": {"tr"}, "traceparent": {"00-" + failed + "-00f067aa0ba902b7-01"}}}); err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	r, err := runTraced(t, tracing.TracingOptions{Exporter: keep{exp}}, "", "dlq", "replay", "--nats-url", e.url)
	if err != nil {
		t.Fatalf("replay: %v (%s)", err, r.stderr)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || len(spans[0].Links) != 1 || spans[0].Links[0].SpanContext.TraceID().String() != failed {
		t.Fatalf("spans %+v: want one replay span linked to the failed trace", spans)
	}

	deadLetter(t, e, "alpha", dlq.Exhausted, "c1")
	r, err = runTraced(t, tracing.TracingOptions{Getenv: func(k string) string {
		if k == "OTEL_TRACES_EXPORTER" {
			return "console"
		}
		return ""
	}}, "", "dlq", "replay", "--nats-url", e.url)
	if err != nil || r.stdout != "" || !strings.Contains(r.stderr, `"Name":"dlq replay tasks.alpha"`) || !strings.HasPrefix(r.stderr, "replayed 1, skipped 0 (result already stored), failed 0\n") {
		t.Fatalf("replay with console spans: %v, stdout %q, stderr %q; want spans on stderr only", err, r.stdout, r.stderr)
	}
}

// dlq show ends the payload with a newline when it has none, so that the
// next line (the shell prompt, the next command's output) starts clean,
// and adds none when it has one.
func TestDLQShowEndsPayloadLine(t *testing.T) {
	e := startServer(t)
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: bus.Topology{}, Worker: "w1"})
	tests := []struct {
		payload, wantEnd string
	}{
		{"boom1", "\nPayload:\nboom1\n"},
		{"two\nlines\n", "\nPayload:\ntwo\nlines\n"},
		{"", "\nPayload:\n\n"},
	}
	for k, tc := range tests {
		id := fmt.Sprint("p", k)
		if err := w.Write(t.Context(), &dlq.Entry{ID: id, Type: "alpha", Subject: "tasks.alpha", Seq: uint64(k + 1),
			Header: nats.Header{"Task-Id": {id}, "Nats-Msg-Id": {id}}, Payload: []byte(tc.payload), Reason: dlq.Exhausted}); err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprintf("%q", tc.payload), func(t *testing.T) {
			r := runCmd(t, "", "dlq", "show", fmt.Sprint(k+1), "--nats-url", e.url)
			wantOK(t, r)
			if !strings.HasSuffix(r.stdout, tc.wantEnd) {
				t.Fatalf("show ends %q, want it to end %q", r.stdout[max(0, len(r.stdout)-40):], tc.wantEnd)
			}
		})
	}
}

// An expired entry is replayed without its Task-Deadline, and both the
// dry run and the summary say so.
func TestDLQReplayExpired(t *testing.T) {
	e := startServer(t)
	w := dlq.NewWriter(e.js, dlq.WriterOptions{Topology: bus.Topology{}, Worker: "w1"})
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	if err := w.Write(t.Context(), &dlq.Entry{ID: "late", Type: "alpha", Subject: "tasks.alpha", Seq: 1,
		Header: nats.Header{"Task-Id": {"late"}, "Task-Deadline": {past}}, Reason: dlq.Expired}); err != nil {
		t.Fatal(err)
	}
	deadLetter(t, e, "alpha", dlq.Exhausted, "a1")

	dry := runCmd(t, "", "dlq", "replay", "--dry-run", "--nats-url", e.url)
	wantOK(t, dry)
	if dry.stdout != "would replay 1 (expired late) to tasks.alpha as late-r1, without its Task-Deadline\n"+
		"would replay 2 (exhausted a1) to tasks.alpha as a1-r1\n" ||
		dry.stderr != "dry run: would replay 2 entries (1 expired, without their Task-Deadline), changed nothing\n" {
		t.Fatalf("dry run: %q / %q", dry.stdout, dry.stderr)
	}
	r := runCmd(t, "", "dlq", "replay", "--nats-url", e.url)
	wantOK(t, r)
	if r.stderr != "replayed 2 (1 expired, without their Task-Deadline), skipped 0 (result already stored), failed 0\n" {
		t.Fatalf("summary %q", r.stderr)
	}
	tasks, err := e.js.Stream(t.Context(), "TASKS")
	if err != nil {
		t.Fatal(err)
	}
	// Replays run concurrently: find the expired one by its id.
	found := false
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := tasks.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get("Task-Id") != "late" {
			continue
		}
		found = true
		if got := m.Header.Get("Task-Deadline"); got != "" {
			t.Errorf("replayed expired task has Task-Deadline %q, want none", got)
		}
	}
	if !found {
		t.Fatal("the expired task is not in TASKS")
	}
}
