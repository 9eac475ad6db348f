package e2e

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
)

// sleepConfig is a worker config with a route sleep served by the built-in
// sleep handler.
func sleepConfig(t *testing.T, concurrency int, ackWait string) string {
	return writeFile(t, "worker.yaml", fmt.Sprintf(`worker:
  concurrency: %d
  ack_wait: %s
  max_deliver: 5
backends:
  sleeper: {builtin: sleep}
routes:
  sleep: {backends: [sleeper]}
`, concurrency, ackWait))
}

// wantAllDone checks that every task prefix0..prefix<n-1> of type sleep has
// exactly one result, TASKS is empty and the DLQ holds nothing.
func wantAllDone(t *testing.T, c *client, prefix string, n int) {
	t.Helper()
	subjects, err := c.subjects("RESULTS", "results.sleep.*")
	if err != nil {
		t.Fatalf("RESULTS subjects: %v", err)
	}
	for i := range n {
		subj := "results.sleep." + prefix + strconv.Itoa(i)
		if got := subjects[subj]; got != 1 {
			t.Errorf("%s holds %d messages, want 1", subj, got)
		}
	}
	if len(subjects) != n {
		t.Errorf("RESULTS has %d subjects, want %d", len(subjects), n)
	}
	if got := c.msgs("RESULTS"); got != uint64(n) {
		t.Errorf("RESULTS holds %d messages, want %d", got, n)
	}
	// The last ack may still be on its way when the last result is stored.
	testkit.Eventually(t, 10*time.Second, "TASKS to be empty", func() (bool, string) {
		got := c.msgs("TASKS")
		return got == 0, fmt.Sprintf("TASKS holds %d messages", got)
	})
	if got := c.msgs("DLQ"); got != 0 {
		t.Errorf("DLQ holds %d messages, want 0", got)
	}
}

// countResults returns the number of distinct result subjects of type sleep.
func countResults(c *client) (int, string) {
	s, err := c.subjects("RESULTS", "results.sleep.*")
	if err != nil {
		return 0, err.Error()
	}
	return len(s), fmt.Sprintf("%d results", len(s))
}

// TestKillWorker kills a worker with SIGKILL in the middle of a batch: a new
// worker completes every task, none is lost and none dead-lettered.
func TestKillWorker(t *testing.T) {
	t.Parallel()
	const n = 500
	s := startNATS(t)
	cfg := sleepConfig(t, 8, "2s")
	w := startWorker(t, s, "--config", cfg, "--id", "victim")
	c := connect(t, s)

	c.publishTasks("sleep", "k", n, []byte("20ms"))
	testkit.Eventually(t, 60*time.Second, "100 results before the kill", func() (bool, string) {
		got, msg := countResults(c)
		return got >= 100, msg
	})
	w.Kill()
	before, _ := countResults(c)
	t.Logf("killed the worker with %d of %d results stored", before, n)
	if before >= n {
		t.Fatalf("all %d tasks were done before the kill; the test proves nothing", n)
	}

	startWorker(t, s, "--config", cfg, "--id", "survivor")
	testkit.Eventually(t, 90*time.Second, fmt.Sprintf("%d results", n), func() (bool, string) {
		got, msg := countResults(c)
		return got >= n, msg
	})
	wantAllDone(t, c, "k", n)
}

// TestNATSRestart restarts the NATS server in the middle of a batch: the
// worker keeps running, reconnects and completes every task.
func TestNATSRestart(t *testing.T) {
	t.Parallel()
	const n = 300
	s := startNATS(t)
	cfg := sleepConfig(t, 4, "2s")
	w := startWorker(t, s, "--config", cfg)
	c := connect(t, s)

	c.publishTasks("sleep", "r", n, []byte("30ms"))
	testkit.Eventually(t, 60*time.Second, "50 results before the restart", func() (bool, string) {
		got, msg := countResults(c)
		return got >= 50, msg
	})
	s.Stop()
	if w.Exited() {
		t.Fatalf("worker exited when the server stopped: %v", w.Err())
	}
	s.Start()
	before, _ := countResults(c)
	t.Logf("restarted the server with %d of %d results stored", before, n)

	testkit.Eventually(t, 90*time.Second, fmt.Sprintf("%d results after the restart", n), func() (bool, string) {
		if w.Exited() {
			t.Fatalf("worker exited after the server restart: %v", w.Err())
		}
		got, msg := countResults(c)
		return got >= n, msg
	})
	wantAllDone(t, c, "r", n)
	testkit.Eventually(t, testkit.StartTimeout, "worker ready again", func() (bool, string) {
		return w.ready(), "/readyz not 200"
	})
}

