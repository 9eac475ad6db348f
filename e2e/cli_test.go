package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
)

// TestBadConfig starts workers with broken config files: each must exit
// non-zero at start naming the file, the line and what is wrong.
func TestBadConfig(t *testing.T) {
	t.Parallel()
	// A server to connect to, so that a worker that validates too late
	// fails the test by running instead of by not finding a server.
	s := startNATS(t)

	tests := []struct {
		name string
		give string
		want []string // substrings of stderr besides the file name
	}{
		{
			name: "unknown key",
			give: "worker:\n  concurrency: 4\n  concurency_typo: 8\n",
			want: []string{":3:", "concurency_typo"},
		},
		{
			name: "unknown top-level key",
			give: "workers:\n  concurrency: 4\n",
			want: []string{":1:", "workers"},
		},
		{
			name: "wrong type",
			give: "backends:\n  e: {builtin: echo}\nworker:\n  concurrency: many\n",
			want: []string{":4:", "concurrency"},
		},
		{
			name: "unknown backend in a route",
			give: "backends:\n  echoer: {builtin: echo}\nroutes:\n  work:\n    backends: [echoer, nosuch]\n",
			want: []string{":5:", "nosuch"},
		},
		{
			name: "impossible value",
			give: "worker:\n  concurrency: -1\n",
			want: []string{":2:", "concurrency"},
		},
		{
			name: "bad duration",
			give: "worker:\n  ack_wait: soon\n",
			want: []string{":2:", "ack_wait"},
		},
		{
			name: "unknown builtin",
			give: "backends:\n  x:\n    builtin: nosuchbuiltin\nroutes:\n  x: {backends: [x]}\n",
			want: []string{":3:", "nosuchbuiltin"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "broken.yaml", tt.give)
			w := startWorkerNoWait(t, s, "--config", path)
			code := w.Wait(15 * time.Second)
			stderr := w.Stderr()
			if code == 0 {
				t.Errorf("exit code 0, want non-zero")
			}
			for _, want := range append([]string{filepath.Base(path)}, tt.want...) {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, stderr)
				}
			}
			if w.ready() {
				t.Errorf("worker with a bad config answered /readyz 200")
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "absent.yaml")
		r := runWorker(t, nil, "--nats-url", s.URL(), "--config", path)
		if r.code == 0 || !strings.Contains(r.stderr, "absent.yaml") {
			t.Errorf("exit %d, stderr %q; want non-zero naming absent.yaml", r.code, r.stderr)
		}
	})
}

// TestEmbedded runs a worker with its own NATS server: other clients connect
// to it at --nats-url, and SIGTERM stops both cleanly.
func TestEmbedded(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	url := fmt.Sprintf("nats://127.0.0.1:%d", testkit.FreePort(t))
	w := startWorker(t, nil, "--embedded="+dir, "--nats-url", url)

	r := runPublisher(t, nil, "--nats-url", url, "publish", "echo", "x", "--wait")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "x" {
		t.Errorf("publish echo x --wait: exit %d, stdout %q; want exit 0, stdout \"x\"", r.code, r.stdout)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
		t.Errorf("embedded store %s: %d entries, err %v; want JetStream files", dir, len(entries), err)
	}

	w.Signal(syscall.SIGTERM)
	if code := w.Wait(testkit.StopTimeout); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
}

// TestUsageErrors checks that command-line mistakes exit 2 with one line.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		run  func(t testing.TB, env []string, args ...string) result
		args []string
	}{
		{"publisher publish without TYPE", runPublisher, []string{"publish"}},
		{"publisher unknown flag", runPublisher, []string{"--bogus"}},
		{"publisher unknown command", runPublisher, []string{"frobnicate"}},
		{"publisher result without ID", runPublisher, []string{"result", "echo"}},
		{"worker unknown flag", runWorker, []string{"--bogus"}},
		{"worker bad log level", runWorker, []string{"--log-level", "loud"}},
		{"worker stray argument", runWorker, []string{"extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// An unreachable URL: a usage error must not need a server.
			r := tt.run(t, []string{"NATS_URL=nats://127.0.0.1:1"}, tt.args...)
			if r.code != 2 {
				t.Errorf("exit code %d, want 2", r.code)
			}
			lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
			if len(lines) != 1 || lines[0] == "" {
				t.Errorf("stderr has %d lines, want one line with the reason:\n%s", len(lines), r.stderr)
			}
		})
	}
}

// TestWorkerHTTP checks the endpoints --http serves: liveness, readiness
// and Prometheus metrics.
func TestWorkerHTTP(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	w := startWorker(t, s)
	c := connect(t, s)
	c.publishTask("echo", "m-1", []byte("x"))
	c.lastMsg("RESULTS", "results.echo.m-1", resultTimeout)

	client := &http.Client{Timeout: 5 * time.Second}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := client.Get("http://" + w.httpAddr + path)
		if err != nil {
			t.Errorf("GET %s: %v", path, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: status %d, want 200 (body %q)", path, resp.StatusCode, body)
			continue
		}
		if path == "/metrics" && !strings.Contains(string(body), "# TYPE ") {
			t.Errorf("GET /metrics: body is not in the Prometheus text format:\n%s", body)
		}
	}
}
