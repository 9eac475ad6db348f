package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
)

// rewrite replaces the config file at path with content, as an operator's
// editor would, and returns the hash the worker reports for it.
func rewrite(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	return hex.EncodeToString(sum[:6])
}

// logCount counts the worker's log lines containing every one of parts.
func logCount(w *worker, parts ...string) int {
	n := 0
	for line := range strings.SplitSeq(w.Stderr(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// waitReloads waits until the worker has logged n lines about reloads
// that contain parts.
func waitReloads(t *testing.T, w *worker, n int, parts ...string) {
	t.Helper()
	testkit.Eventually(t, resultTimeout, fmt.Sprintf("%d log lines with %q", n, parts), func() (bool, string) {
		got := logCount(w, parts...)
		return got >= n, fmt.Sprintf("%d so far", got)
	})
}

// A worker serving route a gets a file with a new backend and route b on
// SIGHUP: b is served within a second, and a's tasks in flight on the old
// config finish on the backend they started with.
func TestReloadAddsRouteWhileTasksInFlight(t *testing.T) {
	var slowCalls atomic.Int64
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		slowCalls.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = rw.Write([]byte("slow done"))
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	fast := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = rw.Write([]byte("fast done"))
	}))
	t.Cleanup(fast.Close)

	s := startNATS(t)
	first := fmt.Sprintf(`backends:
  slow: {http: {url: %q}, timeout: 60s}
routes:
  a: {backends: [slow]}
`, slow.URL)
	path := writeFile(t, "worker.yaml", first)
	w := startWorker(t, s, "--config", path, "--id", "rw1")
	c := connect(t, s)

	c.publishTask("a", "a-1", []byte(`{"n":1}`))
	c.publishTask("a", "a-2", []byte(`{"n":2}`))
	testkit.Eventually(t, resultTimeout, "a's two tasks calling the slow backend", func() (bool, string) {
		return slowCalls.Load() == 2, fmt.Sprint(slowCalls.Load(), " calls")
	})

	second := fmt.Sprintf(`backends:
  slow: {http: {url: %q}, timeout: 60s}
  fast: {http: {url: %q}}
routes:
  a: {backends: [slow]}
  b: {backends: [fast]}
`, slow.URL, fast.URL)
	hash := rewrite(t, path, second)
	hup := time.Now()
	w.Signal(syscall.SIGHUP)
	waitReloads(t, w, 1, "config reloaded", "config_hash="+hash)
	c.publishTask("b", "b-1", []byte(`{"n":3}`))
	got := c.lastMsg("RESULTS", "results.b.b-1", resultTimeout)
	took := time.Since(hup)
	t.Logf("SIGHUP to route b's first result: %s", took)
	if took > time.Second {
		t.Errorf("route b served %s after SIGHUP, want within 1s", took)
	}
	if string(got.Data) != "fast done" {
		t.Errorf("b-1 result %q, want %q", got.Data, "fast done")
	}
	if !strings.Contains(w.Stderr(), "backends_added=[fast]") || !strings.Contains(w.Stderr(), "backends_kept=[slow]") {
		t.Errorf("reload log does not say fast was added and slow kept:\n%s", w.Stderr())
	}

	// The tasks that started before the reload finish as they began.
	close(release)
	for _, id := range []string{"a-1", "a-2"} {
		m := c.lastMsg("RESULTS", "results.a."+id, resultTimeout)
		wantHeader(t, m.Header, "Task-Backend", "slow")
		if string(m.Data) != "slow done" {
			t.Errorf("%s result %q, want %q", id, m.Data, "slow done")
		}
	}
	if n := c.msgs("DLQ"); n != 0 {
		t.Errorf("DLQ holds %d tasks, want 0", n)
	}
	if n := slowCalls.Load(); n != 2 {
		t.Errorf("slow backend called %d times, want 2 (no task repeated)", n)
	}
	body := scrape(t, "http://"+w.httpAddr+"/metrics")
	if !regexp.MustCompile(`breakwater_config_reloads_total\{[^}]*result="ok"[^}]*\} 1\b`).MatchString(body) {
		t.Errorf("/metrics lacks breakwater_config_reloads_total{result=\"ok\"} 1:\n%s", testkit.Lines(body, "reloads"))
	}
}

