package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
)

// resultTimeout bounds the wait for a single task's result.
const resultTimeout = 20 * time.Second

// TestBuiltinRoutes runs a worker without a config file, which serves the
// built-in handlers on routes of their own names, and talks to it with the
// publisher and with plain nats.go.
func TestBuiltinRoutes(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	startWorker(t, s, "--id", "e2e-builtin")
	c := connect(t, s)
	url := "--nats-url=" + s.URL()

	t.Run("publish --wait prints the result", func(t *testing.T) {
		r := runPublisher(t, nil, url, "publish", "echo", "hello", "--wait")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "hello" {
			t.Errorf("publish echo hello --wait: exit %d, stdout %q; want exit 0, stdout \"hello\"", r.code, r.stdout)
		}
		r = runPublisher(t, nil, "publish", "upper", "shout", "--wait", url)
		if r.code != 0 || strings.TrimSpace(r.stdout) != "SHOUT" {
			t.Errorf("publish upper shout --wait: exit %d, stdout %q; want exit 0, stdout \"SHOUT\"", r.code, r.stdout)
		}
	})

	t.Run("publish --id then result", func(t *testing.T) {
		r := runPublisher(t, nil, url, "publish", "echo", "hi", "--id", "t1")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "t1" {
			t.Fatalf("publish echo hi --id t1: exit %d, stdout %q; want exit 0, stdout \"t1\"", r.code, r.stdout)
		}
		c.lastMsg("RESULTS", "results.echo.t1", resultTimeout)
		r = runPublisher(t, nil, url, "result", "echo", "t1")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "hi" {
			t.Errorf("result echo t1: exit %d, stdout %q; want exit 0, stdout \"hi\"", r.code, r.stdout)
		}
	})

	t.Run("publish --wait of a failing task exits non-zero", func(t *testing.T) {
		r := runPublisher(t, nil, url, "publish", "fail", "x", "--wait", "--timeout", "15s")
		if r.code == 0 {
			t.Errorf("publish fail x --wait: exit 0, want non-zero")
		}
	})

	t.Run("raw JetStream publish stores a result with headers", func(t *testing.T) {
		ack := c.publishTask("echo", "raw-1", []byte(`{"n":1}`))
		if ack.Duplicate {
			t.Fatalf("first publish of raw-1 is a duplicate")
		}
		msg := c.lastMsg("RESULTS", "results.echo.raw-1", resultTimeout)
		if string(msg.Data) != `{"n":1}` {
			t.Errorf("result body %q, want %q", msg.Data, `{"n":1}`)
		}
		h := msg.Header
		wantHeader(t, h, "Task-Id", "raw-1")
		wantHeader(t, h, "Task-Type", "echo")
		wantHeader(t, h, "Task-Status", "ok")
		if h.Get("Task-Backend") == "" {
			t.Errorf("Task-Backend is empty (headers %v)", h)
		}
		if n, err := strconv.Atoi(h.Get("Task-Attempts")); err != nil || n < 1 {
			t.Errorf("Task-Attempts = %q, want an integer >= 1", h.Get("Task-Attempts"))
		}
		if v := h.Get("Task-Cache"); v != "hit" && v != "miss" {
			t.Errorf("Task-Cache = %q, want hit or miss", v)
		}
		if d, err := time.ParseDuration(h.Get("Task-Duration")); err != nil || d < 0 {
			t.Errorf("Task-Duration = %q, want a Go duration >= 0 (err %v)", h.Get("Task-Duration"), err)
		}

		// The same Nats-Msg-Id inside the window is dropped by JetStream.
		if ack := c.publishTask("echo", "raw-1", []byte(`{"n":2}`)); !ack.Duplicate {
			t.Errorf("second publish of raw-1: Duplicate = false, want true")
		}
	})

	t.Run("Task-Id header wins over Nats-Msg-Id", func(t *testing.T) {
		c.publishTask("echo", "msgid-2", []byte("x"), "Task-Id", "taskid-2")
		msg := c.lastMsg("RESULTS", "results.echo.taskid-2", resultTimeout)
		wantHeader(t, msg.Header, "Task-Id", "taskid-2")
	})

	t.Run("Task-Reply-To receives the result", func(t *testing.T) {
		inbox := c.nc.NewInbox()
		sub, err := c.nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		c.publishTask("echo", "reply-1", []byte("pong"), "Task-Reply-To", inbox)
		msg, err := sub.NextMsg(resultTimeout)
		if err != nil {
			t.Fatalf("reply on %s: %v", inbox, err)
		}
		if string(msg.Data) != "pong" {
			t.Errorf("reply body %q, want %q", msg.Data, "pong")
		}
		wantHeader(t, msg.Header, "Task-Status", "ok")
		wantHeader(t, msg.Header, "Task-Id", "reply-1")
	})

	t.Run("a rejected task goes to the DLQ and the reply-to gets an error", func(t *testing.T) {
		inbox := c.nc.NewInbox()
		sub, err := c.nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		c.publishTask("fail", "rej-1", []byte("payload"), "Task-Reply-To", inbox, "X-Custom", "kept")
		msg, err := sub.NextMsg(resultTimeout)
		if err != nil {
			t.Fatalf("reply on %s: %v", inbox, err)
		}
		wantHeader(t, msg.Header, "Task-Status", "error")
		wantHeader(t, msg.Header, "Dlq-Reason", "rejected")

		d := c.lastMsg("DLQ", "dlq.fail", resultTimeout)
		if string(d.Data) != "payload" {
			t.Errorf("DLQ body %q, want the original %q", d.Data, "payload")
		}
		wantHeader(t, d.Header, "Dlq-Reason", "rejected")
		wantHeader(t, d.Header, "Dlq-Original-Subject", "tasks.fail")
		wantHeader(t, d.Header, "X-Custom", "kept")
		wantHeader(t, d.Header, "Dlq-Worker", "e2e-builtin")
		if d.Header.Get("Dlq-Error") == "" {
			t.Errorf("Dlq-Error is empty (headers %v)", d.Header)
		}
		if _, err := time.Parse(time.RFC3339, d.Header.Get("Dlq-Failed-At")); err != nil {
			t.Errorf("Dlq-Failed-At = %q, want RFC 3339: %v", d.Header.Get("Dlq-Failed-At"), err)
		}
		c.noMsg("RESULTS", "results.fail.rej-1")
	})

	t.Run("a task without a route goes to the DLQ as no_route", func(t *testing.T) {
		c.publishTask("nosuch.kind", "nr-1", []byte("?"))
		d := c.lastMsg("DLQ", "dlq.nosuch.kind", resultTimeout)
		wantHeader(t, d.Header, "Dlq-Reason", "no_route")
		wantHeader(t, d.Header, "Dlq-Original-Subject", "tasks.nosuch.kind")
		c.noMsg("RESULTS", "results.nosuch.kind.nr-1")
	})

	t.Run("a task id that is not a subject token is poison", func(t *testing.T) {
		c.publishTask("echo", "poison-1", []byte("bad id"), "Task-Id", "has.dots*and>wildcards")
		testkit.Eventually(t, resultTimeout, "a poison entry in dlq.echo", func() (bool, string) {
			d, err := c.subjects("DLQ", "dlq.echo")
			if err != nil {
				return false, err.Error()
			}
			return d["dlq.echo"] > 0, "none yet"
		})
		d := c.lastMsg("DLQ", "dlq.echo", resultTimeout)
		wantHeader(t, d.Header, "Dlq-Reason", "poison")
	})

	t.Run("streams", func(t *testing.T) {
		for _, name := range []string{"TASKS", "RESULTS", "DLQ", "HEALTH"} {
			if _, err := c.streamInfo(name, ""); err != nil {
				t.Errorf("stream %s: %v", name, err)
			}
		}
	})
}

// TestMultiTokenType routes a type of several tokens to a named backend of
// a config file.
func TestMultiTokenType(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", `backends:
  echoer:
    builtin: echo
routes:
  code.generate: {backends: [echoer]}
`)
	startWorker(t, s, "--config", cfg)
	c := connect(t, s)

	c.publishTask("code.generate", "cg-1", []byte("func main() {}"))
	msg := c.lastMsg("RESULTS", "results.code.generate.cg-1", resultTimeout)
	if string(msg.Data) != "func main() {}" {
		t.Errorf("result body %q, want %q", msg.Data, "func main() {}")
	}
	wantHeader(t, msg.Header, "Task-Type", "code.generate")
	wantHeader(t, msg.Header, "Task-Backend", "echoer")
	wantHeader(t, msg.Header, "Task-Status", "ok")

	// The publisher reads it back by type and id.
	r := runPublisher(t, nil, "--nats-url", s.URL(), "result", "code.generate", "cg-1")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "func main() {}" {
		t.Errorf("result code.generate cg-1: exit %d, stdout %q; want exit 0 and the body", r.code, r.stdout)
	}
}
