package e2e

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
)

func itoa[T ~int | ~uint64](n T) string { return strconv.FormatUint(uint64(n), 10) }

// Issue 13's stranded tasks, end to end: each ends in the DLQ (or
// RESULTS), recoverable, never left in TASKS with nobody to deliver it.

// A task near the server's max_payload whose answer does not fit: the
// result cannot be stored (invalid_result), and the DLQ copy, which does
// not fit either with its headers, is made to fit (its payload in the
// payloads bucket): dlq show and replay still give the payload back.
func TestNearMaxPayloadTaskDeadLettered(t *testing.T) {
	s := startNATSWith(t, func(string) string { return "max_payload: 65536\n" }, nil)
	startWorker(t, s)
	c := connect(t, s)
	payload := bytes.Repeat([]byte("p"), 65536-60) // fits as a task, not with the result's or the DLQ's headers
	c.publishTask("echo", "big1", payload)
	m := c.lastMsg("DLQ", "dlq.echo", 30*time.Second)
	wantHeader(t, m.Header, "Dlq-Reason", "invalid_result")
	if m.Header.Get("Dlq-Payload-Object") == "" {
		t.Fatalf("DLQ entry without its payload object: %v", m.Header)
	}
	testkit.Eventually(t, 15*time.Second, "the task out of TASKS", func() (bool, string) {
		n := c.msgs("TASKS")
		return n == 0, "TASKS holds " + itoa(n)
	})
	r := runPublisher(t, nil, "--nats-url", s.URL(), "dlq", "show", itoa(m.Sequence))
	if r.code != 0 || !strings.Contains(r.stdout, string(payload[:1000])) {
		t.Fatalf("dlq show: exit %d, payload missing from output (%d bytes); stderr %s", r.code, len(r.stdout), r.stderr)
	}
}

// A dead-letter that fails on the worker's last delivery (the DLQ stream
// gone) is tried again on a later delivery, not abandoned: once the DLQ
// is back the task is there.
func TestDeadLetterFailingOnLastDelivery(t *testing.T) {
	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", "worker: {max_deliver: 1}\nroutes:\n  unavailable: {backends: [\"builtin:unavailable\"]}\n")
	w := startWorker(t, s, "--config", cfg)
	c := connect(t, s)
	if err := c.js.DeleteStream(ctxTimeout(t, 10*time.Second), "DLQ"); err != nil {
		t.Fatal(err)
	}
	c.publishTask("unavailable", "last1", []byte("x"))
	testkit.Eventually(t, 30*time.Second, "a dead-letter attempt failing", func() (bool, string) {
		return strings.Contains(w.Stderr(), "dead-letter failed"), "no failed dead-letter logged yet"
	})
	// The DLQ comes back (as an operator would make it again).
	for _, cfg := range (bus.Topology{}).StreamConfigs() {
		if cfg.Name == "DLQ" {
			if _, err := c.js.CreateStream(ctxTimeout(t, 10*time.Second), cfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	m := c.lastMsg("DLQ", "dlq.unavailable", 60*time.Second)
	// On the next delivery (exhausted), or from the advisory once the
	// consumer's own limit is reached too (max_deliveries): kept either way.
	if r := m.Header.Get("Dlq-Reason"); r != "exhausted" && r != "max_deliveries" {
		t.Errorf("Dlq-Reason: got %q, want exhausted or max_deliveries", r)
	}
	wantHeader(t, m.Header, "Task-Id", "last1")
	testkit.Eventually(t, 15*time.Second, "the task out of TASKS", func() (bool, string) {
		n := c.msgs("TASKS")
		return n == 0, "TASKS holds " + itoa(n)
	})
}