// A bad file on SIGHUP changes nothing: the worker goes on serving the old
// config, and the log names the file, the line and the key.
func TestReloadRefusesBadFile(t *testing.T) {
	s := startNATS(t)
	good := `health: {interval: 200ms}
routes:
  a: {backends: ["builtin:echo"]}
`
	path := writeFile(t, "worker.yaml", good)
	w := startWorker(t, s, "--config", path, "--id", "rw2")
	c := connect(t, s)
	c.publishTask("a", "a-1", []byte("one"))
	c.lastMsg("RESULTS", "results.a.a-1", resultTimeout)
	goodHash := rewrite(t, path, good) // the same bytes: the same hash

	rewrite(t, path, `health: {interval: 200ms}
routes:
  a: {backends: ["builtin:echo"]}
  b:
    backends: ["builtin:echo"]
    deadline: soon
`)
	w.Signal(syscall.SIGHUP)
	waitReloads(t, w, 1, "config reload refused", path+":6: routes.b.deadline: ")
	if w.Exited() {
		t.Fatal("the worker exited on a bad config")
	}
	c.publishTask("a", "a-2", []byte("two"))
	if m := c.lastMsg("RESULTS", "results.a.a-2", resultTimeout); string(m.Data) != "two" {
		t.Errorf("a-2 result %q, want %q", m.Data, "two")
	}
	// Route b was not half-applied.
	c.publishTask("b", "b-1", []byte("three"))
	m := c.lastMsg("DLQ", "dlq.b", resultTimeout)
	wantHeader(t, m.Header, "Dlq-Reason", "no_route")

	// The heartbeat still names the file the worker runs with.
	testkit.Eventually(t, resultTimeout, "a heartbeat with the running config's hash", func() (bool, string) {
		hb := c.lastMsg("HEALTH", "health.worker.rw2", resultTimeout)
		var ev struct {
			ConfigHash     string    `json:"config_hash"`
			ConfigLoadedAt time.Time `json:"config_loaded_at"`
		}
		_ = json.Unmarshal(hb.Data, &ev)
		return ev.ConfigHash == goodHash && !ev.ConfigLoadedAt.IsZero(), string(hb.Data)
	})
	body := scrape(t, "http://"+w.httpAddr+"/metrics")
	if !regexp.MustCompile(`breakwater_config_reloads_total\{[^}]*result="error"[^}]*\} 1\b`).MatchString(body) {
		t.Errorf("/metrics lacks breakwater_config_reloads_total{result=\"error\"} 1:\n%s", testkit.Lines(body, "reloads"))
	}
}