// TestSIGTERMDrains stops a busy worker with SIGTERM: it exits 0 in good
// time and hands back what it did not finish, so a new worker completes
// every task without waiting out the ack wait.
func TestSIGTERMDrains(t *testing.T) {
	t.Parallel()
	const n = 10
	s := startNATS(t)
	// The ack wait (30s, the default) is longer than the test waits for the
	// second worker: tasks must be handed back, not left to time out.
	cfg := sleepConfig(t, 4, "30s")
	w := startWorker(t, s, "--config", cfg, "--id", "drained")
	c := connect(t, s)

	c.publishTasks("sleep", "d", n, []byte("1s"))
	testkit.Eventually(t, 20*time.Second, "tasks in flight", func() (bool, string) {
		ci, err := c.consumerInfo()
		if err != nil {
			return false, err.Error()
		}
		return ci.NumAckPending > 0, fmt.Sprintf("ack pending %d", ci.NumAckPending)
	})
	start := time.Now()
	w.Signal(syscall.SIGTERM)
	if code := w.Wait(15 * time.Second); code != 0 {
		t.Errorf("worker exit code after SIGTERM = %d, want 0", code)
	}
	before, _ := countResults(c)
	t.Logf("worker drained in %s with %d of %d results stored", time.Since(start).Round(time.Millisecond), before, n)
	if got := c.msgs("DLQ"); got != 0 {
		t.Errorf("DLQ holds %d messages after the drain, want 0", got)
	}

	startWorker(t, s, "--config", cfg, "--id", "successor")
	testkit.Eventually(t, 20*time.Second, fmt.Sprintf("%d results", n), func() (bool, string) {
		got, msg := countResults(c)
		return got >= n, msg
	})
	wantAllDone(t, c, "d", n)
}

// TestTransientExhausted fails a task transiently on every delivery: after
// max_deliver it is dead-lettered as exhausted, and its Task-Reply-To
// caller hears so instead of waiting out its timeout.
func TestTransientExhausted(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", `worker:
  max_deliver: 2
backends:
  down: {builtin: unavailable}
routes:
  down: {backends: [down]}
`)
	startWorker(t, s, "--config", cfg)
	c := connect(t, s)

	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c.publishTask("down", "ex-1", []byte("payload"), "Task-Reply-To", inbox)

	reply, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("reply on %s: %v", inbox, err)
	}
	wantHeader(t, reply.Header, "Task-Status", "error")
	wantHeader(t, reply.Header, "Dlq-Reason", "exhausted")

	d := c.lastMsg("DLQ", "dlq.down", resultTimeout)
	if string(d.Data) != "payload" {
		t.Errorf("DLQ body %q, want %q", d.Data, "payload")
	}
	wantHeader(t, d.Header, "Dlq-Reason", "exhausted")
	wantHeader(t, d.Header, "Task-Id", "ex-1")
	wantHeader(t, d.Header, "Dlq-Backends", "down")
	if n, err := strconv.Atoi(d.Header.Get("Dlq-Attempts")); err != nil || n < 2 {
		t.Errorf("Dlq-Attempts = %q, want an integer >= 2 (one call per delivery)", d.Header.Get("Dlq-Attempts"))
	}
	if d.Header.Get("Dlq-Error") == "" {
		t.Errorf("Dlq-Error is empty (headers %v)", d.Header)
	}
	c.noMsg("RESULTS", "results.down.ex-1")
	testkit.Eventually(t, 10*time.Second, "TASKS to be empty", func() (bool, string) {
		got := c.msgs("TASKS")
		return got == 0, fmt.Sprintf("TASKS holds %d messages", got)
	})
	if got := c.msgs("DLQ"); got != 1 {
		t.Errorf("DLQ holds %d messages, want 1", got)
	}
}

// A task that kills the worker on every delivery ends in the DLQ as
// max_deliveries, moved there by the next worker from the server's
// advisory, and leaves TASKS.
func TestCrashLoopDeadLettered(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", `worker:
  max_deliver: 2
  ack_wait: 1s
backends:
  boom: {builtin: crash}
routes:
  boom: {backends: [boom]}
`)
	c := connect(t, s)
	first := startWorker(t, s, "--config", cfg)
	c.publishTask("boom", "loop-1", []byte("payload"))
	if code := first.Wait(30 * time.Second); code != 3 {
		t.Fatalf("first worker exit code %d, want 3 (killed by builtin:crash)", code)
	}
	// The second delivery, after the ack wait, kills the next worker.
	second := startWorker(t, s, "--config", cfg)
	if code := second.Wait(30 * time.Second); code != 3 {
		t.Fatalf("second worker exit code %d, want 3", code)
	}
	// A third worker is never handed the task again; it dead-letters it.
	third := startWorker(t, s, "--config", cfg)
	d := c.lastMsg("DLQ", "dlq.boom", resultTimeout)
	wantHeader(t, d.Header, "Dlq-Reason", "max_deliveries")
	wantHeader(t, d.Header, "Task-Id", "loop-1")
	wantHeader(t, d.Header, "Dlq-Attempts", "2")
	if string(d.Data) != "payload" {
		t.Errorf("DLQ body %q, want payload", d.Data)
	}
	testkit.Eventually(t, 10*time.Second, "TASKS to be empty", func() (bool, string) {
		got := c.msgs("TASKS")
		return got == 0, fmt.Sprintf("%d messages", got)
	})
	if third.Exited() {
		t.Fatal("the third worker was handed the task again")
	}
}
