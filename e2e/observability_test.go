package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
)

// /metrics after a known workload shows its exact counts.
func TestMetricsExactCounts(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", `backends:
  echoer: {builtin: echo}
  nope: {builtin: fail}
routes:
  ok: {backends: [echoer]}
  bad: {backends: [nope]}
  cached: {backends: [echoer], cache: {ttl: 1m}}
`)
	w := startWorker(t, s, "--config", cfg)
	c := connect(t, s)
	const n, m, k = 5, 3, 4 // ok tasks, dead-lettered, cache hits
	for i := range n {
		c.publishTask("ok", fmt.Sprint("o", i), []byte("x"))
	}
	for i := range m {
		c.publishTask("bad", fmt.Sprint("b", i), []byte("x"))
	}
	c.publishTask("cached", "c0", []byte("same"))
	c.lastMsg("RESULTS", "results.cached.c0", resultTimeout)
	for i := range k {
		c.publishTask("cached", fmt.Sprint("c", i+1), []byte("same"))
	}
	want := map[string]string{
		`breakwater_tasks_total{outcome="ok"}`:                                               fmt.Sprint(n + 1 + k),
		`breakwater_tasks_total{outcome="dead_lettered"}`:                                    fmt.Sprint(m),
		`breakwater_dlq_entries_total{reason="rejected"}`:                                    fmt.Sprint(m),
		`breakwater_cache_hits_total`:                                                        fmt.Sprint(k),
		`breakwater_cache_misses_total`:                                                      "1",
		`breakwater_task_duration_seconds_count{outcome="done",type="ok"}`:                   fmt.Sprint(n),
		`breakwater_backend_call_duration_seconds_count{backend="echoer",outcome="ok"}`:      fmt.Sprint(n + 1),
		`breakwater_backend_call_duration_seconds_count{backend="nope",outcome="permanent"}`: fmt.Sprint(m),
	}
	var body string
	testkit.Eventually(t, resultTimeout, "the workload in /metrics", func() (bool, string) {
		body = scrape(t, "http://"+w.httpAddr+"/metrics")
		for k, v := range want {
			if got := sample(body, k); got != v {
				return false, fmt.Sprintf("%s = %q, want %s", k, got, v)
			}
		}
		return true, ""
	})
	for _, name := range []string{"breakwater_consumer_pending", "breakwater_backend_in_flight", "breakwater_cache_size_bytes"} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// sample returns the value of the series named exactly by name (labels
// included, in the exporter's order), or "".
func sample(body, name string) string {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strings.TrimSpace(rest)
		}
		// Other labels (otel_scope_*) may follow ours: match by prefix.
		if i := strings.IndexByte(name, '}'); i > 0 && strings.HasPrefix(line, name[:i]+",") {
			return strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:])
		}
	}
	return ""
}

// A worker whose backend is configured with a bearer token never logs it,
// and its task log lines carry the task's trace id.
func TestLogsCarryTraceIDsAndNoSecrets(t *testing.T) {
	t.Parallel()
	const secret = "tok-S3CRET-0123456789"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Echo the credentials back in the error, as careless services do.
		http.Error(w, "denied for "+r.Header.Get("Authorization"), http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", fmt.Sprintf(`backends:
  svc:
    http: {url: %q}
    auth: {bearer_token_file: %q}
routes:
  work: {backends: [svc]}
`, srv.URL+"/run?api_key="+secret, tokenFile))
	w := startWorker(t, s, "--config", cfg)
	c := connect(t, s)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	c.publishTask("work", "sec-1", []byte("x"), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	d := c.lastMsg("DLQ", "dlq.work", resultTimeout)
	if strings.Contains(fmt.Sprint(d.Header), secret) {
		t.Errorf("the DLQ copy holds the secret: %v", d.Header)
	}
	var logs string
	testkit.Eventually(t, 10*time.Second, "the dead-letter log line", func() (bool, string) {
		logs = w.Stderr()
		return strings.Contains(logs, "task dead-lettered"), ""
	})
	if strings.Contains(logs, secret) {
		t.Errorf("the worker's log holds the secret:\n%s", logs)
	}
	line := regexp.MustCompile(`(?m)^.*task dead-lettered.*$`).FindString(logs)
	if !strings.Contains(line, "trace_id="+traceID) || !strings.Contains(line, "task_id=sec-1") {
		t.Errorf("dead-letter line lacks the task's ids: %s", line)
	}
}