// A breaker that is open stays open across a reload that did not touch its
// backend; one whose backend changed starts closed. The new config's hash
// shows in the heartbeat and in nats micro info.
func TestReloadKeepsOpenBreaker(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = rw.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	s := startNATS(t)
	base := fmt.Sprintf(`health: {interval: 200ms}
backends:
  svc:
    http: {url: %q}
    breaker: {failure_threshold: 3, delay: 1m}
routes:
  a: {backends: [svc]}
`, srv.URL)
	path := writeFile(t, "worker.yaml", base)
	w := startWorker(t, s, "--config", path, "--id", "rw3")
	c := connect(t, s)
	breaker := func() string {
		body := scrape(t, "http://"+w.httpAddr+"/metrics")
		m := regexp.MustCompile(`breakwater_breaker_state\{[^}]*backend="svc"[^}]*\} (\d)`).FindStringSubmatch(body)
		if m == nil {
			return "none"
		}
		return map[string]string{"0": "closed", "1": "half-open", "2": "open"}[m[1]]
	}
	testkit.Eventually(t, resultTimeout, "svc's breaker in /metrics", func() (bool, string) { b := breaker(); return b == "closed", b })
	reply, err := c.nc.Request("breakwater.rw3.breaker.trip", []byte(`{"backend":"svc"}`), 5*time.Second)
	if err != nil || !strings.Contains(string(reply.Data), `"ok":true`) {
		t.Fatalf("trip: %v %v", err, reply)
	}
	if b := breaker(); b != "open" {
		t.Fatalf("breaker %s after the trip, want open", b)
	}

	hash := rewrite(t, path, base+"  b: {backends: [\"builtin:echo\"]}\n")
	w.Signal(syscall.SIGHUP)
	waitReloads(t, w, 1, "config reloaded", "config_hash="+hash)
	if b := breaker(); b != "open" {
		t.Errorf("breaker %s after a reload that kept svc, want open", b)
	}
	c.publishTask("b", "b-1", []byte("x"))
	c.lastMsg("RESULTS", "results.b.b-1", resultTimeout)

	testkit.Eventually(t, resultTimeout, "the new hash in the heartbeat", func() (bool, string) {
		hb := c.lastMsg("HEALTH", "health.worker.rw3", resultTimeout)
		var ev struct {
			ConfigHash string `json:"config_hash"`
		}
		_ = json.Unmarshal(hb.Data, &ev)
		return ev.ConfigHash == hash, string(hb.Data)
	})
	testkit.Eventually(t, resultTimeout, "the new hash in $SRV.INFO", func() (bool, string) {
		m, err := c.nc.Request("$SRV.INFO.breakwater", nil, 2*time.Second)
		if err != nil {
			return false, err.Error()
		}
		var info struct {
			Metadata map[string]string `json:"metadata"`
		}
		_ = json.Unmarshal(m.Data, &info)
		return info.Metadata["config_hash"] == hash && info.Metadata["config_loaded_at"] != "", string(m.Data)
	})

	// Changing svc's settings builds it anew: its breaker starts closed.
	// A setting that needs a restart is named and keeps its value.
	changed := strings.Replace(base, "delay: 1m", "delay: 2m", 1) + "worker: {concurrency: 7}\n"
	hash = rewrite(t, path, changed)
	w.Signal(syscall.SIGHUP)
	waitReloads(t, w, 1, "config reloaded", "config_hash="+hash)
	waitReloads(t, w, 1, "need a restart", "worker.concurrency")
	if b := breaker(); b != "closed" {
		t.Errorf("breaker %s after a reload that changed svc, want closed", b)
	}
	c.publishTask("a", "a-1", []byte("y"))
	if m := c.lastMsg("RESULTS", "results.a.a-1", resultTimeout); string(m.Data) != "ok" {
		t.Errorf("a-1 result %q, want %q", m.Data, "ok")
	}
}

// A backend a reload removes keeps serving the task that started on it and
// has its connections closed once that task is done.
func TestReloadClosesRemovedBackendAfterItsTasks(t *testing.T) {
	var calls, closed atomic.Int64
	release := make(chan struct{})
	slow := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = rw.Write([]byte("slow done"))
	}))
	slow.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	slow.Start()
	t.Cleanup(slow.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})

	s := startNATS(t)
	path := writeFile(t, "worker.yaml", fmt.Sprintf(`backends:
  slow: {http: {url: %q}, timeout: 60s}
routes:
  a: {backends: [slow]}
`, slow.URL))
	w := startWorker(t, s, "--config", path, "--id", "rw4")
	c := connect(t, s)
	c.publishTask("a", "a-1", []byte("one"))
	testkit.Eventually(t, resultTimeout, "a-1 calling the slow backend", func() (bool, string) {
		return calls.Load() == 1, fmt.Sprint(calls.Load(), " calls")
	})

	hash := rewrite(t, path, "routes:\n  a: {backends: [\"builtin:echo\"]}\n")
	w.Signal(syscall.SIGHUP)
	waitReloads(t, w, 1, "config reloaded", "config_hash="+hash, "backends_removed=[slow]")
	c.publishTask("a", "a-2", []byte("two"))
	m := c.lastMsg("RESULTS", "results.a.a-2", resultTimeout)
	wantHeader(t, m.Header, "Task-Backend", "builtin:echo")

	close(release)
	m = c.lastMsg("RESULTS", "results.a.a-1", resultTimeout)
	wantHeader(t, m.Header, "Task-Backend", "slow")
	testkit.Eventually(t, resultTimeout, "the removed backend's connection closed", func() (bool, string) {
		return closed.Load() >= 1, fmt.Sprint(closed.Load(), " closed")
	})
}
