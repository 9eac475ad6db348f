package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/internal/testkit"
)

// The web console (issue 18), driven in a real headless Chromium against
// the built publisher ui, a real worker and nats-server.

// browser starts a headless Chromium with a fresh profile and returns a
// chromedp context for one tab, and the errors and warnings the pages
// wrote to the console so far (failed loads and CSP refusals included). The
// test is skipped when chromium is not installed (.ci/run installs it).
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install -y chromium); .ci/run installs it")
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 900),
	)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Start the browser with no deadline: the first Run binds its life to
	// the context it is given.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var msgs []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type != chromedp.ConsoleError && m.Type != chromedp.ConsoleException && m.Type != chromedp.ConsoleWarning {
				continue // the browser's own hints (debug, info) are no errors of the page
			}
			mu.Lock()
			msgs = append(msgs, fmt.Sprintf("%s %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1))
			mu.Unlock()
		}
	}()
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), msgs...)
	}
}

// step runs browser actions within d.
func step(t *testing.T, ctx context.Context, d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// value runs one browser action that returns a value, within d.
func value[T any](t *testing.T, ctx context.Context, d time.Duration, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// screenshotDir is $SCREENSHOT_DIR, else a temporary folder.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png := value(t, ctx, 20*time.Second, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startUI starts publisher ui on a free loopback port with args and waits
// until it answers.
func startUI(t *testing.T, s *testkit.NATSProcess, args ...string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	all := append([]string{"--nats-url", s.URL(), "ui", "--http", addr}, args...)
	p := testkit.StartProcess(t, "publisher ui", bin.publisher, nil, all...)
	base := "http://" + addr
	testkit.WaitHTTP(t, p, base+"/static/style.css", "publisher ui")
	return base
}

// A backend whose answers the test turns: 400 (the task's fault, so it is
// dead-lettered as rejected at once) until accept is set, then an echo.
type switchBackend struct{ accept atomic.Bool }

func (b *switchBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if !b.accept.Load() {
		http.Error(w, "not today", http.StatusBadRequest)
		return
	}
	_, _ = w.Write(append([]byte("done:"), body...))
}

func TestConsoleInBrowser(t *testing.T) {
	t.Parallel()
	ctx, consoleMsgs := browser(t)
	shots := screenshotDir(t)

	good := &switchBackend{}
	goodSrv := httptest.NewServer(good)
	t.Cleanup(goodSrv.Close)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)

	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", fmt.Sprintf(`health: {interval: 500ms, breaker_open_alert_after: 1s}
worker: {max_deliver: 2}
backends:
  good:
    http: {url: %q}
    retry: {max_attempts: 1}
  flaky:
    http: {url: %q}
    retry: {max_attempts: 1}
    breaker: {failure_threshold: 2, delay: 1m}
routes:
  job: {backends: [good]}
  flaky: {backends: [flaky]}
`, goodSrv.URL, down.URL))
	startWorker(t, s, "--config", cfg, "--id", "w-console")
	c := connect(t, s)
	readOnly := startUI(t, s, "--config", cfg)
	const token = "console-e2e-token"
	tokenFile := writeFile(t, "token", token+"\n")
	actions := startUI(t, s, "--allow-actions", "--auth-token-file", tokenFile)

	// A periodic schedule, for the schedules page.
	if r := runPublisher(t, nil, "--nats-url", s.URL(), "schedule", "add", "nightly", "job", `{"n":0}`, "--every", "1h"); r.code != 0 {
		t.Fatalf("schedule add: exit %d", r.code)
	}

	// Overview: loads, goes live, no console error.
	step(t, ctx, 30*time.Second, "overview",
		chromedp.Navigate(readOnly+"/"),
		chromedp.WaitVisible(chromedp.CSS(`table.live[data-kind="stream"]`)),
	)
	value(t, ctx, 10*time.Second, "the overview to go live",
		chromedp.Poll[bool](`document.getElementById('live').textContent === 'live'`, chromedp.WithPollingInterval(20*time.Millisecond)))
	if text := value(t, ctx, 10*time.Second, "overview text", chromedp.Text(chromedp.CSS("main"))); !strings.Contains(text, "TASKS") {
		t.Errorf("overview lacks the TASKS stream:\n%s", text)
	}
	screenshot(t, ctx, shots, "overview")

	// Backends: the flaky backend's breaker opens; the page shows it
	// within 2 s of the event being stored, without a reload.
	step(t, ctx, 30*time.Second, "backends page",
		chromedp.Navigate(readOnly+"/backends"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-key="flaky"]`)),
	)
	step(t, ctx, 5*time.Second, "mark the page", chromedp.Evaluate[chromedp.Void](`window.__notReloaded = true`))
	opened := make(chan time.Time, 1)
	sub, err := c.nc.Subscribe("health.backend.flaky", func(m *nats.Msg) {
		var ev struct{ Breaker string }
		if json.Unmarshal(m.Data, &ev) == nil && ev.Breaker == "open" {
			select {
			case opened <- time.Now():
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // test cleanup
	for i := range 3 {
		c.publishTask("flaky", fmt.Sprintf("flaky-%d", i), []byte(`{"n":1}`))
	}
	var at time.Time
	select {
	case at = <-opened:
	case <-time.After(30 * time.Second):
		t.Fatal("the flaky backend's breaker did not open")
	}
	value(t, ctx, 2*time.Second-time.Since(at), "the backends page to show the breaker open within 2 s",
		chromedp.Poll[bool](`(document.querySelector('tr[data-key="flaky"] td[data-f="breaker"]') || {}).textContent === 'open'`,
			chromedp.WithPollingInterval(20*time.Millisecond)))
	t.Logf("breaker open on the page %s after the event", time.Since(at).Round(time.Millisecond))
	if !value(t, ctx, 5*time.Second, "the mark", chromedp.Evaluate[bool](`window.__notReloaded === true`)) {
		t.Error("the backends page was reloaded")
	}
	screenshot(t, ctx, shots, "backends")

	// Workers and alerts.
	step(t, ctx, 30*time.Second, "workers page",
		chromedp.Navigate(readOnly+"/workers"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-key="w-console"]`)),
	)
	screenshot(t, ctx, shots, "workers")
	step(t, ctx, 30*time.Second, "alerts page: the breaker alert fires",
		chromedp.Navigate(readOnly+"/alerts"),
		chromedp.WaitVisible(chromedp.CSS(`tr.alert-firing`)),
	)
	screenshot(t, ctx, shots, "alerts")
	step(t, ctx, 30*time.Second, "schedules page",
		chromedp.Navigate(readOnly+"/schedules"),
		chromedp.WaitVisible(chromedp.CSS("main table tbody tr")),
	)
	if text := value(t, ctx, 10*time.Second, "schedules", chromedp.Text(chromedp.CSS("main table"))); !strings.Contains(text, "nightly") || !strings.Contains(text, "@every 1h0m0s") {
		t.Errorf("schedules page lacks nightly @every 1h0m0s:\n%s", text)
	}
	screenshot(t, ctx, shots, "schedules")

	// DLQ: a rejected task and a task of a type no route takes.
	c.publishTask("job", "dead-1", []byte(`{"n":1,"why":"rejected"}`))
	c.publishTask("orphan", "orphan-1", []byte("plain text"))
	dead := c.lastMsg("DLQ", "dlq.job", resultTimeout)
	c.lastMsg("DLQ", "dlq.orphan", resultTimeout)
	seq := dead.Sequence
	step(t, ctx, 30*time.Second, "DLQ page",
		chromedp.Navigate(readOnly+"/dlq"),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-seq="%d"]`, seq))),
	)
	screenshot(t, ctx, shots, "dlq")
	dlqText := func() string { return value(t, ctx, 10*time.Second, "DLQ table", chromedp.Text(chromedp.ID("dlq"))) }
	if text := dlqText(); !strings.Contains(text, "dead-1") || !strings.Contains(text, "orphan-1") {
		t.Errorf("DLQ page lacks dead-1 or orphan-1:\n%s", text)
	}
	for _, tt := range []struct {
		field, value, want, not string
	}{
		{"f-type", "job", "dead-1", "orphan-1"},
		{"f-reason", "no_route", "orphan-1", "dead-1"},
	} {
		step(t, ctx, 30*time.Second, "filter "+tt.field,
			chromedp.Navigate(readOnly+"/dlq"),
			chromedp.WaitVisible(chromedp.ID(tt.field)),
			chromedp.SetValue(chromedp.ID(tt.field), tt.value),
		)
		_, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("f-apply")))
		if err != nil {
			t.Fatalf("apply filter %s=%s: %v", tt.field, tt.value, err)
		}
		if text := dlqText(); !strings.Contains(text, tt.want) || strings.Contains(text, tt.not) {
			t.Errorf("DLQ filtered by %s=%s: want %s and not %s:\n%s", tt.field, tt.value, tt.want, tt.not, text)
		}
	}
	// The entry's page, from the list's link.
	step(t, ctx, 30*time.Second, "back to the DLQ", chromedp.Navigate(readOnly+"/dlq"),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`a[href="/dlq/%d"]`, seq))))
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[href="/dlq/%d"]`, seq)))); err != nil {
		t.Fatalf("open entry %d: %v", seq, err)
	}
	for sel, want := range map[string]string{"e-id": "dead-1", "e-reason": "rejected", "payload": `"why": "rejected"`, "headers": "Dlq-Backends"} {
		if got := value(t, ctx, 10*time.Second, sel, chromedp.Text(chromedp.ID(sel))); !strings.Contains(got, want) {
			t.Errorf("entry page #%s = %q, want %q", sel, got, want)
		}
	}
	screenshot(t, ctx, shots, "dlq-entry")

	// Read-only: no replay button, and the API refuses.
	if value(t, ctx, 5*time.Second, "replay button", chromedp.Evaluate[bool](`document.getElementById('replay') !== null`)) {
		t.Error("read-only console shows a replay button")
	}
	resp, err := http.Post(fmt.Sprintf("%s/api/dlq/%d/replay", readOnly, seq), "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("read-only replay: %d, want 403", resp.StatusCode)
	}
	if msgs := consoleMsgs(); len(msgs) > 0 {
		t.Errorf("browser console messages on the read-only console:\n%s", strings.Join(msgs, "\n"))
	}

	// Actions and a token: log in, replay from the entry's page, and the
	// task (the backend now accepting it) gets its result.
	step(t, ctx, 30*time.Second, "login page",
		chromedp.Navigate(fmt.Sprintf("%s/dlq/%d", actions, seq)),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
	)
	if _, err := chromedp.RunResponse(ctx, chromedp.Submit(chromedp.ID("login"))); err != nil {
		t.Fatalf("log in: %v", err)
	}
	step(t, ctx, 30*time.Second, "entry page with actions",
		chromedp.Navigate(fmt.Sprintf("%s/dlq/%d", actions, seq)),
		chromedp.WaitVisible(chromedp.ID("replay")),
	)
	screenshot(t, ctx, shots, "dlq-entry-actions")
	good.accept.Store(true)
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("replay"))); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if msg := value(t, ctx, 10*time.Second, "replay message", chromedp.Text(chromedp.CSS(".msg"))); !strings.Contains(msg, "replayed") {
		t.Errorf("after the replay the page says %q, want it replayed", msg)
	}
	res := c.lastMsg("RESULTS", "results.job.dead-1", resultTimeout)
	if want := `done:{"n":1,"why":"rejected"}`; string(res.Data) != want {
		t.Errorf("result of the replayed task = %q, want %q", res.Data, want)
	}
	wantHeader(t, res.Header, "Task-Status", "ok")
	if msgs := consoleMsgs(); len(msgs) > 0 {
		t.Errorf("browser console messages:\n%s", strings.Join(msgs, "\n"))
	}
	t.Logf("screenshots in %s", shots)
}

// The console needs no more than deploy/nats/auth.conf gives the operator:
// every page and API answer, and every action works, with the server
// logging no refusal for that user.
func TestConsoleAsOperator(t *testing.T) {
	t.Parallel()
	s := startNATSAuth(t)
	cfg := writeFile(t, "worker.yaml", `health: {interval: 300ms}
