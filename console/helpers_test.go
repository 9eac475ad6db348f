package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/console"
	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/internal/testkit"
)

// env is a real embedded server with Breakwater's streams.
type env struct {
	t  testing.TB
	nc *nats.Conn
	js jetstream.JetStream
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir(), NoSyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.EnsureStreams(ctx(t), js, bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, nc: nc, js: js}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// console starts a console over e with o (Conn set here) and serves it
// from an httptest server; both stop at cleanup.
func (e *env) console(o console.Options) *httptest.Server {
	e.t.Helper()
	o.Conn = e.nc
	if o.StreamsInterval == 0 {
		o.StreamsInterval = 100 * time.Millisecond
	}
	c, err := console.New(ctx(e.t), o)
	if err != nil {
		e.t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	srv := httptest.NewUnstartedServer(c.Handler())
	srv.Config.BaseContext = func(_ net.Listener) context.Context { return runCtx }
	srv.Start()
	e.t.Cleanup(func() {
		stop()
		srv.Close()
		if err := <-done; err != nil {
			e.t.Errorf("Run: %v", err)
		}
	})
	return srv
}

// publishHealth stores a health event as a worker would.
func (e *env) publishHealth(subject string, v any) {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.js.Publish(ctx(e.t), subject, b); err != nil {
		e.t.Fatal(err)
	}
}

func backendEvent(name string, breaker health.BreakerState) health.BackendEvent {
	state := health.Healthy
	if breaker == health.BreakerOpen {
		state = health.Unhealthy
	}
	now := time.Now().UTC()
	return health.BackendEvent{Backend: name, State: state, Breaker: breaker, SuccessRate: 1, Calls: 20,
		LatencyMS: health.Latency{P50: 1, P95: 2, P99: 3}, Availability: 100, Since: now, Worker: "w1", Kind: "change", At: now}
}

// deadLetter stores a DLQ entry of type typ as a worker would.
func (e *env) deadLetter(typ, id, reason string, data []byte, kv ...string) uint64 {
	e.t.Helper()
	m := nats.NewMsg("dlq." + typ)
	m.Data = data
	m.Header.Set("Task-Id", id)
	m.Header.Set("Dlq-Reason", reason)
	m.Header.Set("Dlq-Error", "boom")
	m.Header.Set("Dlq-Attempts", "1")
	m.Header.Set("Dlq-Backends", "flow")
	m.Header.Set("Dlq-Original-Subject", "tasks."+typ)
	m.Header.Set("Dlq-Failed-At", time.Now().UTC().Format(time.RFC3339))
	for i := 0; i+1 < len(kv); i += 2 {
		m.Header.Set(kv[i], kv[i+1])
	}
	ack, err := e.js.PublishMsg(ctx(e.t), m)
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

func (e *env) msgs(stream string) uint64 {
	e.t.Helper()
	s, err := e.js.Stream(ctx(e.t), stream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

// get fetches url and returns the status and body.
func get(t testing.TB, c *http.Client, url string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, c, req)
}

func post(t testing.TB, c *http.Client, url, form string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, c, req)
}

func do(t testing.TB, c *http.Client, req *http.Request) (int, string, http.Header) {
	t.Helper()
	if c == nil {
		c = noRedirect()
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func noRedirect() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

// csrf reads the CSRF token from /api/session.
func csrf(t testing.TB, base string, hdr ...string) string {
	t.Helper()
	code, body, _ := get(t, nil, base+"/api/session", hdr...)
	if code != http.StatusOK {
		t.Fatalf("GET /api/session: %d %s", code, body)
	}
	var s console.Session
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	return s.CSRF
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	testkit.Eventually(t, d, what, cond)
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
