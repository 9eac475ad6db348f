package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/internal/testkit"
)

// What a new user sees in the first minutes (issue 14), checked on the
// built binaries.

// The health table a new user reads: a backend with a few calls says it
// has too few to judge, the columns are explained, a worker that has only
// sent its start heartbeat reads "starting" rather than zeros, and the DLQ
// list's ERROR does not contradict its ATTEMPTS.
func TestFirstMinutesHealthAndDLQ(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	// A worker whose next heartbeat is an hour away, on its own prefix so
	// that it takes none of the other worker's tasks.
	fresh := writeFile(t, "fresh.yaml", "prefix: fresh\nhealth: {interval: 1h}\nroutes: {echo: {backends: [\"builtin:echo\"]}}\n")
	startWorker(t, s, "--config", fresh, "--id", "fresh-1")
	busy := writeFile(t, "busy.yaml", `health: {interval: 300ms}
worker: {max_deliver: 2}
routes:
  fail: {backends: ["builtin:fail"]}
  unavailable: {backends: ["builtin:unavailable"]}
`)
	startWorker(t, s, "--config", busy, "--id", "busy-1")
	c := connect(t, s)
	url := "--nats-url=" + s.URL()

	for _, id := range []string{"f1", "f2", "f3"} {
		if r := runPublisher(t, nil, url, "publish", "fail", "x", "--id", id); r.code != 0 {
			t.Fatalf("publish fail %s: exit %d", id, r.code)
		}
	}
	if r := runPublisher(t, nil, url, "publish", "unavailable", "x", "--id", "u1"); r.code != 0 {
		t.Fatalf("publish unavailable u1: exit %d", r.code)
	}
	// An entry as workers of earlier versions stored it, with the count
	// of the last delivery's calls before the error.
	legacy := nats.NewMsg("dlq.legacy")
	legacy.Data = []byte("x")
	for k, v := range map[string]string{"Task-Id": "old-1", "Dlq-Reason": "exhausted", "Dlq-Attempts": "5",
		"Dlq-Error": "1 attempt(s) failed: boom", "Dlq-Failed-At": time.Now().UTC().Format(time.RFC3339),
		"Dlq-Original-Subject": "tasks.legacy"} {
		legacy.Header.Set(k, v)
	}
	if _, err := c.js.PublishMsg(ctxTimeout(t, 10*time.Second), legacy); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 60*time.Second, "5 DLQ entries", func() (bool, string) {
		n := c.msgs("DLQ")
		return n >= 5, fmt.Sprintf("have %d", n)
	})

	// The fail backend's heartbeat after its three calls.
	testkit.Eventually(t, 20*time.Second, "the fail backend judged on 3 calls", func() (bool, string) {
		m := c.lastMsg("HEALTH", "health.backend.builtin_fail", resultTimeout)
		var ev struct{ State, Reason string }
		_ = json.Unmarshal(m.Data, &ev)
		return ev.State == "healthy" && strings.Contains(ev.Reason, "(3 of 10)"), string(m.Data)
	})
	r := runPublisher(t, nil, url, "health")
	if r.code != 0 {
		t.Fatalf("publisher health: exit %d", r.code)
	}
	rows := tableRows(r.stdout)
	for _, tt := range []struct{ row, want string }{
		{"BACKEND", "STATE BREAKER SUCCESS REJECTED P50 P95 P99 AVAILABILITY IN-FLIGHT REASON REPORTED"},
		{"builtin:fail", "healthy closed n/a (3 calls) 3 (100%)"},
		{"builtin:fail", "too few calls to judge (3 of 10)"},
		{"busy-1", "busy-1 running"},
	} {
		if got := rows[tt.row]; !strings.Contains(got, tt.want) {
			t.Errorf("health row %s = %q, want %q\n%s", tt.row, got, tt.want, r.stdout)
		}
	}
	for _, want := range []string{"SUCCESS: of the backend's last 200 calls", "n/a under 10 calls",
		"REJECTED: of those, tasks the backend refused as their own fault",
		"AVAILABILITY: successful calls and probes over the last hour (the SLA window)", "as of its LAST-HEARTBEAT"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("publisher health lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runPublisher(t, nil, url, "--prefix", "fresh", "health")
	if got := tableRows(r.stdout)["fresh-1"]; r.code != 0 || !strings.HasPrefix(got, "fresh-1 starting - - - -") {
		t.Errorf("fresh worker row %q (exit %d), want it starting without counts\n%s", got, r.code, r.stdout)
	}

	r = runPublisher(t, nil, url, "dlq", "list")
	if r.code != 0 {
		t.Fatalf("dlq list: exit %d", r.code)
	}
	count := regexp.MustCompile(`\d+ attempt\(s\) failed`)
	for _, id := range []string{"f1", "u1", "old-1"} {
		row := dlqRow(r.stdout, id)
		if row == "" || count.MatchString(row) {
			t.Errorf("dlq list row of %s = %q, want one whose ERROR has no attempt count\n%s", id, row, r.stdout)
		}
	}
	if row := dlqRow(r.stdout, "old-1"); !strings.Contains(row, " 5 ") || !strings.HasSuffix(row, " boom") {
		t.Errorf("legacy row %q, want ATTEMPTS 5 and ERROR boom", row)
	}
	if row := dlqRow(r.stdout, "u1"); !strings.Contains(row, "exhausted 2 ") {
		t.Errorf("row of u1 %q, want exhausted after 2 attempts", row)
	}
	// Stored so too, for dlq show, --json and any other reader.
	for _, subj := range []string{"dlq.fail", "dlq.unavailable"} {
		m := c.lastMsg("DLQ", subj, resultTimeout)
		if e := m.Header.Get("Dlq-Error"); e == "" || count.MatchString(e) {
			t.Errorf("%s Dlq-Error %q, want the error without an attempt count (Dlq-Attempts %s)", subj, e, m.Header.Get("Dlq-Attempts"))
		}
	}
}

// tableRows maps the first field of each line of a table to the line's
// fields, space-joined.
func tableRows(out string) map[string]string {
	rows := map[string]string{}
	for line := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = strings.Join(f, " ")
		}
	}
	return rows
}

