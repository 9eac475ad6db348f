package service

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/internal/testkit"
)

func parse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("w.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestNeedsRestart(t *testing.T) {
	const base = "routes: {a: {backends: [\"builtin:echo\"]}}\n"
	tests := []struct {
		name string
		give string
		want []string
	}{
		{name: "routes and backends only", give: "routes: {b: {backends: [x]}}\nbackends: {x: {builtin: echo}}\n"},
		{name: "live health and cache keys", give: base + "health: {sla_target: 99, breaker_open_alert_after: 5m}\ncache: {max_size_mb: 8}\nworker: {reply_subjects: [\"reply.>\"]}\n"},
		{name: "nats url", give: base + "nats: {url: nats://elsewhere:4222}\n", want: []string{"nats.url"}},
		{name: "nats tls", give: base + "nats: {tls: {ca: ca.pem}}\n", want: []string{"nats.tls.ca"}},
		{name: "streams and prefix", give: base + "prefix: blue\nstreams: {replicas: 3}\n", want: []string{"prefix", "streams.replicas"}},
		{name: "worker sizing", give: base + "worker: {concurrency: 8, ack_wait: 1m}\n", want: []string{"worker.concurrency", "worker.ack_wait"}},
		{name: "dlq and health interval", give: base + "dlq: {redact_headers: [X-Secret]}\nhealth: {interval: 1s}\n", want: []string{"dlq.redact_headers", "health.interval"}},
	}
	running := parse(t, base)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := needsRestart(running, parse(t, tt.give)); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// closeCounter is an HTTP backend that counts the connections closed on it.
func closeCounter(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var closed atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = rw.Write([]byte("ok"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &closed
}

// A rebuild carries over the backends whose settings did not change (the
// same breaker), builds the changed and new ones, and Release closes only
// the connections of those left behind.
func TestBuildCarriesOverUnchanged(t *testing.T) {
	srvA, closedA := closeCounter(t)
	srvB, closedB := closeCounter(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	first := parse(t, `backends:
  a: {http: {url: "`+srvA.URL+`"}, breaker: {failure_threshold: 3}}
  b: {http: {url: "`+srvB.URL+`"}, breaker: {failure_threshold: 3}}
  gone: {builtin: echo}
routes:
  r: {backends: [a, b, gone, "builtin:echo"]}
`)
	bk1, err := Build(first, nil, log, Observers{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// One keep-alive connection to each server.
	for _, name := range []string{"a", "b"} {
		if _, err := bk1.Targets[name].Backend.Call(t.Context(), testRequest()); err != nil {
			t.Fatal(err)
		}
	}
	second := parse(t, `backends:
  a: {http: {url: "`+srvA.URL+`"}, breaker: {failure_threshold: 3}}
  b: {http: {url: "`+srvB.URL+`"}, breaker: {failure_threshold: 4}}
  c: {builtin: echo}
routes:
  r: {backends: [a, b, c, "builtin:echo"]}
`)
	bk2, err := Build(second, nil, log, Observers{}, bk1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bk2.Close)
	added, kept, removed := bk1.diff(bk2)
	if want := []string{"b", "c"}; !slices.Equal(added, want) {
		t.Errorf("added %q, want %q", added, want)
	}
	if want := []string{"a", "builtin:echo"}; !slices.Equal(kept, want) {
		t.Errorf("kept %q, want %q", kept, want)
	}
	if want := []string{"gone"}; !slices.Equal(removed, want) {
		t.Errorf("removed %q, want %q", removed, want)
	}
	a1, a2 := bk1.Targets["a"], bk2.Targets["a"]
	if a1.Breaker() != a2.Breaker() {
		t.Error("a's breaker was replaced, want the same one carried over")
	}
	b1, b2 := bk1.Targets["b"], bk2.Targets["b"]
	if b1.Breaker() == b2.Breaker() {
		t.Error("b's breaker was carried over although its settings changed")
	}

	bk1.Release(bk2)
	testkit.Eventually(t, 10*time.Second, "the replaced b's connections closed", func() (bool, string) {
		return closedB.Load() > 0, "none closed"
	})
	if closedB.Load() != 1 {
		t.Errorf("the replaced b closed %d connections, want 1", closedB.Load())
	}
	if n := closedA.Load(); n != 0 {
		t.Errorf("the kept a closed %d connections, want 0", n)
	}
	// a still works on the connection it had.
	if _, err := a2.Backend.Call(t.Context(), testRequest()); err != nil {
		t.Fatal(err)
	}
}

// A Build that fails closes what it made and leaves prev as it was.
func TestBuildFailureLeavesPrev(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, closed := closeCounter(t)
	prev, err := Build(parse(t, "backends: {a: {http: {url: \""+srv.URL+"\"}}}\nroutes: {r: {backends: [a]}}\n"), nil, log, Observers{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prev.Close)
	if _, err := prev.Targets["a"].Backend.Call(t.Context(), testRequest()); err != nil {
		t.Fatal(err)
	}
	bad := parse(t, "backends:\n  a: {http: {url: \""+srv.URL+"\"}}\n  t: {http: {url: \"http://x\"}, auth: {bearer_token_file: /nonexistent/token}}\nroutes: {r: {backends: [a, t]}}\n")
	if _, err := Build(bad, nil, log, Observers{}, prev); err == nil || !strings.Contains(err.Error(), "backend t") {
		t.Fatalf("got %v, want an error naming backend t", err)
	}
	if _, err := prev.Targets["a"].Backend.Call(t.Context(), testRequest()); err != nil {
		t.Errorf("prev's a after a failed Build: %v", err)
	}
	if closed.Load() != 0 {
		t.Errorf("a failed Build closed %d of prev's connections, want 0", closed.Load())
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "backends: {svc: {nats: {subject: svc.run}}}\nroutes: {a: {backends: [svc]}}\n")
	if hash, err := Check(good); err != nil || len(hash) != 12 {
		t.Errorf("Check(good) = %q, %v; want a 12-digit hash and no error", hash, err)
	}
	if hash, err := Check(""); err != nil || hash != "" {
		t.Errorf("Check(\"\") = %q, %v; want the defaults, no hash", hash, err)
	}
	tests := []struct {
		name, body, want string
	}{
		{"syntax", "routes: {a: {backends: [x]}\n", "bad.yaml:"},
		{"unknown key", "routes:\n  a: {backends: [\"builtin:echo\"], retries: 3}\n", "bad.yaml:2: routes.a.retries"},
		{"token file", "backends: {t: {http: {url: \"http://x\"}, auth: {bearer_token_file: /nonexistent/token}}}\nroutes: {a: {backends: [t]}}\n", "backend t"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Check(write("bad.yaml", tt.body))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func testRequest() *handlers.Request {
	return &handlers.Request{TaskID: "t-1", Type: "x", Attempt: 1, Payload: []byte("{}")}
}
