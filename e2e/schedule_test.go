package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
)

// resultTime is when the result of echo task id was stored, or zero.
func (c *client) resultTime(typ, id string) time.Time {
	c.t.Helper()
	ctx := ctxTimeout(c.t, 5*time.Second)
	s, err := c.js.Stream(ctx, "RESULTS")
	if err != nil {
		c.t.Fatalf("stream RESULTS: %v", err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "results."+typ+"."+id)
	if err != nil {
		return time.Time{}
	}
	return m.Time
}

// TestDelayedTask: a task delayed 3s (--in, and --at) is not run at 1.5s
// and is run by 6s, its result under its own id; --wait waits for it.
func TestDelayedTask(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	startWorker(t, s)
	c := connect(t, s)
	u := "--nats-url=" + s.URL()

	start := time.Now()
	r := runPublisher(t, nil, "publish", "echo", "in-body", "--id", "d-in", "--in", "3s", u)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "d-in" {
		t.Fatalf("publish --in: exit %d, stdout %q", r.code, r.stdout)
	}
	// --at a whole second at least 3s ahead (RFC 3339 here has seconds).
	at := time.Now().Add(4 * time.Second).Truncate(time.Second)
	r = runPublisher(t, nil, "publish", "echo", "at-body", "--id", "d-at", "--at", at.Format(time.RFC3339), u)
	if r.code != 0 {
		t.Fatalf("publish --at: exit %d", r.code)
	}
	testkit.Eventually(t, 5*time.Second, "1.5s since the publish", func() (bool, string) {
		return time.Since(start) >= 1500*time.Millisecond, time.Since(start).String()
	})
	for _, id := range []string{"d-in", "d-at"} {
		if got := c.resultTime("echo", id); !got.IsZero() {
			t.Errorf("%s has a result at 1.5s (stored %s after the publish), want none before 3s", id, got.Sub(start))
		}
	}
	r = runPublisher(t, nil, "status", "echo", "d-in", u)
	if !strings.HasPrefix(r.stdout, "scheduled: runs at ") {
		t.Errorf("status at 1.5s: %q, want scheduled", r.stdout)
	}
	testkit.Eventually(t, 10*time.Second, "both delayed results", func() (bool, string) {
		return !c.resultTime("echo", "d-in").IsZero() && !c.resultTime("echo", "d-at").IsZero(), "not yet"
	})
	if got := c.resultTime("echo", "d-in").Sub(start); got < 3*time.Second || got > 6*time.Second {
		t.Errorf("--in 3s result stored %s after the publish, want between 3s and 6s", got)
	}
	if got := c.resultTime("echo", "d-at"); got.Before(at) || got.After(at.Add(3*time.Second)) {
		t.Errorf("--at %s result stored at %s, want at its time (within 3s)", at.Format(time.RFC3339), got)
	}
	m := c.lastMsg("RESULTS", "results.echo.d-in", 5*time.Second)
	if string(m.Data) != "in-body" {
		t.Errorf("result body %q, want in-body", m.Data)
	}
	r = runPublisher(t, nil, "status", "echo", "d-in", u)
	if !strings.HasPrefix(r.stdout, "done: ") {
		t.Errorf("status after it ran: %q, want done", r.stdout)
	}

	begin := time.Now()
	r = runPublisher(t, nil, "publish", "echo", "waited", "--in", "2s", "--wait", u)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "waited" {
		t.Fatalf("publish --in 2s --wait: exit %d stdout %q", r.code, r.stdout)
	}
	if took := time.Since(begin); took < 2*time.Second {
		t.Errorf("publish --in 2s --wait returned after %s, before the task was due", took)
	}
}

// firings returns the ids of the results of schedule name's firings.
func (c *client) firings(typ, name string) []string {
	c.t.Helper()
	subs, err := c.subjects("RESULTS", "results."+typ+".*")
	if err != nil {
		c.t.Fatalf("RESULTS subjects: %v", err)
	}
	var ids []string
	for subj := range subs {
		id := strings.TrimPrefix(subj, "results."+typ+".")
		if strings.HasPrefix(id, name+"-") {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// TestPeriodicSchedule: an @every 1s schedule makes at least 3 distinct
// results in 4s, keeps firing across a worker restart and a nats-server
// restart, and stops after schedule rm.
func TestPeriodicSchedule(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	w := startWorker(t, s)
	c := connect(t, s)
	u := "--nats-url=" + s.URL()

	added := time.Now()
	r := runPublisher(t, nil, "schedule", "add", "tick", "echo", `{"tick":true}`, "--every", "1s", u)
	if r.code != 0 {
		t.Fatalf("schedule add: exit %d", r.code)
	}
	testkit.Eventually(t, 10*time.Second, "3 firings' results", func() (bool, string) {
		ids := c.firings("echo", "tick")
		return len(ids) >= 3, fmt.Sprint(ids)
	})
	ids := c.firings("echo", "tick")
	third := c.resultTime("echo", ids[2])
	if took := third.Sub(added); took > 4*time.Second {
		t.Errorf("the third firing's result was stored %s after schedule add, want within 4s", took)
	}
	for _, id := range ids {
		if n, err := strconv.ParseInt(strings.TrimPrefix(id, "tick-"), 10, 64); err != nil || n < added.Unix()-1 {
			t.Errorf("firing id %s: want tick-<unix seconds of the firing>", id)
		}
	}
	m := c.lastMsg("RESULTS", "results.echo."+ids[0], 5*time.Second)
	if string(m.Data) != `{"tick":true}` {
		t.Errorf("a firing's result %q, want the schedule's payload", m.Data)
	}
	r = runPublisher(t, nil, "schedule", "list", u)
	if !strings.Contains(r.stdout, "tick") || !strings.Contains(r.stdout, "@every 1s") || !strings.Contains(r.stdout, "(tick-") {
		t.Errorf("schedule list: %q, want tick with its last firing", r.stdout)
	}

	// more waits for n further firings.
	more := func(what string, n int) {
		t.Helper()
		before := len(c.firings("echo", "tick"))
		testkit.Eventually(t, 30*time.Second, fmt.Sprintf("%d more firings %s", n, what), func() (bool, string) {
			got := len(c.firings("echo", "tick"))
			return got >= before+n, fmt.Sprintf("%d, had %d", got, before)
		})
	}
	w.Signal(syscall.SIGTERM)
	if code := w.Wait(testkit.StopTimeout); code != 0 {
		t.Fatalf("worker exit code %d, want 0", code)
	}
	w = startWorker(t, s)
	more("after a worker restart", 2)
	s.Stop()
	s.Start()
	more("after a nats-server restart", 2)

	r = runPublisher(t, nil, "schedule", "rm", "tick", u)
	if r.code != 0 {
		t.Fatalf("schedule rm: exit %d", r.code)
	}
	// A firing in flight may still land; then none for 3 intervals.
	after := len(c.firings("echo", "tick"))
	testkit.Consistently(t, 3*time.Second, "no firing after schedule rm", func() (bool, string) {
		got := len(c.firings("echo", "tick"))
		return got <= after+1, fmt.Sprintf("%d firings after schedule rm, want at most 1 in flight", got-after)
	})
	if w.Exited() {
		t.Fatalf("worker exited: %v", w.Err())
	}
	if got := c.msgs("DLQ"); got != 0 {
		t.Errorf("DLQ holds %d entries, want none", got)
	}
}

// TestCronScheduleNextRun: a cron schedule with a time zone shows the next
// run in that zone.
func TestCronScheduleNextRun(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	startWorker(t, s)
	u := "--nats-url=" + s.URL()
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skipf("no tz data: %v", err)
	}
	r := runPublisher(t, nil, "schedule", "add", "ny-open", "reports.open", "--cron", "0 30 9 * * mon-fri", "--tz", "America/New_York", u)
	if r.code != 0 {
		t.Fatalf("schedule add: exit %d", r.code)
	}
	r = runPublisher(t, nil, "schedule", "list", "--json", u)
	var got struct {
		Name, Pattern string
		TimeZone      string    `json:"time_zone"`
		Next          time.Time `json:"next"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &got); err != nil {
		t.Fatalf("list --json %q: %v", r.stdout, err)
	}
	// The next weekday 09:30 in New York, reckoned here independently.
	now := time.Now().In(ny)
	want := time.Date(now.Year(), now.Month(), now.Day(), 9, 30, 0, 0, ny)
	for !want.After(now) || want.Weekday() == time.Saturday || want.Weekday() == time.Sunday {
		want = time.Date(want.Year(), want.Month(), want.Day()+1, 9, 30, 0, 0, ny)
	}
	if !got.Next.Equal(want) || got.TimeZone != "America/New_York" || got.Pattern != "0 30 9 * * mon-fri" {
		t.Errorf("list: next %s zone %q pattern %q, want next %s (%s in New York)", got.Next, got.TimeZone, got.Pattern, want.UTC(), want)
	}
	r = runPublisher(t, nil, "schedule", "show", "ny-open", u)
	if !strings.Contains(r.stdout, "Next run:   "+want.UTC().Format(time.RFC3339)) {
		t.Errorf("show: %q, want next run %s", r.stdout, want.UTC().Format(time.RFC3339))
	}
	// Bad input stores nothing and exits 2.
	for _, args := range [][]string{
		{"x", "echo", "--cron", "0 30 9 * *"},
		{"x", "echo", "--cron", "0 30 9 * * *", "--tz", "Nowhere/Land"},
		{"x", "echo", "--every", "soon"},
		{"a.b", "echo", "--every", "1m"},
	} {
		r := runPublisher(t, nil, append(append([]string{"schedule", "add"}, args...), u)...)
		if r.code != 2 || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("schedule add %v: exit %d stderr %q, want 2 and one line", args, r.code, r.stderr)
		}
	}
	r = runPublisher(t, nil, "publish", "echo", "x", "--at", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), u)
	if r.code != 2 || !strings.Contains(r.stderr, "not in the future") {
		t.Errorf("publish --at in the past: exit %d stderr %q, want 2", r.code, r.stderr)
	}
	r = runPublisher(t, nil, "schedule", "list", u)
	if n := strings.Count(strings.TrimSpace(r.stdout), "\n"); n != 1 {
		t.Errorf("schedule list after refused adds: %q, want ny-open only", r.stdout)
	}
}

// TestStatusAndCancel: status in each state against a real worker; cancel
// of a pending, a scheduled and a running task each ends in the DLQ as
// cancelled, the running one without waiting for its backend.
func TestStatusAndCancel(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	cfg := sleepConfig(t, 2, "30s")
	u := "--nats-url=" + s.URL()
	// Workers create the streams: start one, stop it, so tasks wait.
	w := startWorker(t, s, "--config", cfg)
	w.Signal(syscall.SIGTERM)
	w.Wait(testkit.StopTimeout)
	c := connect(t, s)

	status := func(id string) string {
		t.Helper()
		r := runPublisher(t, nil, "status", "sleep", id, u)
		if r.code != 0 {
			t.Fatalf("status %s: exit %d", id, r.code)
		}
		return r.stdout
	}
	for _, id := range []string{"p1", "p2"} {
		if r := runPublisher(t, nil, "publish", "sleep", "1ms", "--id", id, u); r.code != 0 {
			t.Fatalf("publish %s: exit %d", id, r.code)
		}
	}
	if r := runPublisher(t, nil, "publish", "sleep", "1ms", "--id", "later", "--in", "1h", u); r.code != 0 {
		t.Fatalf("publish later: exit %d", r.code)
	}
	if got := status("p2"); !strings.HasPrefix(got, "pending: 2 of 2 tasks of type sleep") {
		t.Errorf("status p2: %q, want pending 2 of 2", got)
	}
	if got := status("later"); !strings.HasPrefix(got, "scheduled: runs at ") {
		t.Errorf("status later: %q, want scheduled", got)
	}
	for _, id := range []string{"p1", "later"} {
		r := runPublisher(t, nil, "cancel", "sleep", id, u)
		if r.code != 0 || !strings.Contains(r.stdout, "dead-lettered as cancelled") {
			t.Errorf("cancel %s: exit %d stdout %q", id, r.code, r.stdout)
		}
	}

	w = startWorker(t, s, "--config", cfg)
	testkit.Eventually(t, 20*time.Second, "p2 done", func() (bool, string) {
		got := status("p2")
		return strings.HasPrefix(got, "done: backend sleeper"), got
	})
	if r := runPublisher(t, nil, "publish", "sleep", "60s", "--id", "slow", u); r.code != 0 {
		t.Fatalf("publish slow: exit %d", r.code)
	}
	testkit.Eventually(t, 20*time.Second, "slow running", func() (bool, string) {
		got := status("slow")
		return strings.HasPrefix(got, "running: on worker "), got
	})
	begin := time.Now()
	r := runPublisher(t, nil, "cancel", "sleep", "slow", u)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "cancelled running task slow on worker ") {
		t.Fatalf("cancel slow: exit %d stdout %q", r.code, r.stdout)
	}
	testkit.Eventually(t, 20*time.Second, "slow dead-lettered", func() (bool, string) {
		got := status("slow")
		return strings.HasPrefix(got, "dead-lettered: reason cancelled"), got
	})
	if took := time.Since(begin); took > 30*time.Second {
		t.Errorf("the running task was dead-lettered %s after cancel: it waited for its 60s backend", took)
	}
	if w.Exited() {
		t.Fatalf("worker exited: %v", w.Err())
	}

	r = runPublisher(t, nil, "dlq", "list", "--reason", "cancelled", "--json", u)
	ids := map[string]bool{}
	for line := range strings.SplitSeq(strings.TrimSpace(r.stdout), "\n") {
		var e struct {
			ID     string `json:"id"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("dlq list --json line %q: %v", line, err)
		}
		ids[e.ID] = true
	}
	if len(ids) != 3 || !ids["p1"] || !ids["later"] || !ids["slow"] {
		t.Errorf("cancelled DLQ entries %v, want p1, later and slow", ids)
	}
	for _, id := range []string{"p1", "later"} {
		c.noMsg("RESULTS", "results.sleep."+id)
		if got := status(id); !strings.HasPrefix(got, "dead-lettered: reason cancelled") {
			t.Errorf("status %s: %q, want dead-lettered as cancelled", id, got)
		}
	}
	if got := status("never"); !strings.HasPrefix(got, "unknown: ") {
		t.Errorf("status never: %q, want unknown", got)
	}
	r = runPublisher(t, nil, "status", "sleep", "p2", "--json", u)
	var st struct{ State, Backend string }
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.State != "done" || st.Backend != "sleeper" {
		t.Errorf("status --json: %q (%v)", r.stdout, err)
	}
	// A mistaken cancel is one replay away.
	r = runPublisher(t, nil, "dlq", "replay", "--reason", "cancelled", "--type", "sleep", "--seq", "1", u)
	if r.code != 0 {
		t.Errorf("dlq replay: exit %d", r.code)
	}
	testkit.Eventually(t, 20*time.Second, "p1 done after its replay", func() (bool, string) {
		got := status("p1")
		return strings.HasPrefix(got, "done: "), got
	})
}

// TestScheduleMetrics: a worker's /metrics counts the schedules stored,
// the firings it started and how late they started.
func TestScheduleMetrics(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	w := startWorker(t, s)
	u := "--nats-url=" + s.URL()
	if r := runPublisher(t, nil, "schedule", "add", "pulse", "echo", "x", "--every", "1s", u); r.code != 0 {
		t.Fatalf("schedule add: exit %d", r.code)
	}
	if r := runPublisher(t, nil, "publish", "echo", "later", "--in", "1h", "--id", "much-later", u); r.code != 0 {
		t.Fatalf("publish --in: exit %d", r.code)
	}
	var body string
	testkit.Eventually(t, 30*time.Second, "2 firings and the schedule counts in /metrics", func() (bool, string) {
		body = scrape(t, "http://"+w.httpAddr+"/metrics")
		fired, _ := strconv.Atoi(sample(body, `breakwater_schedule_firings_total{kind="periodic",type="echo"}`))
		return fired >= 2 && sample(body, `breakwater_schedules{kind="periodic"}`) == "1" &&
				sample(body, `breakwater_schedules{kind="delayed"}`) == "1",
			testkit.Lines(body, "schedule")
	})
	late, err := strconv.ParseFloat(sample(body, `breakwater_schedule_lateness_seconds_sum{kind="periodic"}`), 64)
	n, _ := strconv.Atoi(sample(body, `breakwater_schedule_lateness_seconds_count{kind="periodic"}`))
	if err != nil || n < 2 || late < 0 || late/float64(n) > 5 {
		t.Errorf("lateness: sum %v over %d firings (%v), want ≥ 2 firings started within seconds of their due time", late, n, err)
	}
}