// dlqRow is the dlq list row of task id, its fields space-joined.
func dlqRow(out, id string) string {
	for line := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == id {
			return strings.Join(f, " ")
		}
	}
	return ""
}

// Every line a worker writes with the default log format is a JSON object,
// its own and the embedded server's, from start through a cached route to
// a drain with a task in flight; durations are strings like "25s".
func TestFirstMinutesLogsAreJSON(t *testing.T) {
	t.Parallel()
	cfg := writeFile(t, "worker.yaml", `health: {interval: 200ms}
routes:
  echo: {backends: ["builtin:echo"], cache: {ttl: 1m}}
  upper: {backends: ["builtin:upper"], cache: {ttl: 1m, shared: true}}
  sleep: {backends: ["builtin:sleep"]}
`)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", testkit.FreePort(t))
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	w := &worker{Process: testkit.StartProcess(t, "worker", bin.worker, nil, "--embedded="+t.TempDir(), "--nats-url", natsURL,
		"--http", addr, "--config", cfg, "--id", "json-1"), t: t, httpAddr: addr}
	w.waitReady()
	url := "--nats-url=" + natsURL
	for range 2 { // the second of each is a cache hit
		for _, typ := range []string{"echo", "upper"} {
			if r := runPublisher(t, nil, url, "publish", typ, "same", "--wait"); r.code != 0 {
				t.Fatalf("publish %s: exit %d", typ, r.code)
			}
		}
	}
	if r := runPublisher(t, nil, url, "publish", "sleep", "1s"); r.code != 0 {
		t.Fatalf("publish sleep: exit %d", r.code)
	}
	c := connectURL(t, natsURL)
	testkit.Eventually(t, 10*time.Second, "the sleep task in flight", func() (bool, string) {
		m := c.lastMsg("HEALTH", "health.worker.json-1", resultTimeout)
		var ev struct {
			InFlight int `json:"in_flight"`
		}
		_ = json.Unmarshal(m.Data, &ev)
		return ev.InFlight == 1, string(m.Data)
	})
	w.Signal(syscall.SIGTERM)
	if code := w.Wait(testkit.StopTimeout); code != 0 {
		t.Fatalf("worker exit %d after SIGTERM, want 0", code)
	}

	durations := 0
	for name, out := range map[string]string{"stdout": w.Stdout(), "stderr": w.Stderr()} {
		for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			if line == "" && out == "" {
				continue
			}
			var obj map[string]any
			if err := json.Unmarshal([]byte(line), &obj); err != nil {
				t.Errorf("%s line %d is not a JSON object: %q", name, i+1, line)
				continue
			}
			durations += checkDurations(t, name, i+1, obj)
		}
	}
	if !strings.Contains(w.Stderr(), `"msg":"worker draining"`) {
		t.Errorf("no drain line:\n%s", w.Stderr())
	}
	if durations == 0 {
		t.Errorf("no duration logged at all (the drain's timeout, at least):\n%s", w.Stderr())
	}
}

// durationKey matches the attribute names under which our code and its
// libraries log durations.
var durationKey = regexp.MustCompile(`(?i)(timeout|duration|delay|interval|backoff|wait|elapsed|took|ttl|after|age|retry_in)$`)

// checkDurations fails the test for a duration-named attribute of obj (at
// any depth) that is not a string like "25s", and returns how many it saw.
func checkDurations(t *testing.T, stream string, line int, obj map[string]any) int {
	t.Helper()
	n := 0
	for k, v := range obj {
		if m, ok := v.(map[string]any); ok {
			n += checkDurations(t, stream, line, m)
			continue
		}
		if !durationKey.MatchString(k) {
			continue
		}
		n++
		s, ok := v.(string)
		if _, err := time.ParseDuration(s); !ok || err != nil {
			t.Errorf("%s line %d: %q is %v, want a duration string like \"25s\"", stream, line, k, v)
		}
	}
	return n
}

// A poison task comes back at once with a non-zero exit and the reason,
// rather than after publish --wait's whole timeout: here one over the
// worker's max_payload. A task id that cannot be a subject token is
// refused before it is sent (exit 2), so it never becomes one.
func TestFirstMinutesPoisonWait(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", "worker: {max_payload: 1KiB}\nroutes: {echo: {backends: [\"builtin:echo\"]}}\n")
	startWorker(t, s, "--config", cfg)
	url := "--nats-url=" + s.URL()

	start := time.Now()
	r := runPublisher(t, nil, url, "publish", "echo", "x", "--id", "bad.id", "--wait", "--timeout", "60s")
	if r.code != 2 || !strings.Contains(r.stderr, `--id: task id "bad.id" has '.'`) || time.Since(start) > 10*time.Second {
		t.Errorf("--id bad.id: exit %d after %s, stderr %q; want exit 2 at once naming the id", r.code, time.Since(start), r.stderr)
	}

	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 2048), 0o600); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	r = runPublisher(t, nil, url, "publish", "echo", "@"+big, "--id", "big-1", "--wait", "--timeout", "60s")
	took := time.Since(start)
	if r.code != 1 || !strings.Contains(r.stderr, "task big-1 failed: poison") || took > 30*time.Second {
		t.Errorf("a poison task with --wait: exit %d after %s, stderr %q; want exit 1 well under 60s, saying poison",
			r.code, took, r.stderr)
	}
}
