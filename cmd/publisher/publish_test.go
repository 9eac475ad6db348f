package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/task"
	"github.com/breakwater/breakwater/tracing"
)

func TestPublishPayloadAndHeaders(t *testing.T) {
	e := startServer(t)
	file := filepath.Join(t.TempDir(), "payload.json")
	if err := os.WriteFile(file, []byte(`{"from":"file"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		give      []string
		stdin     string
		wantData  string
		wantHdr   map[string]string
		wantIDArg string // the id given with --id, else a generated one is checked
	}{
		{name: "literal", give: []string{"publish", "echo", `{"a":1}`, "--id", "lit-1"}, wantData: `{"a":1}`, wantIDArg: "lit-1"},
		{name: "at file", give: []string{"publish", "echo", "@" + file, "--id", "file-1"}, wantData: `{"from":"file"}`, wantIDArg: "file-1"},
		{name: "stdin", give: []string{"publish", "echo", "-", "--id", "stdin-1"}, stdin: "from stdin\n", wantData: "from stdin\n", wantIDArg: "stdin-1"},
		{name: "empty", give: []string{"publish", "echo", "--id", "empty-1"}, wantData: "", wantIDArg: "empty-1"},
		{name: "generated id", give: []string{"publish", "code.generate", "x"}, wantData: "x"},
		{
			name: "headers",
			give: []string{"publish", "echo", "h", "--id", "hdr-1",
				"--header", "Cache-Control=no-cache, no-store", "--header", "X-Eq=a=b", "--header", "X-Empty="},
			wantData:  "h",
			wantIDArg: "hdr-1",
			wantHdr:   map[string]string{"Cache-Control": "no-cache, no-store", "X-Eq": "a=b", "X-Empty": ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, tt.stdin, append(tt.give, "--nats-url", e.url)...)
			wantOK(t, r)
			id := strings.TrimSuffix(r.stdout, "\n")
			if strings.Contains(id, "\n") {
				t.Fatalf("stdout %q, want one line", r.stdout)
			}
			if tt.wantIDArg != "" && id != tt.wantIDArg {
				t.Errorf("printed id %q, want %q", id, tt.wantIDArg)
			}
			if err := task.ValidID(id); err != nil {
				t.Errorf("printed id: %v", err)
			}
			typ := tt.give[1]
			m := lastTask(t, e, "TASKS", bus.Topology{}.TaskSubject(typ))
			if got := string(m.Data); got != tt.wantData {
				t.Errorf("payload %q, want %q", got, tt.wantData)
			}
			for k, want := range map[string]string{task.HeaderID: id, task.HeaderMsgID: id} {
				if got := m.Header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			for k, want := range tt.wantHdr {
				if got := m.Header.Values(k); len(got) != 1 || got[0] != want {
					t.Errorf("header %s = %q, want [%q]", k, got, want)
				}
			}
			if got := m.Header.Get(task.HeaderReplyTo); got != "" {
				t.Errorf("header %s = %q without --wait, want none", task.HeaderReplyTo, got)
			}
		})
	}
}

func TestPublishDuplicate(t *testing.T) {
	e := startServer(t)
	args := []string{"--nats-url", e.url, "publish", "echo", "once", "--id", "dup-1"}
	wantOK(t, runCmd(t, "", args...))
	r := runCmd(t, "", args...)
	wantOK(t, r)
	if r.stdout != "dup-1\n" {
		t.Errorf("stdout %q, want %q", r.stdout, "dup-1\n")
	}
	if !strings.Contains(r.stderr, "already published") {
		t.Errorf("stderr %q, want a note about the duplicate", r.stderr)
	}
	info, err := e.js.Stream(t.Context(), "TASKS")
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("TASKS holds %d messages, want 1", n)
	}
}

func TestPublishWait(t *testing.T) {
	e := startServer(t)
	fakeWorker(t, e, bus.Topology{})
	tests := []struct {
		name       string
		give       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"ok", []string{"publish", "echo", `{"x":1}`, "--wait"}, 0, "{\"x\":1}\n", ""},
		{"ok keeps final newline", []string{"publish", "echo", "line\n", "--wait"}, 0, "line\n", ""},
		{"multi-token type", []string{"publish", "code.generate", "gen", "--wait", "--id", "gen-1"}, 0, "gen\n", ""},
		{"task failed", []string{"publish", "fail", "x", "--wait", "--id", "bad-1"}, 1, "",
			"publisher: task bad-1 failed: rejected: boom\n"},
		{"no result", []string{"publish", "silent", "x", "--wait", "--id", "quiet-1", "--timeout", "300ms"}, 1, "",
			"publisher: no result for task quiet-1 within 300ms\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, "", append([]string{"--nats-url", e.url}, tt.give...)...)
			if r.code != tt.wantCode || r.stdout != tt.wantStdout || r.stderr != tt.wantStderr {
				t.Errorf("got code %d, stdout %q, stderr %q; want %d, %q, %q",
					r.code, r.stdout, r.stderr, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

// A --wait publish of a task already done (a duplicate id) cannot get a
// reply: the result is found in RESULTS instead.
func TestPublishWaitDuplicate(t *testing.T) {
	e := startServer(t)
	fakeWorker(t, e, bus.Topology{})
	wantOK(t, runCmd(t, "", "--nats-url", e.url, "publish", "echo", "first", "--id", "again-1"))
	testkit.Eventually(t, 5*time.Second, "the first result", func() (bool, string) {
		return runCmd(t, "", "--nats-url", e.url, "result", "echo", "again-1").code == 0, ""
	})
	r := runCmd(t, "", "--nats-url", e.url, "publish", "echo", "second", "--id", "again-1", "--wait", "--timeout", "5s")
	wantOK(t, r)
	if r.stdout != "first\n" {
		t.Errorf("stdout %q, want the stored result %q", r.stdout, "first\n")
	}
}

func TestPublishNoStream(t *testing.T) {
	e := startServer(t)
	r := runCmd(t, "", "--nats-url", e.url, "--prefix", "other", "publish", "echo", "x", "--timeout", "2s")
	wantFail(t, r, exitFailure, "publish to other.tasks.echo")
}

// A task over the server's max_payload is refused with the limit and the
// task's size, which the client's bare "maximum payload exceeded" leaves
// out; the exact header count matches what the client measured.
func TestPublishTooLarge(t *testing.T) {
	e := startServer(t) // a default server: max_payload 1 MiB
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, "", "--nats-url", e.url, "publish", "echo", "@"+big, "--id", "big-1")
	wantFail(t, r, exitFailure, "publish to tasks.echo: task of 2.0 MiB (2097200 bytes: payload 2097152, headers 48)")
	for _, want := range []string{"over the server's max_payload of 1.0 MiB (1048576 bytes)",
		"a default nats-server allows 1 MiB, worker --embedded 8 MiB", "nats: maximum payload exceeded"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q, want %q", r.stderr, want)
		}
	}
	// Just under the limit, headers counted as the client counts them,
	// the task is stored.
	h := nats.Header{task.HeaderID: {"fits"}, task.HeaderMsgID: {"fits"}}
	fits := filepath.Join(t.TempDir(), "fits")
	if err := os.WriteFile(fits, bytes.Repeat([]byte("x"), int(e.nc.MaxPayload())-client.HeaderSize(h)), 0o600); err != nil {
		t.Fatal(err)
	}
	wantOK(t, runCmd(t, "", "--nats-url", e.url, "publish", "echo", "@"+fits, "--id", "fits"))
	if err := os.WriteFile(fits, bytes.Repeat([]byte("x"), int(e.nc.MaxPayload())-client.HeaderSize(h)+1), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, "", "--nats-url", e.url, "publish", "echo", "@"+fits, "--id", "fits")
	wantFail(t, r, exitFailure, "task of 1.0 MiB (1048577 bytes: payload 1048531, headers 46)")
}

func TestPublishMissingFile(t *testing.T) {
	e := startServer(t)
	r := runCmd(t, "", "--nats-url", e.url, "publish", "echo", "@"+filepath.Join(t.TempDir(), "none"))
	wantFail(t, r, exitFailure, "read payload")
}

func TestGlobalFlagPositions(t *testing.T) {
	topo := bus.Topology{Prefix: "acme"}
	e := startServer(t, bus.Topology{}, topo)
	tests := []struct {
		name    string
		give    []string
		env     map[string]string
		stream  string
		subject string
	}{
		{"before", []string{"--nats-url", e.url, "publish", "echo", "x", "--id", "pos-1"}, nil, "TASKS", "tasks.echo"},
		{"after", []string{"publish", "echo", "x", "--id", "pos-2", "--nats-url", e.url}, nil, "TASKS", "tasks.echo"},
		{"between", []string{"publish", "--nats-url=" + e.url, "echo", "x", "--id", "pos-3"}, nil, "TASKS", "tasks.echo"},
		{"env url", []string{"publish", "echo", "x", "--id", "pos-4"}, map[string]string{"NATS_URL": e.url}, "TASKS", "tasks.echo"},
		{"flag beats env", []string{"publish", "echo", "x", "--id", "pos-5", "--nats-url", e.url},
			map[string]string{"NATS_URL": unreachable}, "TASKS", "tasks.echo"},
		{"prefix flag", []string{"--prefix", "acme", "--nats-url", e.url, "publish", "echo", "x", "--id", "pos-6"}, nil, "acme_TASKS", "acme.tasks.echo"},
		{"prefix env", []string{"--nats-url", e.url, "publish", "echo", "x", "--id", "pos-7"},
			map[string]string{"BREAKWATER_PREFIX": "acme"}, "acme_TASKS", "acme.tasks.echo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NATS_URL", "")
			t.Setenv("BREAKWATER_PREFIX", "")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			r := runCmd(t, "", tt.give...)
			wantOK(t, r)
			id := strings.TrimSpace(r.stdout)
			if got := lastTask(t, e, tt.stream, tt.subject).Header.Get(task.HeaderID); got != id {
				t.Errorf("last task on %s has id %q, want %q", tt.subject, got, id)
			}
		})
	}
}

// With OTEL_TRACES_EXPORTER set, publish starts a trace: the stored task
// carries a W3C traceparent (lowercase key) for the worker to continue.
// Console spans go to stderr: stdout stays the task id alone.
func TestPublishStartsTrace(t *testing.T) {
	e := startServer(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	r := runCmd(t, "", "publish", "echo", "hi", "--id", "traced-1", "--nats-url", e.url)
	wantOK(t, r)
	m := lastTask(t, e, "TASKS", "tasks.echo")
	tp := m.Header.Get("traceparent")
	if len(tp) != 55 || tp[:3] != "00-" {
		t.Fatalf("traceparent %q in %v", tp, m.Header)
	}
	if r.stdout != "traced-1\n" {
		t.Errorf("stdout %q, want the id alone", r.stdout)
	}
	if traceID := tp[3:35]; !strings.Contains(r.stderr, traceID) || !strings.Contains(r.stderr, `"Name":"publish tasks.echo"`) {
		t.Errorf("stderr lacks the console span of trace %s: %q", traceID, r.stderr)
	}
}

// A bad OTEL_* value stops the command before it publishes anything.
func TestPublishBadTracingEnv(t *testing.T) {
	e := startServer(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
	r := runCmd(t, "", "publish", "echo", "hi", "--id", "never-1", "--nats-url", e.url)
	wantFail(t, r, exitFailure, `OTEL_TRACES_EXPORTER="zipkin"`)
	if n := streamMsgs(t, e, "TASKS"); n != 0 {
		t.Errorf("TASKS holds %d messages, want 0", n)
	}
}

// Without it, nothing is added.
func TestPublishUntracedByDefault(t *testing.T) {
	e := startServer(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	wantOK(t, runCmd(t, "", "publish", "echo", "hi", "--id", "plain-1", "--nats-url", e.url))
	if tp := lastTask(t, e, "TASKS", "tasks.echo").Header.Get("traceparent"); tp != "" {
		t.Fatalf("traceparent %q without tracing", tp)
	}
}

// runTraced runs the command like run, with tracing options of its own
// (an in-memory exporter), and returns the command's error.
func runTraced(t *testing.T, o tracing.TracingOptions, stdin string, args ...string) (result, error) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, traceOpts: o}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.ExecuteContext(t.Context())
	code := 0
	if err != nil {
		code = exitFailure
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}, err
}

// spanContextOf is the trace context a stored task carries.
func spanContextOf(h nats.Header) trace.SpanContext {
	prop := propagation.TraceContext{}
	return trace.SpanContextFromContext(tracing.Extract(context.Background(), prop, h))
}

// The publish span, seen through an in-memory exporter, is the one whose
// context the stored task carries.
func TestPublishSpanOnStoredTask(t *testing.T) {
	e := startServer(t)
	userTrace := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name       string
		give       []string
		wantParent string // span id of a given parent, else a root
	}{
		{name: "root", give: []string{"publish", "echo", "hi", "--id", "span-1"}},
		{name: "joins a given traceparent", give: []string{"publish", "echo", "hi", "--id", "span-2", "--header", "traceparent=" + userTrace},
			wantParent: "00f067aa0ba902b7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			r, err := runTraced(t, tracing.TracingOptions{Exporter: keep{exp}}, "", append(tt.give, "--nats-url", e.url)...)
			if err != nil {
				t.Fatalf("%v; stderr %q", err, r.stderr)
			}
			id := tt.give[4]
			stored := lastTask(t, e, "TASKS", "tasks.echo")
			if got := stored.Header.Get(task.HeaderID); got != id {
				t.Fatalf("last task %q, want %q", got, id)
			}
			if n := len(stored.Header.Values("traceparent")) + len(stored.Header.Values("Traceparent")); n != 1 {
				t.Errorf("stored task has %d traceparent headers, want 1: %v", n, stored.Header)
			}
			spans := exp.GetSpans()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			s := spans[0]
			if s.Name != "publish tasks.echo" || s.SpanKind != trace.SpanKindProducer {
				t.Errorf("span %q kind %s, want publish tasks.echo, producer", s.Name, s.SpanKind)
			}
			if got := spanContextOf(stored.Header); !got.Equal(s.SpanContext.WithRemote(true)) {
				t.Errorf("stored task's trace context %s/%s, want the publish span's %s/%s",
					got.TraceID(), got.SpanID(), s.SpanContext.TraceID(), s.SpanContext.SpanID())
			}
			if tt.wantParent != "" {
				if s.Parent.SpanID().String() != tt.wantParent || s.SpanContext.TraceID().String() != userTrace[3:35] {
					t.Errorf("span parent %s trace %s, want the given %s", s.Parent.SpanID(), s.SpanContext.TraceID(), userTrace)
				}
			} else if s.Parent.IsValid() {
				t.Errorf("span has parent %s, want a root", s.Parent.SpanID())
			}
			var msgID string
			for _, kv := range s.Attributes {
				if kv.Key == "messaging.message.id" {
					msgID = kv.Value.AsString()
				}
			}
			if msgID != id {
				t.Errorf("messaging.message.id %q, want %q", msgID, id)
			}
		})
	}
}

// With --wait the span covers the publish up to its ack, not the wait:
// it is exported before the result is printed.
func TestPublishWaitSpanEndsAtAck(t *testing.T) {
	e := startServer(t)
	fakeWorker(t, e, bus.Topology{})
	exp := tracetest.NewInMemoryExporter()
	r, err := runTraced(t, tracing.TracingOptions{Exporter: keep{exp}}, "", "publish", "echo", "hi", "--id", "w-1", "--wait", "--nats-url", e.url)
	if err != nil || r.stdout != "hi\n" {
		t.Fatalf("err %v, stdout %q; want the result", err, r.stdout)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	if spans[0].Status.Code != 0 {
		t.Errorf("span status %v, want unset", spans[0].Status)
	}
}

// A failed publish marks its span failed.
func TestPublishSpanFailed(t *testing.T) {
	e := startServer(t)
	exp := tracetest.NewInMemoryExporter()
	_, err := runTraced(t, tracing.TracingOptions{Exporter: keep{exp}}, "", "publish", "echo", "x", "--prefix", "other", "--timeout", "2s", "--nats-url", e.url)
	if err == nil {
		t.Fatal("publish without a stream succeeded")
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Status.Code != codes.Error {
		t.Fatalf("spans %v, want one with an error status", spans)
	}
}

// keep keeps the spans of an in-memory exporter past the command's end,
// which shuts tracing down (and the exporter's Shutdown forgets them).
type keep struct{ *tracetest.InMemoryExporter }

func (keep) Shutdown(context.Context) error { return nil }
