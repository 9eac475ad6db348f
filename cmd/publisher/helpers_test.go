package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/task"
)

// testEnv is a real embedded server with the contract's streams and a
// client connection for the test's own checks.
type testEnv struct {
	url string
	nc  *nats.Conn
	js  jetstream.JetStream
	// fakeSeq numbers the TASKS sequences of entries made by deadLetter.
	fakeSeq uint64
}

// startServer starts a JetStream server for one test and creates the
// streams of topo (the default topology when none is given).
func startServer(t *testing.T, topos ...bus.Topology) *testEnv {
	t.Helper()
	s := testkit.StartServer(t)
	nc, js := s.JetStream(t)
	if len(topos) == 0 {
		topos = []bus.Topology{{}}
	}
	for _, topo := range topos {
		if err := bus.EnsureStreams(t.Context(), js, topo); err != nil {
			t.Fatal(err)
		}
	}
	return &testEnv{url: s.URL(), nc: nc, js: js}
}

// result is what one run of the command produced.
type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs the command in-process with stdin and captured output.
func runCmd(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(t.Context(), args, strings.NewReader(stdin), &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// wantOK fails the test unless r exited 0.
func wantOK(t *testing.T, r result) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit code %d, want 0; stderr: %q", r.code, r.stderr)
	}
}

// wantFail checks the exit code and that stderr is one line containing
// want.
func wantFail(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d; stdout %q, stderr %q", r.code, code, r.stdout, r.stderr)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "publisher: ") {
		t.Errorf("stderr %q, want one line starting with \"publisher: \"", r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q, want it to contain %q", r.stderr, want)
	}
}

// fakeWorker stands in for the worker: it answers every task of type
// "fail" with an error reply (and terminates it), acknowledges every task
// of type "silent" without a result, and echoes every other task to
// results.<type>.<id> and its Task-Reply-To.
func fakeWorker(t *testing.T, e *testEnv, topo bus.Topology) {
	t.Helper()
	ctx := t.Context()
	cons, err := e.js.CreateOrUpdateConsumer(ctx, topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: "fake", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: topo.TasksFilter(),
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		typ, _ := topo.TaskType(m.Subject())
		id := m.Headers().Get(task.HeaderID)
		replyTo := m.Headers().Get(task.HeaderReplyTo)
		switch typ {
		case "fail":
			if replyTo != "" {
				_ = e.nc.PublishMsg(&nats.Msg{Subject: replyTo, Header: nats.Header{
					task.HeaderID: {id}, task.HeaderType: {typ}, task.HeaderStatus: {task.StatusError},
					task.HeaderDLQReason: {"rejected"}, task.HeaderDLQError: {"boom"},
				}})
			}
			_ = m.Term()
			return
		case "silent":
			_ = m.Ack()
			return
		}
		h := nats.Header{
			task.HeaderID: {id}, task.HeaderType: {typ}, task.HeaderStatus: {task.StatusOK},
			task.HeaderBackend: {"fake"}, task.HeaderAttempts: {"1"}, task.HeaderCache: {task.CacheMiss},
			task.HeaderDuration: {"1ms"},
		}
		if _, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: topo.ResultSubject(typ, id), Header: h, Data: m.Data()}); err != nil {
			_ = m.Nak()
			return
		}
		if replyTo != "" {
			_ = e.nc.PublishMsg(&nats.Msg{Subject: replyTo, Header: h, Data: m.Data()})
		}
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

// storeResult stores a result as the worker would.
func storeResult(t *testing.T, e *testEnv, typ, id, body string) {
	t.Helper()
	_, err := e.js.PublishMsg(t.Context(), &nats.Msg{
		Subject: bus.Topology{}.ResultSubject(typ, id),
		Header: nats.Header{
			task.HeaderID: {id}, task.HeaderType: {typ}, task.HeaderStatus: {task.StatusOK},
			task.HeaderBackend: {"fake"}, task.HeaderDuration: {"2ms"},
		},
		Data: []byte(body),
	})
	if err != nil {
		t.Fatal(err)
	}
}

// lastTask returns the stored task on subject.
func lastTask(t *testing.T, e *testEnv, stream, subject string) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := e.js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(t.Context(), subject)
	if err != nil {
		t.Fatalf("get last message on %s: %v", subject, err)
	}
	return m
}

// runAsync starts the command in the background with its own context;
// stop cancels it (like SIGINT) and returns the exit code.
func runAsync(t *testing.T, args ...string) (stdout, stderr *testkit.Buffer, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	stdout, stderr = &testkit.Buffer{}, &testkit.Buffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, strings.NewReader(""), stdout, stderr) }()
	var once sync.Once
	code := -1
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(10 * time.Second):
				t.Error("command did not stop within 10s of its context's end")
			}
		})
		return code
	}
	t.Cleanup(func() { stop() })
	return stdout, stderr, stop
}
