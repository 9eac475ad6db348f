package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/task"
	"github.com/breakwater/breakwater/tracing"
)

func TestPublishFile(t *testing.T) {
	e := startServer(t)
	input := strings.Join([]string{
		`{"type":"echo","data":"plain text","id":"b-1"}`,
		`{"type":"echo","data":{"k":[1,2]},"id":"b-2","headers":{"X-A":"1"}}`,
		``,
		`not json`,
		`{"data":"no type"}`,
		`{"type":"echo","id":"bad id"}`,
		`{"type":"echo","id":"b-1"}`,
		`{"type":"echo","hedaers":{}}`,
		`{"type":"code.generate","data":42}`,
		`{"type":"echo","headers":{"Task-Id":"x"}}`,
		`{"type":"echo","id":"b-3"} {"type":"echo"}`,
		`{"type":"echo","data":null,"id":"b-4"}`,
	}, "\n") // no final newline: the last line still counts
	path := filepath.Join(t.TempDir(), "tasks.jsonl")
	if err := os.WriteFile(path, []byte(input), 0o600); err != nil {
		t.Fatal(err)
	}

	r := runCmd(t, "", "--nats-url", e.url, "publish", "--file", path, "--header", "X-Batch=yes")
	if r.code != exitFailure {
		t.Fatalf("exit code %d, want %d; stderr %q", r.code, exitFailure, r.stderr)
	}
	if want := "published 11 tasks (stored 4, duplicates 1, failed 6)\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	for _, want := range []string{
		"publisher: line 4: invalid JSON",
		`publisher: line 5: missing "type"`,
		`publisher: line 6: task id "bad id"`,
		`publisher: line 8: invalid JSON: json: unknown field "hedaers"`,
		"publisher: line 10: header Task-Id is set by the publisher",
		"publisher: line 11: invalid JSON: more than one value",
		"publisher: 6 of 11 tasks failed\n",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q, want it to contain %q", r.stderr, want)
		}
	}
	if n := strings.Count(r.stderr, "\n"); n != 7 {
		t.Errorf("stderr has %d lines, want 7 (6 bad lines and the summary)", n)
	}

	tests := []struct {
		subject, id, data string
		hdr               nats.Header
	}{
		{"tasks.echo", "b-4", "", nats.Header{"X-Batch": {"yes"}}},
		{"tasks.code.generate", "", "42", nats.Header{"X-Batch": {"yes"}}},
	}
	for _, tt := range tests {
		m := lastTask(t, e, "TASKS", tt.subject)
		if tt.id != "" && m.Header.Get(task.HeaderID) != tt.id {
			t.Errorf("%s: id %q, want %q", tt.subject, m.Header.Get(task.HeaderID), tt.id)
		}
		if string(m.Data) != tt.data {
			t.Errorf("%s: payload %q, want %q", tt.subject, m.Data, tt.data)
		}
		for k, v := range tt.hdr {
			if got := m.Header.Values(k); len(got) != 1 || got[0] != v[0] {
				t.Errorf("%s: header %s = %q, want %q", tt.subject, k, got, v)
			}
		}
	}
	s, err := e.js.Stream(t.Context(), "TASKS")
	if err != nil {
		t.Fatal(err)
	}
	for seq, want := range map[uint64]string{1: "plain text", 2: `{"k":[1,2]}`} {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data) != want {
			t.Errorf("seq %d: payload %q, want %q", seq, m.Data, want)
		}
	}
}

func TestPublishFileStdinAllGood(t *testing.T) {
	e := startServer(t)
	var b strings.Builder
	for i := range 50 {
		fmt.Fprintf(&b, `{"type":"echo","data":"task %d","id":"s-%d"}`+"\n", i, i)
	}
	r := runCmd(t, b.String(), "--nats-url", e.url, "publish", "--file", "-")
	wantOK(t, r)
	if want := "published 50 tasks (stored 50, duplicates 0, failed 0)\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	if r.stderr != "" {
		t.Errorf("stderr %q, want nothing", r.stderr)
	}
}

// TestPublishFileLarge publishes more tasks than the async window holds,
// so the backpressure path runs; it also shows the pace.
func TestPublishFileLarge(t *testing.T) {
	n := 20_000
	if testing.Short() {
		n = 10_000
	}
	e := startServer(t)
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"type":"bulk","data":{"i":%d}}`+"\n", i)
	}
	start := time.Now()
	r := runCmd(t, b.String(), "--nats-url", e.url, "publish", "--file", "-")
	took := time.Since(start)
	wantOK(t, r)
	if want := fmt.Sprintf("published %d tasks (stored %d, duplicates 0, failed 0)\n", n, n); r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	t.Logf("%d tasks in %s (%.0f tasks/s)", n, took, float64(n)/took.Seconds())
	s, err := e.js.Stream(t.Context(), bus.Topology{}.TasksStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().State.Msgs; got != uint64(n) {
		t.Errorf("TASKS holds %d messages, want %d", got, n)
	}
}

// publish --file gives every task its own publish span, ended at its ack,
// whose context the stored task carries; a traceparent in a line's headers
// is that span's parent.
func TestPublishFileTraced(t *testing.T) {
	e := startServer(t)
	const given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	input := strings.Join([]string{
		`{"type":"echo","data":"a","id":"ft-1"}`,
		`{"type":"echo","data":"b","id":"ft-2","headers":{"traceparent":"` + given + `"}}`,
		`{"type":"code.generate","data":"c","id":"ft-3"}`,
		`not json`,
	}, "\n")
	exp := tracetest.NewInMemoryExporter()
	r, _ := runTraced(t, tracing.TracingOptions{Exporter: keep{exp}}, input, "publish", "--file", "-", "--nats-url", e.url)
	if !strings.HasPrefix(r.stdout, "published 4 tasks (stored 3,") {
		t.Fatalf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
	spans := map[string]tracetest.SpanStub{} // by message id
	for _, s := range exp.GetSpans() {
		for _, kv := range s.Attributes {
			if kv.Key == "messaging.message.id" {
				spans[kv.Value.AsString()] = s
			}
		}
	}
	if len(spans) != 3 {
		t.Fatalf("spans for %d tasks, want 3 (the bad line has none)", len(spans))
	}
	s, err := e.js.Stream(t.Context(), "TASKS")
	if err != nil {
		t.Fatal(err)
	}
	traces := map[string]bool{}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get(task.HeaderID)
		span, ok := spans[id]
		if !ok {
			t.Fatalf("no span for task %s", id)
		}
		if got := spanContextOf(m.Header); !got.Equal(span.SpanContext.WithRemote(true)) {
			t.Errorf("task %s carries %s/%s, want its span's %s/%s", id, got.TraceID(), got.SpanID(),
				span.SpanContext.TraceID(), span.SpanContext.SpanID())
		}
		if want := "publish " + m.Subject; span.Name != want {
			t.Errorf("task %s span %q, want %q", id, span.Name, want)
		}
		traces[span.SpanContext.TraceID().String()] = true
	}
	if len(traces) != 3 {
		t.Errorf("%d distinct traces for 3 tasks, want 3", len(traces))
	}
	if p := spans["ft-2"].Parent; p.SpanID().String() != "00f067aa0ba902b7" || p.TraceID().String() != given[3:35] {
		t.Errorf("ft-2's span parent %s/%s, want the given traceparent", p.TraceID(), p.SpanID())
	}
}