backends:
  echoer: {builtin: echo, breaker: {failure_threshold: 3, delay: 1m}}
  nope: {builtin: fail}
routes:
  echo: {backends: [echoer]}
  nope: {backends: [nope]}
`)
	startWorker(t, s.NATSProcess, "--config", cfg, "--id", "w1", "--user", workerUser, "--password", s.password[workerUser])
	if r := s.publisher(t, clientUser, "publish", "nope", `{"n":1}`, "--id", "n1"); r.code != 0 {
		t.Fatalf("publish: exit %d", r.code)
	}
	if r := s.publisher(t, operatorUser, "schedule", "add", "hourly", "echo", "--every", "1h"); r.code != 0 {
		t.Fatalf("schedule add: exit %d", r.code)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	p := testkit.StartProcess(t, "publisher ui", bin.publisher, nil, append(s.as(operatorUser), "ui", "--http", addr, "--allow-actions", "--config", cfg)...)
	base := "http://" + addr
	testkit.WaitHTTP(t, p, base+"/static/style.css", "publisher ui")
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	getBody := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testkit.Eventually(t, 30*time.Second, "the DLQ entry and the worker in the console", func() (bool, string) {
		_, dlq := getBody("/api/dlq")
		_, workers := getBody("/api/workers")
		return strings.Contains(dlq, `"n1"`) && strings.Contains(workers, `"w1"`), dlq + workers
	})
	for _, path := range []string{"/", "/backends", "/workers", "/alerts", "/dlq", "/dlq?reason=rejected", "/schedules",
		"/api/backends", "/api/workers", "/api/alerts", "/api/streams", "/api/dlq?type=nope", "/api/schedules"} {
		if code, body := getBody(path); code != http.StatusOK {
			t.Errorf("GET %s as the operator: %d %.300s", path, code, body)
		}
	}
	_, sess := getBody("/api/session")
	var session struct{ CSRF string }
	if err := json.Unmarshal([]byte(sess), &session); err != nil {
		t.Fatal(err)
	}
	var entries struct{ Entries []struct{ Seq uint64 } }
	_, list := getBody("/api/dlq?type=nope")
	if err := json.Unmarshal([]byte(list), &entries); err != nil || len(entries.Entries) != 1 {
		t.Fatalf("DLQ of nope: %v %s", err, list)
	}
	code, body := getBody(fmt.Sprintf("/api/dlq/%d", entries.Entries[0].Seq))
	if code != http.StatusOK || !strings.Contains(body, `"payload_kind": "json"`) {
		t.Errorf("entry as the operator: %d %.300s", code, body)
	}
	for _, tt := range []struct{ path, want string }{
		{"/api/routes/echo/pause", `"ok": true`},
		{"/api/routes/echo/resume", `"ok": true`},
		{"/api/backends/echoer/trip", `"ok": true`},
		{"/api/backends/echoer/reset", `"ok": true`},
		{"/api/dlq/replay?type=nope&dry_run=1", `"selected": 1`},
		{fmt.Sprintf("/api/dlq/%d/replay", entries.Entries[0].Seq), "replayed"},
		{"/api/schedules/hourly/remove", "removed"},
	} {
		req, _ := http.NewRequest(http.MethodPost, base+tt.path, nil)
		req.Header.Set("X-CSRF-Token", session.CSRF)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), tt.want) {
			t.Errorf("POST %s as the operator: %d %s, want 200 with %s", tt.path, resp.StatusCode, b, tt.want)
		}
	}
	if v := s.violations(operatorUser); len(v) > 0 {
		t.Errorf("the server refused the console:\n%s", strings.Join(v, "\n"))
	}
}
